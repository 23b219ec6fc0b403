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

Speculative decoding, greedy, not budget-aware (so that (x*) outputs are (c)'s, token for token):
(ap)/(ae) ``model.generate`` unconstrained with transformers' prompt lookup
(``prompt_lookup_num_tokens=10``) / early-exit assisted generation (``assistant_early_exit=L``),
(cp)/(ce) the same with ctrldec's processor, and ctrldec's loop with ``Speculative`` drafters:
(x0) forced text only, (xl) + prompt lookup, (xr) + Token Recycling, (xe) + early exit after L
layers, (xa) all of them, and (xn) prompt lookup and recycling without forced text, whose
outputs are (c)'s token for token (forced text is tokenized canonically, so rows with it write
other tokens than token-by-token masking does): (xn) against (cp) is verifier against verifier on
the same outputs. Recycling's table lives through the run (its "hot start").

With ``free_text`` (the quality-task folder), the same unconstrained rows also run on 20 chat
prompts without a schema (GSM8K, shuffled objects, last letters).

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

from ..speculative.config import EARLY_EXIT_LAYERS
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
    drafts: dict[str, float] | None = None


def run(model: Any, tokenizer: Any, folder: str, *, splits: list[str], limit: int = 20, seed: int = 0,
        max_new_tokens: int = 128, configs: list[str] | None = None, progress: bool = False,
        free_text: str | None = None, early_exit: int | None = None) -> dict[str, Any]:
    from ..generate import Decoder

    decoder = Decoder(model, tokenizer)
    xgr_compiler = _xgrammar(tokenizer, decoder.width)
    names = [n for n in (configs or [n for n in LABELS if n not in OPT_IN]) if n != "b" or xgr_compiler is not None]
    unknown = [n for n in names if n not in LABELS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {', '.join(unknown)}; the configurations are: {', '.join(LABELS)}")
    layers = early_exit or max(1, round(EARLY_EXIT_LAYERS * model.config.num_hidden_layers))
    specs = _speculative(layers)
    stats: dict[str, dict[str, float]] = {n: _totals() for n in names}
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
            if name in HF:
                processors = _processors(name, schema, constraint, tokenizer, decoder.width, xgr_compiler, max_new_tokens)
                outcome = _hf(model, tokenizer, prompt, processors, max_new_tokens, **_assisted(name, layers))
            else:
                outcome = _loop(decoder, name, prompt, constraint, max_new_tokens, seed + i, specs)
            outputs[name] = outcome.tokens
            _add(stats[name], outcome, None if name == "a" else schema)
        for name in ("d0", "xn"):
            if "c" in outputs and name in outputs:
                stats[name]["equal_to_c"] = stats[name].get("equal_to_c", 0) + (outputs[name] == outputs["c"])
        for name in SPECULATIVE:
            if "x0" in outputs and name in outputs and name not in ("x0", "xn"):
                stats[name]["equal_to_x0"] = stats[name].get("equal_to_x0", 0) + (outputs[name] == outputs["x0"])
        if progress:
            print(f"  {i + 1}/{len(pairs)} {row['id']}: " + ", ".join(f"{n} {stats[n]['tokens'] / max(stats[n]['seconds'], 1e-9):.1f} tok/s" for n in names), flush=True)
    if "d4" in names:
        _run_batches(decoder, jobs, stats["d4"], max_new_tokens, progress)
    report = {"pairs": len(pairs), "max_new_tokens": max_new_tokens, "early_exit_layers": layers, "configs": _rates(stats),
              "skipped": skipped}
    if free_text:
        free = [n for n in names if n in FREE]
        report["free_text"] = _rates(_run_free(decoder, free_text, free, specs, layers, max_new_tokens, seed, progress))
    return report


def _totals() -> dict[str, float]:
    return dict.fromkeys(("tokens", "seconds", "passes", "forced", "finished", "valid", "checks", "sampled", "outputs"), 0)


def _rates(stats: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    for s in stats.values():
        s["tokens_per_s"] = s["tokens"] / s["seconds"] if s["seconds"] else 0.0
        s["ms_per_token"] = 1000 * s["seconds"] / s["tokens"] if s["tokens"] else 0.0
    return stats


def free_prompts(folder: str, limit: int = 20) -> list[str]:
    """``limit`` chat prompts without a schema from the quality tasks: GSM8K questions, shuffled-objects
    puzzles and last-letter tasks, in equal parts, the first rows of each file."""
    import os

    sources = [("gsm8k_test.jsonl", "question"), ("bbh_tracking_shuffled_objects_three.jsonl", "input"),
               ("last_letters.jsonl", "question")]
    per = [limit // 3 + (i < limit % 3) for i in range(3)]
    prompts = []
    for (name, key), n in zip(sources, per):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise ValueError(f"no {name} in {folder} (the quality-task folder, e.g. ../shared/data/quality_tasks)")
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for _, line in zip(range(n), f)]
        prompts += [r[key] + "\nThink step by step, then give the answer." for r in rows]
    return prompts


def _run_free(decoder: Any, folder: str, names: list[str], specs: dict[str, Any], layers: int, max_new_tokens: int,
              seed: int, progress: bool) -> dict[str, dict[str, float]]:
    """The unconstrained rows on the free-text prompts; (x*) outputs are checked against (x0)'s."""
    stats = {n: _totals() for n in names}
    for i, text in enumerate(free_prompts(folder)):
        prompt = decoder.encode_prompt(text)
        outputs: dict[str, list[int]] = {}
        for name in names:
            if name in HF:
                outcome = _hf(decoder.model, decoder.tokenizer, prompt, [], max_new_tokens, **_assisted(name, layers))
            else:
                outcome = _loop(decoder, name, prompt, None, max_new_tokens, seed + i, specs)
            outputs[name] = outcome.tokens
            _add(stats[name], outcome, None)
        for name in names:
            if name.startswith("x") and name != "x0" and "x0" in outputs:
                stats[name]["equal_to_x0"] = stats[name].get("equal_to_x0", 0) + (outputs[name] == outputs["x0"])
        if progress:
            print(f"  free {i + 1}: " + ", ".join(f"{n} {stats[n]['tokens'] / max(stats[n]['seconds'], 1e-9):.1f} tok/s" for n in names), flush=True)
    return stats


SPECULATIVE = {"x0": ["forced"], "xl": ["forced", "prompt_lookup"], "xr": ["forced", "recycling"],
               "xe": ["forced", "early_exit"], "xa": ["forced", "prompt_lookup", "recycling", "early_exit"],
               "xn": ["prompt_lookup", "recycling"]}


def early_exit_sweep(model: Any, tokenizer: Any, free_text: str, layers: list[int], *, prompts: int = 6,
                     max_new_tokens: int = 64) -> dict[str, Any]:
    """Calibration of the early-exit self-draft: for each depth L, tokens/s of forced text +
    ``early_exit`` on free-text prompts, and how many drafted tokens the full model kept; L = 0 is
    the loop without drafts."""
    from ..generate import Decoder
    from ..speculative import Speculative

    decoder = Decoder(model, tokenizer)
    texts = free_prompts(free_text, prompts)
    rows = []
    for depth in [0, *layers]:
        spec = Speculative(["forced"] if depth == 0 else ["forced", "early_exit"], early_exit_layers=depth or None)
        tokens, seconds, totals = 0, 0.0, {}
        for text in texts:
            started = time.perf_counter()
            result = decoder.generate(text, greedy=True, max_new_tokens=max_new_tokens, speculative=spec)
            seconds += time.perf_counter() - started
            tokens += len(result.token_ids)
            for key in ("drafted", "draft_accepted", "verified"):
                totals[key] = totals.get(key, 0) + result.timing.get(key, 0)
        rows.append({"layers": depth, "tokens_per_s": tokens / seconds, **totals})
    return {"prompts": len(texts), "max_new_tokens": max_new_tokens, "rows": rows}


def format_sweep(report: dict[str, Any]) -> str:
    lines = [f"early-exit self-draft, {report['prompts']} free-text prompts, greedy, max_new_tokens {report['max_new_tokens']}",
             f"{'layers':>7}{'tok/s':>8}{'drafted':>9}{'kept':>6}{'kept %':>8}{'kept/verification':>19}"]
    for r in report["rows"]:
        lines.append(f"{r['layers'] or 'none':>7}{r['tokens_per_s']:>8.1f}{r['drafted']:>9}{r['draft_accepted']:>6}"
                     f"{r['draft_accepted'] / max(r['drafted'], 1):>8.0%}{r['draft_accepted'] / max(r['verified'], 1):>19.2f}")
    return "\n".join(lines)


def _speculative(layers: int) -> dict[str, Any]:
    from ..speculative import Speculative

    return {name: Speculative(drafters, early_exit_layers=layers) for name, drafters in SPECULATIVE.items()}


def _assisted(name: str, layers: int) -> dict[str, Any]:
    """transformers' own speculative decoding for an (ap)/(ae)/(cp)/(ce) row."""
    if name in ("ap", "cp"):
        return {"prompt_lookup_num_tokens": 10}
    if name in ("ae", "ce"):
        return {"assistant_early_exit": layers}
    return {}


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
    if name == "cp" or name == "ce":
        name = "c"
    if name == "b":
        import xgrammar.contrib.hf

        compiled = xgr_compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=False)
        return [xgrammar.contrib.hf.LogitsProcessor(compiled)]
    if name in ("c", "cb"):
        budget = max_new_tokens if name == "cb" else None
        return [constraint.logits_processor(tokenizer, vocab_size=width, max_new_tokens=budget)]
    return []


def _hf(model: Any, tokenizer: Any, prompt: list[int], processors: list[Any], max_new_tokens: int, **assisted: Any) -> _Outcome:
    eos = tokenizer.eos_token_id
    ids = torch.tensor([prompt])
    calls = [0]
    hook = model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))  # passes (an early-exit draft's too)
    started = time.perf_counter()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model.generate(ids, attention_mask=torch.ones_like(ids), logits_processor=processors,
                                 max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=eos, **assisted)
    finally:
        hook.remove()
    seconds = time.perf_counter() - started
    new = out[0, len(prompt):].tolist()
    finished = eos in new
    new = new[: new.index(eos)] if finished else new
    return _Outcome(new, tokenizer.decode(new, skip_special_tokens=True), finished, seconds, calls[0])


