"""Time one forward pass of the default model per width (tokens fed at once), after a 300-token
prompt: what a draft of ``width - 1`` tokens costs to verify on this machine.

    python examples/pass_width.py            # prints "width  ms" rows (median of 9)
"""

from __future__ import annotations

import time

import torch

import ctrldec
from ctrldec.decoding.kv import KVCache
from ctrldec.decoding.runner import Runner


def main() -> None:
    model, _ = ctrldec.models.load()
    torch.manual_seed(0)
    prompt = torch.randint(100, 40000, (300,)).tolist()
    runner = Runner(model)
    kv = KVCache(1)
    runner.forward(kv, [prompt], [1])
    for width in [*range(1, 11), 12, 16]:
        times = []
        for _ in range(9):
            feed = torch.randint(100, 40000, (width,)).tolist()
            started = time.perf_counter()
            runner.forward(kv, [feed], [width])
            times.append(time.perf_counter() - started)
            kv.crop(0, len(prompt))
        print(f"{width:5d}  {1000 * sorted(times)[4]:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
