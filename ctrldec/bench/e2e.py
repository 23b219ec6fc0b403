"""``ctrldec bench e2e``: end-to-end structured generation speed, one process, same prompts.

For (prompt, schema) pairs from JSONSchemaBench (its system prompt, the schema as the user
message), greedy, the same ``max_new_tokens``:

(a) ``model.generate`` unconstrained,
(b) ``model.generate`` with xgrammar's logits processor (when installed),
(c) ``model.generate`` with ctrldec's logits processor, and (cb) the same budget-aware
(``max_new_tokens=`` given to the processor; only with ``--configs``),
(d) ctrldec's loop with its defaults (fast-forward, prompt lookup and budget-aware completion
on), (dn) the same not budget-aware (only with ``--configs``), and (d0) the plain loop (all
three off: its outputs are (c)'s),
(s) ctrldec's loop sampling at temperature 1, for the number of ``accepts`` checks per token,
(d4) ctrldec's loop as (d), four pairs at a time through ``generate_batch`` (one forward pass
per step for the four rows),
(w) ctrldec's loop with ``AWRS`` at temperature 1 (checks per token include the one past the
sample that the weight needs), (m8) ``SMC`` with 8 AWRS particles (passes: the run's forward
passes; checks: every particle's).

Reported per configuration: output tokens, time per output token, tokens/s (prompt prefill
included in the time, for all alike), valid finished outputs, forward passes, the share of
forced tokens, and checks per sampled token.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .generation import PROMPT, pick_schemas, validation_errors

__all__ = ["run", "format_report"]


@dataclass
class _Outcome:
    """One configuration's output for one pair."""

    tokens: list[int]
    text: str
    finished: bool
    seconds: float
    passes: int
    forced: int = 0
    checks: int = 0
    sampled: int = 0


def run(model: Any, tokenizer: Any, folder: str, *, splits: list[str], limit: int = 20, seed: int = 0,
        max_new_tokens: int = 128, configs: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    from ..generate import Decoder

    decoder = Decoder(model, tokenizer)
    xgr_compiler = _xgrammar(tokenizer, decoder.width)
    names = [n for n in (configs or [n for n in LABELS if n not in OPT_IN]) if n != "b" or xgr_compiler is not None]
    stats: dict[str, dict[str, float]] = {n: dict.fromkeys(("tokens", "seconds", "passes", "forced", "finished", "valid", "checks", "sampled", "outputs"), 0) for n in names}
    pairs = pick_schemas(folder, splits, limit, seed)
    skipped: list[dict] = []
    jobs: list[tuple] = []  # (constraint, prompt, schema, outputs) for the batched rows
    for i, row in enumerate(pairs):
        schema = json.loads(row["schema"])
        constraint = _constraint(schema, decoder, row["id"], skipped)
        if constraint is None:
            continue
        prompt = decoder.encode_prompt([{"role": "system", "content": PROMPT}, {"role": "user", "content": json.dumps(schema)}])
        outputs: dict[str, list[int]] = {}
        jobs.append((constraint, prompt, schema, outputs))
        for name in names:
            if name == "d4":
                continue
            if name in ("a", "b", "c", "cb"):
                processors = _processors(name, schema, constraint, tokenizer, decoder.width, xgr_compiler, max_new_tokens)
                outcome = _hf(model, tokenizer, prompt, processors, max_new_tokens)
            else:
                outcome = _loop(decoder, name, prompt, constraint, max_new_tokens, seed + i)
            outputs[name] = outcome.tokens
            _add(stats[name], outcome, None if name == "a" else schema)
        if "c" in outputs and "d0" in outputs:
            stats["d0"]["equal_to_c"] = stats["d0"].get("equal_to_c", 0) + (outputs["d0"] == outputs["c"])
        if progress:
            print(f"  {i + 1}/{len(pairs)} {row['id']}: " + ", ".join(f"{n} {stats[n]['tokens'] / max(stats[n]['seconds'], 1e-9):.1f} tok/s" for n in names), flush=True)
    if "d4" in names:
        _run_batches(decoder, jobs, stats["d4"], max_new_tokens, progress)
    for s in stats.values():
        s["tokens_per_s"] = s["tokens"] / s["seconds"] if s["seconds"] else 0.0
        s["ms_per_token"] = 1000 * s["seconds"] / s["tokens"] if s["tokens"] else 0.0
    return {"pairs": len(pairs), "max_new_tokens": max_new_tokens, "configs": stats, "skipped": skipped}


def _xgrammar(tokenizer: Any, width: int) -> Any:
    try:
        import xgrammar as xgr
        import xgrammar.contrib.hf  # noqa: F401
    except ImportError:
        return None
    return xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=width))


