"""``ctrldec bench mirostat``: does Mirostat hold the surprise at tau?

For each tau, each prompt is continued for ``max_new_tokens`` tokens by ctrldec's loop with a
``Mirostat(tau)`` controller (sampling, one seed per prompt). Reported per tau: the mean surprise
``-log2 p`` of the sampled tokens under the distribution Mirostat controls (the constrained one
under a constraint), its error against tau, the mean surprise over all tokens (forced tokens
count 0), the share of forced tokens, the last ``mu`` and the outputs that ended early (EOS).

A first row, "none", samples at temperature 1 without Mirostat: its mean surprise is the ceiling.
Mirostat only truncates, so the surprise it can reach is at most what untruncated sampling gives
(the model's entropy, on average); a tau above that row is out of reach.
"""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["PROMPTS", "run", "format_report"]

PROMPTS = [
    "Write a story about a lighthouse keeper who finds a message in a bottle.",
    "Describe a busy market in a city you like, with its sounds and smells.",
    "Explain to a child how rain forms, step by step.",
    "Write a letter from a sailor to his sister, telling her about a storm at sea.",
    "Tell me about the history of bicycles and how they changed cities.",
    "Write a short essay on why people enjoy gardening.",
    "Describe your ideal weekend in the mountains.",
    "Write a fairy tale about a fox, a crow and a stolen key.",
    "Explain what a computer does when you press a key, for a beginner.",
    "Write a diary entry of a student on the first day at a new school.",
]


def run(model: Any, tokenizer: Any, *, taus: list[float], version: int = 2, eta: float = 1.0, prompts: int = 10,
        max_new_tokens: int = 200, seed: int = 0, surprise: str = "original", constraint: Any = None,
        progress: bool = False) -> dict[str, Any]:
    from ..generate import Decoder
    from ..controllers import Mirostat

    if not 1 <= prompts <= len(PROMPTS):
        raise ValueError(f"prompts must be between 1 and {len(PROMPTS)}, got {prompts}")
    decoder = Decoder(model, tokenizer)
    rows = []
    for tau in [None, *taus]:
        sampled: list[float] = []
        every: list[float] = []
        forced = early = 0
        last_mu: list[float] = []
        for i, text in enumerate(PROMPTS[:prompts]):
            prompt = text + (" Answer with a JSON object." if constraint is not None else "")
            controllers = [Mirostat(tau, eta, version=version, surprise=surprise)] if tau is not None else []
            out = decoder.generate(prompt, constraint=constraint, max_new_tokens=max_new_tokens, seed=seed + i,
                                   controllers=controllers, diagnostics=True, budget_aware=False)  # continuations cut as before
            sampled += [s.surprise for s in out.steps if not s.forced]
            every += [s.surprise for s in out.steps]
            forced += sum(s.forced for s in out.steps)
            early += out.finish_reason != "length"
            if out.steps and out.steps[-1].mu is not None:
                last_mu.append(out.steps[-1].mu)
            if progress:
                print(f"  tau {tau} prompt {i + 1}: {len(out.token_ids)} tokens, mean surprise "
                      f"{statistics.fmean(s.surprise for s in out.steps if not s.forced) if out.steps else 0:.2f}", flush=True)
        mean = statistics.fmean(sampled) if sampled else float("nan")
        rows.append({
            "tau": tau,
            "tokens": len(every),
            "sampled": len(sampled),
            "mean_surprise": mean,
            "error": mean - tau if tau is not None else None,
            "mean_surprise_all": statistics.fmean(every) if every else float("nan"),
            "forced_share": forced / len(every) if every else 0.0,
            "final_mu": statistics.fmean(last_mu) if last_mu else float("nan"),
            "ended_early": early,
        })
    return {"version": version, "eta": eta, "surprise": surprise, "prompts": prompts, "max_new_tokens": max_new_tokens,
            "constraint": repr(constraint) if constraint is not None else None, "rows": rows}


def format_report(report: dict[str, Any]) -> str:
    head = (f"Mirostat v{report['version']} (eta {report['eta']}, surprise {report['surprise']}), {report['prompts']} prompts x "
            f"{report['max_new_tokens']} new tokens" + (f", constraint {report['constraint']}" if report["constraint"] else ", unconstrained"))
    lines = [head, f"{'tau':>5}{'tokens':>8}{'sampled':>9}{'mean S':>8}{'error':>8}{'S all':>8}{'forced':>8}{'mu end':>8}{'EOS':>5}"]
    for r in report["rows"]:
        tau = "none" if r["tau"] is None else f"{r['tau']:.1f}"
        error = "-" if r["error"] is None else f"{r['error']:+.2f}"
        lines.append(f"{tau:>5}{r['tokens']:>8}{r['sampled']:>9}{r['mean_surprise']:>8.2f}{error:>8}"
                     f"{r['mean_surprise_all']:>8.2f}{r['forced_share']:>8.0%}{r['final_mu']:>8.2f}{r['ended_early']:>5}")
    lines.append("(none: sampling at T=1 without Mirostat, the ceiling of reachable surprise; mean S: over sampled tokens)")
    return "\n".join(lines)
