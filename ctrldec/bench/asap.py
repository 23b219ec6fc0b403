"""``ctrldec bench asap``: what ASAp costs per token, and what a batched round costs, on a real model.

For each ``bench fidelity`` constraint (its prompt and constraint, the real model, not the tabled
one), ``samples`` outputs are drawn one per call by three samplers, all with fast-forward and no
speculative drafts (ASAp declines them, so the others do too for a like comparison):

* ``mask-free``: ctrldec's default sampler (``Multinomial``: Gumbel order, ``accepts`` checks);
* ``masked``: ``FullMask()``, the full mask then ``torch.multinomial`` (what ``model.generate``
  with the grammar processor does);
* ``ASAp``: the mask, the trie's sparse correction, and the trie update after each sample.

Every forward pass is timed (the runner's ``forward`` wrapped), so per method the report splits
the wall time into the model's share and the rest (masks, sampling, the trie): ms per pass for
both, and ASAp's overhead over ``masked`` per sampled token as a share of a forward pass (the bar:
at most 10%). Then ``rounds`` rounds of ASAp with B = 1 (one ``generate``) and B = ``batch``
(one ``generate_batch`` of ``batch`` rows, one batched pass per step): the wall time per round
and their ratio (the bar: B = 8 at most 3x B = 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run", "format_report"]


class _Timed:
    """The decoder's runner with every ``forward`` call timed (bench instrumentation only)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.seconds = 0.0
        self.calls = 0
        self._forward = runner.forward
        runner.forward = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._forward(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def take(self) -> tuple[float, int]:
        out = (self.seconds, self.calls)
        self.seconds, self.calls = 0.0, 0
        return out


def _measure(timer: _Timed, go: Callable[[], list[Any]]) -> dict[str, Any]:
    timer.take()
    started = time.perf_counter()
    results = go()
    wall = time.perf_counter() - started
    forward_s, passes = timer.take()
    tokens = sum(len(r.token_ids) for r in results)
    sampled = sum(r.kinds.count("sampled") for r in results)
    rest = wall - forward_s
    return {"outputs": len(results), "tokens": tokens, "sampled": sampled, "passes": passes, "wall_s": wall,
            "forward_s": forward_s, "ms_per_token": 1e3 * wall / max(tokens, 1),
            "forward_ms_per_pass": 1e3 * forward_s / max(passes, 1), "other_ms_per_pass": 1e3 * rest / max(passes, 1),
            "other_ms_per_sampled": 1e3 * rest / max(sampled, 1)}


def run(model: Any, tokenizer: Any, *, samples: int = 20, rounds: int = 5, batch: int = 8,
        cases: Sequence[str] | None = None, seed: int = 0, max_new_tokens: int = 64,
        progress: bool = False) -> dict[str, Any]:
    """The bench (module docstring): per case, the three samplers' cost split, and B=1 against B=``batch``."""
    from ..generate import Decoder
    from ..samplers.full_mask import FullMask
    from ..search.asap import ASAp
    from .fidelity import pick_cases

    decoder = Decoder(model, tokenizer)
    timer = _Timed(decoder.runner)
    report: dict[str, Any] = {"samples": samples, "rounds": rounds, "batch": batch, "cases": []}
    for case in pick_cases(cases):
        constraint = case.make()
        prompt = decoder.encode_prompt(case.prompt)
        common = {"constraint": constraint, "max_new_tokens": max_new_tokens, "lookahead": 0}

        def one_by_one(**options: Any) -> list[Any]:
            return [decoder.generate(prompt, seed=seed + i, **common, **options) for i in range(samples)]

        decoder.generate(prompt, seed=seed, **common)  # warm-up: compile, first masks
        row: dict[str, Any] = {"name": case.name, "methods": {}}
        for name, options in (("mask-free", {}), ("masked", {"sampler": FullMask()}), ("ASAp", {"sampler": ASAp()})):
            row["methods"][name] = _measure(timer, lambda: one_by_one(**options))
            if progress:
                print(f"{case.name}: {name}: {row['methods'][name]['ms_per_token']:.1f} ms/token", flush=True)
        asap = ASAp()
        single = _measure(timer, lambda: [r for k in range(rounds)
                                          for r in [decoder.generate(prompt, seed=seed + k, sampler=asap, **common)]])
        asap = ASAp()
        batched = _measure(timer, lambda: [r for k in range(rounds) for r in decoder.generate_batch(
            [prompt] * batch, seed=seed + k * batch, sampler=asap, **common)])
        row["rounds"] = {"B1_s_per_round": single["wall_s"] / rounds, "batched_s_per_round": batched["wall_s"] / rounds,
                         "ratio": batched["wall_s"] / single["wall_s"] if single["wall_s"] > 0 else float("nan")}
        m, a = row["methods"]["masked"], row["methods"]["ASAp"]
        row["asap_overhead_ms_per_sampled"] = a["other_ms_per_sampled"] - m["other_ms_per_sampled"]
        row["asap_overhead_share_of_forward"] = row["asap_overhead_ms_per_sampled"] / max(a["forward_ms_per_pass"], 1e-9)
        report["cases"].append(row)
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"ASAp's cost: {report['samples']} samples per method, one per call; {report['rounds']} rounds of B=1 "
             f"and B={report['batch']}"]
    for c in report["cases"]:
        lines.append(f"{c['name']}:")
        lines.append(f"  {'method':<11}{'ms/token':>9}{'forward ms/pass':>17}{'other ms/pass':>15}{'other ms/sampled':>18}"
                     f"{'tokens':>8}{'passes':>8}")
        for name, m in c["methods"].items():
            lines.append(f"  {name:<11}{m['ms_per_token']:>9.2f}{m['forward_ms_per_pass']:>17.2f}{m['other_ms_per_pass']:>15.2f}"
                         f"{m['other_ms_per_sampled']:>18.2f}{m['tokens']:>8}{m['passes']:>8}")
        r = c["rounds"]
        lines.append(f"  ASAp overhead over masked: {c['asap_overhead_ms_per_sampled']:.2f} ms per sampled token = "
                     f"{100 * c['asap_overhead_share_of_forward']:.1f}% of a forward pass")
        lines.append(f"  rounds: B=1 {r['B1_s_per_round']:.3f} s, B={report['batch']} {r['batched_s_per_round']:.3f} s "
                     f"({r['ratio']:.2f}x)")
    return "\n".join(lines)