def _constraint(schema: Any, decoder: Any, name: str, skipped: list[dict]) -> Any:
    from ..constraints.jsonschema import JSONSchema
    from ..errors import CtrldecError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            constraint = JSONSchema(schema, lenient=True)
            constraint.compile(decoder.info)
        return constraint
    except CtrldecError as e:
        skipped.append({"id": name, "error": str(e)})
        return None


def _processors(name: str, schema: Any, constraint: Any, tokenizer: Any, width: int, xgr_compiler: Any, max_new_tokens: int) -> list[Any]:
    if name == "b":
        import xgrammar.contrib.hf

        compiled = xgr_compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=False)
        return [xgrammar.contrib.hf.LogitsProcessor(compiled)]
    if name in ("c", "cb"):
        budget = max_new_tokens if name == "cb" else None
        return [constraint.logits_processor(tokenizer, vocab_size=width, max_new_tokens=budget)]
    return []


def _hf(model: Any, tokenizer: Any, prompt: list[int], processors: list[Any], max_new_tokens: int) -> _Outcome:
    eos = tokenizer.eos_token_id
    ids = torch.tensor([prompt])
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), logits_processor=processors,
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=eos)
    seconds = time.perf_counter() - started
    new = out[0, len(prompt):].tolist()
    finished = eos in new
    new = new[: new.index(eos)] if finished else new
    return _Outcome(new, tokenizer.decode(new, skip_special_tokens=True), finished, seconds, len(new) + finished)


def _loop_options(name: str) -> dict[str, Any]:
    from ..samplers import AWRS
    from ..search import SMC

    if name == "w":
        return {"sampler": AWRS()}
    if name == "m8":
        return {"sampler": SMC(particles=8)}
    return {"greedy": name != "s", "temperature": 1.0, "fast_forward": name != "d0", "lookahead": 0 if name == "d0" else 8,
            "budget_aware": None if name not in ("dn", "d0") else False}


def _loop(decoder: Any, name: str, prompt: list[int], constraint: Any, max_new_tokens: int, seed: int) -> _Outcome:
    started = time.perf_counter()
    result = decoder.generate(prompt, constraint=constraint, max_new_tokens=max_new_tokens, seed=seed, **_loop_options(name))
    seconds = time.perf_counter() - started
    runs = result.smc.particles if result.smc is not None else [result]  # SMC: every particle's draws
    passes = max(r.timing["forward_passes"] for r in runs)
    return _Outcome(result.token_ids, result.text, result.finish_reason == "eos", seconds, passes,
                    result.kinds.count("forced"), sum(sum(r.checks) for r in runs), sum(len(r.checks) for r in runs))


def _add(s: dict[str, float], o: _Outcome, schema: Any) -> None:
    """Add one output to a configuration's totals (validity checked when ``schema`` is given)."""
    for key in ("seconds", "passes", "forced", "checks", "sampled"):
        s[key] += getattr(o, key)
    s["tokens"] += len(o.tokens)
    s["outputs"] += 1
    s["finished"] += o.finished
    s["valid"] += o.finished and schema is not None and not validation_errors(schema, o.text)


BATCH = 4
OPT_IN = {"cb", "dn"}  # run only when asked for (--configs): what budget-aware completion costs


