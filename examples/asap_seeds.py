"""ASAp's expected KL to P* after n samples, over many seeds: whether the curve of ``bench
fidelity`` (one seed) falls with n on average, or only from some n on. Each seed starts a fresh
oracle and draws one sample per round through the loop (against the bench's tabled model); at
each n the oracle's exact sampling distribution is compared with P*.

    python examples/asap_seeds.py                                # binary, 40 seeds, n = 10, 30, 100, 300
    python examples/asap_seeds.py --constraint json --seeds 10 --points 10,100,1000
"""

from __future__ import annotations

import argparse

import numpy as np

from ctrldec.bench import fidelity
from ctrldec.models import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--constraint", default="binary", choices=sorted(fidelity.CASES))
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--points", default="10,30,100,300", help="comma-separated sample counts")
    args = parser.parse_args()
    points = sorted({int(x) for x in args.points.split(",")})
    model, tokenizer = load()
    prep = fidelity.prepare(model, tokenizer, fidelity.CASES[args.constraint])
    kl = np.array([[r["kl"] for r in fidelity.asap_curve(prep, points, 1, seed * fidelity.SEED_STRIDE + 7)]
                   for seed in range(args.seeds)])  # seeds x points
    masking = fidelity.divergences(prep.exact.q_mask, prep.exact.p_star)["kl"]
    print(f"{args.constraint}: masking's KL {masking:.3f}; ASAp over {args.seeds} seeds (mean ± SE, median)")
    for j, n in enumerate(points):
        column = kl[:, j]
        print(f"  n={n:>6}: {column.mean():.3f} ± {column.std(ddof=1) / len(column) ** 0.5:.3f}  median {np.median(column):.3f}")
    for j in range(len(points) - 1):
        d = kl[:, j + 1] - kl[:, j]
        print(f"  n={points[j]} -> {points[j + 1]}: change {d.mean():+.3f} ± {d.std(ddof=1) / len(d) ** 0.5:.3f} "
              f"(paired), up in {100 * (d > 0).mean():.0f}% of seeds")


if __name__ == "__main__":
    main()
