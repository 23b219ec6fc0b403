"""What SMC's exact weights cost with the default model: one AWRS sequence, SMC with AWRS's
estimated weights and SMC with exact ones, on JSONSchemaBench schemas (the prompt of ``bench
e2e``), the same seeds for all three; decode time per forward pass and per output token.

    python examples/smc_weights.py ../shared/data/jsonschemabench              # 6 schemas, 2 seeds, 8 particles
    python examples/smc_weights.py DIR --limit 10 --seeds 3 --particles 16
"""

from __future__ import annotations

import argparse
import json

import ctrldec
from ctrldec.bench.e2e import _constraint
from ctrldec.bench.generation import PROMPT, pick_schemas
from ctrldec.models import load

RUNS = ("AWRS", "SMC, estimated weights", "SMC, exact weights")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jsonschemabench", metavar="DIR")
    ap.add_argument("--splits", default="Glaiveai2K,Github_easy")
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--particles", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    args = ap.parse_args()

    model, tok = load()
    decoder = ctrldec.Decoder(model, tok)
    jobs = []
    for row in pick_schemas(args.jsonschemabench, args.splits.split(","), args.limit, 0):
        schema = json.loads(row["schema"])
        constraint = _constraint(schema, decoder, row["id"], [])
        if constraint is not None:
            prompt = decoder.encode_prompt([{"role": "system", "content": PROMPT}, {"role": "user", "content": json.dumps(schema)}])
            jobs.append((constraint, prompt))
    samplers = {RUNS[0]: lambda: ctrldec.AWRS(),
                RUNS[1]: lambda: ctrldec.SMC(args.particles),
                RUNS[2]: lambda: ctrldec.SMC(args.particles, sampler=ctrldec.AWRS(weights="exact"))}
    decoder.generate(jobs[0][1], constraint=jobs[0][0], sampler=samplers[RUNS[2]](), seed=0, max_new_tokens=16)  # warm
    totals = {name: [0.0, 0, 0] for name in RUNS}
    for seed in range(args.seeds):
        for constraint, prompt in jobs:
            for name in RUNS:
                out = decoder.generate(prompt, constraint=constraint, sampler=samplers[name](), seed=seed,
                                       max_new_tokens=args.max_new_tokens)
                t = totals[name]
                t[0] += out.timing["decode_s"]
                t[1] += out.timing["forward_passes"]
                t[2] += len(out.token_ids)
    print(f"{len(jobs)} schemas x {args.seeds} seeds, SMC with {args.particles} particles, up to {args.max_new_tokens} tokens")
    for name, (seconds, passes, tokens) in totals.items():
        print(f"{name:<24} {passes:6d} passes {tokens:6d} tokens {1000 * seconds / passes:8.1f} ms/pass "
              f"{1000 * seconds / tokens:8.1f} ms/token")


if __name__ == "__main__":
    main()