def _run_batches(decoder: Any, jobs: list[tuple], s: dict[str, float], max_new_tokens: int, progress: bool) -> None:
    """(d4): the pairs, ``BATCH`` at a time, through ``generate_batch`` (each row with its own
    schema), greedy with fast-forward and prompt lookup as (d)."""
    for start in range(0, len(jobs), BATCH):
        group = jobs[start : start + BATCH]
        started = time.perf_counter()
        results = decoder.generate_batch([prompt for _, prompt, _, _ in group], constraint=[c for c, _, _, _ in group],
                                         max_new_tokens=max_new_tokens, greedy=True)
        s["seconds"] += time.perf_counter() - started
        s["passes"] += max(r.timing["forward_passes"] for r in results)
        for (_, _, schema, outputs), r in zip(group, results):
            _add(s, _Outcome(r.token_ids, r.text, r.finish_reason == "eos", 0.0, 0, r.kinds.count("forced")), schema)
            if "d" in outputs:
                s["equal_to_d"] = s.get("equal_to_d", 0) + (outputs["d"] == r.token_ids)
        if progress:
            print(f"  batch {start // BATCH + 1}: {s['tokens'] / max(s['seconds'], 1e-9):.1f} tok/s", flush=True)


LABELS = {
    "a": "(a) HF generate, unconstrained",
    "b": "(b) HF generate + xgrammar processor",
    "c": "(c) HF generate + ctrldec processor",
    "cb": "(cb) as (c), budget-aware",
    "d": "(d) ctrldec loop (fast-fwd, lookup)",
    "dn": "(dn) as (d), not budget-aware",
    "d0": "(d0) ctrldec loop, plain",
    "s": "(s) ctrldec loop, sampling T=1",
    "d4": f"(d4) as (d), generate_batch of {BATCH}",
    "w": "(w) ctrldec loop, AWRS T=1",
    "m8": "(m8) ctrldec loop, SMC 8 particles T=1",
}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['pairs']} (prompt, schema) pairs, greedy unless noted, max_new_tokens {report['max_new_tokens']}"]
    lines.append(f"{'configuration':<40}{'tokens':>8}{'tok/s':>8}{'ms/tok':>8}{'passes':>8}{'forced':>8}{'finished':>9}{'valid':>7}{'checks/tok':>11}")
    for name, s in report["configs"].items():
        checks = f"{s['checks'] / s['sampled']:.2f}" if s["sampled"] else "-"
        valid = "-" if name == "a" else f"{int(s['valid'])}"
        lines.append(
            f"{LABELS[name]:<40}{int(s['tokens']):>8}{s['tokens_per_s']:>8.1f}{s['ms_per_token']:>8.1f}{int(s['passes']):>8}"
            f"{int(s['forced']):>8}{int(s['finished']):>9}{valid:>7}{checks:>11}"
        )
    d0 = report["configs"].get("d0", {})
    if "equal_to_c" in d0:
        lines.append(f"(d0) outputs equal to (c) token for token: {int(d0['equal_to_c'])}/{int(d0['outputs'])}")
    d4 = report["configs"].get("d4", {})
    if "equal_to_d" in d4:
        lines.append(f"(d4) outputs equal to (d) token for token: {int(d4['equal_to_d'])}/{int(d4['outputs'])}")
    w, m8 = report["configs"].get("w"), report["configs"].get("m8")
    if w and m8 and w["passes"] and m8["passes"]:
        single, smc = 1000 * w["seconds"] / w["passes"], 1000 * m8["seconds"] / m8["passes"]
        lines.append(f"(m8) {smc:.1f} ms per forward pass (8 particles) vs (w) {single:.1f} ms (one sequence): {smc / single:.2f}x; "
                     f"accepts checks per sampled token {m8['checks'] / max(m8['sampled'], 1):.2f} vs a full mask's |V|")
    base = report["configs"].get("d")
    for ref in ("a", "b"):
        if base and ref in report["configs"] and report["configs"][ref]["tokens_per_s"]:
            lines.append(f"(d) / {LABELS[ref][:3]} tokens/s: {base['tokens_per_s'] / report['configs'][ref]['tokens_per_s']:.2f}x")
    return "\n".join(lines)