def _loop_options(name: str, specs: dict[str, Any]) -> dict[str, Any]:
    from ..samplers import AWRS
    from ..search import SMC

    if name in specs:  # not budget-aware: the outputs are (c)'s and (d0)'s, so the speeds compare like for like
        return {"greedy": True, "speculative": specs[name], "budget_aware": False}
    if name == "w":
        return {"sampler": AWRS()}
    if name == "m8":
        return {"sampler": SMC(particles=8)}
    return {"greedy": name != "s", "temperature": 1.0, "fast_forward": name != "d0", "lookahead": 0 if name == "d0" else 8,
            "budget_aware": None if name not in ("dn", "d0") else False}


def _loop(decoder: Any, name: str, prompt: list[int], constraint: Any, max_new_tokens: int, seed: int,
          specs: dict[str, Any]) -> _Outcome:
    started = time.perf_counter()
    result = decoder.generate(prompt, constraint=constraint, max_new_tokens=max_new_tokens, seed=seed, **_loop_options(name, specs))
    seconds = time.perf_counter() - started
    runs = result.smc.particles if result.smc is not None else [result]  # SMC: every particle's draws
    passes = max(r.timing["forward_passes"] for r in runs)
    drafts = {k: v for k, v in result.timing.items() if "/" in k}  # per drafter: drafted, kept, verification passes
    return _Outcome(result.token_ids, result.text, result.finish_reason == "eos", seconds, passes,
                    result.kinds.count("forced"), sum(sum(r.checks) for r in runs), sum(len(r.checks) for r in runs), drafts)


