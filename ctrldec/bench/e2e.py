"""``ctrldec bench e2e``: end-to-end structured generation speed, one process, same prompts.

For (prompt, schema) pairs from JSONSchemaBench (its system prompt, the schema as the user
message), greedy, the same ``max_new_tokens``:

(a) ``model.generate`` unconstrained,
(b) ``model.generate`` with xgrammar's logits processor (when installed),
(c) ``model.generate`` with ctrldec's logits processor,
(d) ctrldec's loop (fast-forward and prompt lookup on), and (d0) the plain loop (both off),
(s) ctrldec's loop sampling at temperature 1, for the number of ``accepts`` checks per token.

Reported per configuration: output tokens, time per output token, tokens/s (prompt prefill
included in the time, for all alike), valid finished outputs, forward passes, the share of
forced tokens, and checks per sampled token.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any

import torch

from .generation import PROMPT, pick_schemas, validation_errors

__all__ = ["run", "format_report"]


def run(model: Any, tokenizer: Any, folder: str, *, splits: list[str], limit: int = 20, seed: int = 0,
        max_new_tokens: int = 128, configs: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    from ..constraints.jsonschema import JSONSchema
    from ..errors import CtrldecError
    from ..generate import Decoder

    decoder = Decoder(model, tokenizer)
    eos = tokenizer.eos_token_id
    xgr = None
    try:
        import xgrammar as xgr  # type: ignore[no-redef]
        import xgrammar.contrib.hf  # noqa: F401

        xgr_compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=decoder.width))
    except ImportError:
        xgr = None
    names = configs or ["a", "b", "c", "d", "d0", "s"]
    if xgr is None and "b" in names:
        names.remove("b")
    stats: dict[str, dict[str, float]] = {n: {"tokens": 0, "seconds": 0.0, "passes": 0, "forced": 0, "finished": 0, "valid": 0, "checks": 0, "sampled": 0, "outputs": 0} for n in names}
    pairs = pick_schemas(folder, splits, limit, seed)
    skipped = []
    for i, row in enumerate(pairs):
        schema = json.loads(row["schema"])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                constraint = JSONSchema(schema, lenient=True)
                constraint.compile(decoder.info)
        except CtrldecError as e:
            skipped.append({"id": row["id"], "error": str(e)})
            continue
        prompt = decoder.encode_prompt([{"role": "system", "content": PROMPT}, {"role": "user", "content": json.dumps(schema)}])
        ids = torch.tensor([prompt])
        outputs: dict[str, list[int]] = {}
        for name in names:
            s = stats[name]
            if name in ("a", "b", "c"):
                processors = []
                if name == "b":
                    compiled = xgr_compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=False)
                    processors = [xgr.contrib.hf.LogitsProcessor(compiled)]
                elif name == "c":
                    processors = [constraint.logits_processor(tokenizer, vocab_size=decoder.width)]
                started = time.perf_counter()
                with torch.no_grad():
                    out = model.generate(ids, attention_mask=torch.ones_like(ids), logits_processor=processors,
                                         max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=eos)
                seconds = time.perf_counter() - started
                new = out[0, len(prompt):].tolist()
                finished = eos in new
                new = new[: new.index(eos)] if finished else new
                text = tokenizer.decode(new, skip_special_tokens=True)
                s["passes"] += len(new) + (1 if finished else 0)
            else:
                started = time.perf_counter()
                result = decoder.generate(prompt, constraint=constraint, max_new_tokens=max_new_tokens,
                                          greedy=name != "s", temperature=1.0, seed=seed + i, fast_forward=name != "d0",
                                          lookahead=0 if name == "d0" else 8)
                seconds = time.perf_counter() - started
                new, text, finished = result.token_ids, result.text, result.finish_reason == "eos"
                s["passes"] += result.timing["forward_passes"]
                s["forced"] += result.kinds.count("forced")
                s["checks"] += sum(result.checks)
                s["sampled"] += len(result.checks)
            outputs[name] = new
            s["tokens"] += len(new)
            s["seconds"] += seconds
            s["outputs"] += 1
            s["finished"] += finished
            s["valid"] += finished and name != "a" and not validation_errors(schema, text)
        if "c" in outputs and "d0" in outputs:
            stats["d0"]["equal_to_c"] = stats["d0"].get("equal_to_c", 0) + (outputs["d0"] == outputs["c"])
        if progress:
            print(f"  {i + 1}/{len(pairs)} {row['id']}: " + ", ".join(f"{n} {stats[n]['tokens'] / max(stats[n]['seconds'], 1e-9):.1f} tok/s" for n in names), flush=True)
    for s in stats.values():
        s["tokens_per_s"] = s["tokens"] / s["seconds"] if s["seconds"] else 0.0
        s["ms_per_token"] = 1000 * s["seconds"] / s["tokens"] if s["tokens"] else 0.0
    return {"pairs": len(pairs), "max_new_tokens": max_new_tokens, "configs": stats, "skipped": skipped}


LABELS = {
    "a": "(a) HF generate, unconstrained",
    "b": "(b) HF generate + xgrammar processor",
    "c": "(c) HF generate + ctrldec processor",
    "d": "(d) ctrldec loop (fast-fwd, lookup)",
    "d0": "(d0) ctrldec loop, plain",
    "s": "(s) ctrldec loop, sampling T=1",
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
    base = report["configs"].get("d")
    for ref in ("a", "b"):
        if base and ref in report["configs"] and report["configs"][ref]["tokens_per_s"]:
            lines.append(f"(d) / {LABELS[ref][:3]} tokens/s: {base['tokens_per_s'] / report['configs'][ref]['tokens_per_s']:.2f}x")
    return "\n".join(lines)
