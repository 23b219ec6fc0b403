"""Time one forward pass of the default model per shape (rows x tokens fed at once, or a tree of
siblings), after a prompt of ``--context`` tokens: what a draft, a tree or a batch of rows costs
to score on this machine, through the runner's fast path and through transformers' own path
(``Runner(fast_path=False)``), and whether the two give the same logits bit for bit.

    python examples/pass_width.py                 # "shape  fast ms  transformers ms  same" rows, median of 7
    python examples/pass_width.py --context 300
"""

from __future__ import annotations

import argparse
import time

import torch

import ctrldec
from ctrldec.decoding.kv import KVCache
from ctrldec.decoding.runner import Runner

SHAPES = [(1, w, False) for w in (*range(1, 11), 12, 16)] + [(1, 5, True), (4, 1, False), (8, 1, False), (6, 2, False)]


def _time(runner: Runner, rows: int, width: int, tree: bool, context: int, seed: int) -> tuple[float, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    kv = KVCache(rows)
    prompt = torch.randint(100, 40000, (context,), generator=g).tolist()
    runner.forward(kv, [prompt] * rows, [1] * rows)
    times, logits = [], []
    for _ in range(7):
        feeds = [torch.randint(100, 40000, (width,), generator=g).tolist() for _ in range(rows)]
        parents = [[-1] * width for _ in range(rows)] if tree else None  # siblings, as contrastive search feeds them
        started = time.perf_counter()
        out = runner.forward(kv, feeds, [width] * rows, parents=parents)
        times.append(time.perf_counter() - started)
        logits += out.logits
        for r in range(rows):
            kv.crop(r, context)
    return 1000 * sorted(times)[3], logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", type=int, default=500)
    args = parser.parse_args()
    model, _ = ctrldec.models.load()
    fast, plain = Runner(model), Runner(model, fast_path=False)
    print(f"{'shape':>12}  {'fast ms':>8}  {'transformers ms':>15}  same")
    for i, (rows, width, tree) in enumerate(SHAPES):
        (a, x), (b, y) = _time(fast, rows, width, tree, args.context, i), _time(plain, rows, width, tree, args.context, i)
        shape = f"tree of {width}" if tree else f"{rows} x {width}"
        same = all(torch.equal(p, q) for p, q in zip(x, y))
        print(f"{shape:>12}  {a:8.1f}  {b:15.1f}  {'yes' if same else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