def _add(s: dict[str, float], o: _Outcome, schema: Any) -> None:
    """Add one output to a configuration's totals (validity checked when ``schema`` is given)."""
    for key in ("seconds", "passes", "forced", "checks", "sampled"):
        s[key] += getattr(o, key)
    s["tokens"] += len(o.tokens)
    s["outputs"] += 1
    for key, n in (o.drafts or {}).items():
        s[key] = s.get(key, 0) + n
    s["finished"] += o.finished
    s["valid"] += o.finished and schema is not None and not validation_errors(schema, o.text)


BATCH = 4
OPT_IN = {"cb", "dn"}  # run only when asked for (--configs): what budget-aware completion costs
HF = {"a", "b", "c", "cb", "ap", "ae", "cp", "ce"}  # rows that run model.generate
FREE = ["a", "ap", "ae", "x0", "xl", "xr", "xe", "xa", "xn"]  # rows that also run on the free-text prompts


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
    "ap": "(ap) HF generate, prompt lookup 10",
    "ae": "(ae) HF generate, early exit",
    "cp": "(cp) as (c), HF prompt lookup 10",
    "ce": "(ce) as (c), HF early exit",
    "x0": "(x0) ctrldec, forced text only",
    "xl": "(xl) ctrldec, + prompt lookup",
    "xr": "(xr) ctrldec, + Token Recycling",
    "xe": "(xe) ctrldec, + early exit",
    "xa": "(xa) ctrldec, all drafters",
    "xn": "(xn) ctrldec, lookup + recycling, no forced",
}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['pairs']} (prompt, schema) pairs, greedy unless noted, max_new_tokens {report['max_new_tokens']}, "
             f"early exit after {report.get('early_exit_layers', '-')} layers"]
    lines += _table(report["configs"])
    for ref in ("c", "x0"):
        same = [f"{LABELS[n][:4]} {int(s[f'equal_to_{ref}'])}/{int(s['outputs'])}" for n, s in report["configs"].items()
                if f"equal_to_{ref}" in s]
        if same:
            lines.append(f"outputs equal to ({ref})'s token for token: " + ", ".join(same))
    d4 = report["configs"].get("d4", {})
    if "equal_to_d" in d4:
        lines.append(f"(d4) outputs equal to (d) token for token: {int(d4['equal_to_d'])}/{int(d4['outputs'])}")
    w, m8 = report["configs"].get("w"), report["configs"].get("m8")
    if w and m8 and w["passes"] and m8["passes"]:
        single, smc = 1000 * w["seconds"] / w["passes"], 1000 * m8["seconds"] / m8["passes"]
        lines.append(f"(m8) {smc:.1f} ms per forward pass (8 particles) vs (w) {single:.1f} ms (one sequence): {smc / single:.2f}x; "
                     f"accepts checks per sampled token {m8['checks'] / max(m8['sampled'], 1):.2f} vs a full mask's |V|")
    lines += _ratios(report["configs"], ("d", "xl", "xr", "xe", "xa", "xn"), ("a", "b", "ap", "cp"))
    lines += _drafter_lines(report["configs"])
    free = report.get("free_text")
    if free:
        lines.append("")
        lines.append(f"{next(iter(free.values()))['outputs']:.0f} free-text prompts, unconstrained, greedy")
        lines += _table(free, schemas=False)
        lines += _ratios(free, ("xl", "xr", "xe", "xa", "xn"), ("a", "ap", "ae"))
        lines += _drafter_lines(free)
        same = [f"{LABELS[n][:4]} {int(s['equal_to_x0'])}/{int(s['outputs'])}" for n, s in free.items() if "equal_to_x0" in s]
        if same:
            lines.append("outputs equal to (x0) token for token: " + ", ".join(same))
    return "\n".join(lines)


def _table(configs: dict[str, dict[str, float]], schemas: bool = True) -> list[str]:
    lines = [f"{'configuration':<40}{'tokens':>8}{'tok/s':>8}{'ms/tok':>8}{'passes':>8}{'forced':>8}{'finished':>9}{'valid':>7}{'checks/tok':>11}"]
    for name, s in configs.items():
        checks = f"{s['checks'] / s['sampled']:.2f}" if s["sampled"] else "-"
        valid = "-" if not schemas or name in ("a", "ap", "ae") else f"{int(s['valid'])}"
        lines.append(
            f"{LABELS[name]:<40}{int(s['tokens']):>8}{s['tokens_per_s']:>8.1f}{s['ms_per_token']:>8.1f}{int(s['passes']):>8}"
            f"{int(s['forced']):>8}{int(s['finished']):>9}{valid:>7}{checks:>11}"
        )
    return lines


def _ratios(configs: dict[str, dict[str, float]], ours: tuple[str, ...], refs: tuple[str, ...]) -> list[str]:
    lines = []
    for name in ours:
        base = configs.get(name)
        parts = [f"{base['tokens_per_s'] / configs[r]['tokens_per_s']:.2f}x {LABELS[r][:4]}" for r in refs
                 if base and r in configs and configs[r]["tokens_per_s"]]
        if parts:
            lines.append(f"{LABELS[name][:4]} tokens/s: " + ", ".join(parts))
    return lines


def _drafter_lines(configs: dict[str, dict[str, float]]) -> list[str]:
    """Per drafter: draft tokens kept per verification pass, and the share of drafted tokens kept."""
    lines = []
    for name, s in configs.items():
        parts = []
        for key in sorted(k for k in s if k.startswith("verified/")):
            drafter = key.split("/", 1)[1]
            passes, kept, drafted = s[key], s.get(f"draft_accepted/{drafter}", 0), s.get(f"drafted/{drafter}", 0)
            parts.append(f"{drafter} {kept / passes:.2f} kept per verification ({int(passes)} passes, {kept / max(drafted, 1):.0%} of drafted)")
        if parts:
            lines.append(f"{LABELS[name][:4]} drafts: " + "; ".join(parts))
    return lines
