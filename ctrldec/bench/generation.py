"""``ctrldec bench generate``: JSON for real schemas, generated and validated, per generation
policy, with and without budget-aware completion, beside xgrammar's and llguidance's processors.

JSONSchemaBench's protocol: system message "You need to generate a JSON object that matches the
schema below.", the schema as the user message, greedy decoding, the same ``max_new_tokens`` for
every configuration:

* ``ctrldec``: ctrldec's loop with its defaults (fast-forward, prompt lookup, budget-aware
  completion), ``JSONSchema(schema, lenient=True)`` with the default policy
  (``extra_properties="forbid"``);
* ``ctrldec-nobudget``: the same with ``budget_aware=False``;
* ``ctrldec-allow`` / ``ctrldec-allow-nobudget``: those two with ``extra_properties="allow"``
  (the spec's language; the last is what ctrldec generated before the policies);
* ``xgrammar``: ``model.generate`` with ``xgrammar.contrib.hf.LogitsProcessor`` over
  ``compile_json_schema(schema)`` with xgrammar's defaults;
* ``llguidance``: ``model.generate`` with a processor over ``llguidance.LLMatcher`` and
  ``grammar_from_json_schema(schema)`` with llguidance's defaults (llguidance ships no
  ``transformers`` processor; ``_LLGuidanceProcessor`` is the few lines it takes).

Per configuration: schemas compiled, outputs finished (EOS within the budget), valid (the
``jsonschema`` validator of the schema's own draft, FormatChecker on), invalid, truncated (the
budget ran out first), mean output tokens, tokens/s (prefill included, all alike). For the budget
configurations, per schema, the first output position where the budget bound binds (the first
step whose budget mask is narrower than the constraint's own), found by replaying the output.
"""

from __future__ import annotations

import glob
import json
import os
import random
import time
import warnings
from typing import Any

__all__ = ["run", "PROMPT", "CONFIGS", "pick_schemas", "validation_errors", "format_report"]

PROMPT = "You need to generate a JSON object that matches the schema below."

# name -> (extra_properties, budget_aware) for ctrldec's loop; None for a peer's processor
CONFIGS: dict[str, tuple[str, bool] | None] = {
    "ctrldec": ("forbid", True),  # the defaults
    "ctrldec-nobudget": ("forbid", False),
    "ctrldec-allow": ("allow", True),
    "ctrldec-allow-nobudget": ("allow", False),  # what ctrldec generated before the policies
    "xgrammar": None,
    "llguidance": None,
}
DEFAULT_CONFIGS = list(CONFIGS)


def pick_schemas(folder: str, splits: list[str], limit: int, seed: int) -> list[dict]:
    """A seeded sample of ``limit`` rows, spread evenly over ``splits``."""
    rows = []
    for split in splits:
        paths = glob.glob(os.path.join(folder, f"{split}.jsonl"))
        if not paths:
            raise ValueError(f"no {split}.jsonl in {folder}")
        with open(paths[0], encoding="utf-8") as f:
            rows.append([json.loads(line) for line in f])
    rng = random.Random(seed)
    per = [limit // len(splits) + (1 if i < limit % len(splits) else 0) for i in range(len(splits))]
    return [r for split_rows, n in zip(rows, per) for r in rng.sample(split_rows, min(n, len(split_rows)))]


def validation_errors(schema: Any, text: str) -> list[str]:
    """Why ``text`` is not a JSON instance of ``schema``, by the validator of the schema's own
    draft (``$schema``; 2020-12 when it names none), FormatChecker on; [] if it is one."""
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator) if isinstance(schema, dict) \
            else jsonschema.Draft202012Validator
        validator = cls(schema, format_checker=jsonschema.FormatChecker())
        return [e.message for e in validator.iter_errors(json.loads(text))]
    except (ValueError, jsonschema.exceptions.SchemaError) as e:
        return [f"{type(e).__name__}: {e}"]


class _LLGuidanceProcessor:
    """A ``transformers`` logits processor over one ``llguidance.LLMatcher`` (batch of 1)."""

    def __init__(self, ll_tokenizer: Any, grammar: str, prompt_len: int) -> None:
        import llguidance
        import llguidance.torch as llt

        self._llt = llt
        self.matcher = llguidance.LLMatcher(ll_tokenizer, grammar)
        if self.matcher.is_error():
            raise ValueError(self.matcher.get_error())
        self.bitmask = llt.allocate_token_bitmask(1, ll_tokenizer.vocab_size)
        self.prompt_len = prompt_len
        self.seen = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        new = input_ids[0, self.prompt_len:].tolist()
        for t in new[self.seen:]:
            self.matcher.consume_token(t)
        self.seen = len(new)
        self._llt.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        self._llt.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        return scores


class _Peers:
    """The peers' compilers, built once (None where the library is not installed)."""

    def __init__(self, tokenizer: Any, width: int, names: list[str]) -> None:
        import torch

        self.xgrammar = self.llguidance = None
        logits = torch.zeros(1, width)
        if "xgrammar" in names:
            try:
                import xgrammar as xgr

                self.xgrammar = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=width))
                xgr.apply_token_bitmask_inplace(logits, xgr.allocate_token_bitmask(1, width))  # its first call compiles a kernel
            except ImportError:
                pass
        if "llguidance" in names:
            try:
                import llguidance.hf
                import llguidance.torch as llt

                self.llguidance = llguidance.hf.from_tokenizer(tokenizer)
                llt.apply_token_bitmask_inplace(logits, llt.allocate_token_bitmask(1, self.llguidance.vocab_size))  # likewise (3 s)
            except ImportError:
                pass

    def available(self, name: str) -> bool:
        return CONFIGS[name] is not None or getattr(self, name) is not None

    def processor(self, name: str, schema: Any, prompt_len: int) -> Any:
        """A fresh processor for one generation (peers keep per-generation state)."""
        if name == "xgrammar":
            import xgrammar.contrib.hf

            return xgrammar.contrib.hf.LogitsProcessor(self.xgrammar.compile_json_schema(json.dumps(schema)))  # type: ignore[union-attr]
        import llguidance

        return _LLGuidanceProcessor(self.llguidance, llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema)), prompt_len)


def _hf_generate(model: Any, tokenizer: Any, prompt: list[int], processor: Any, max_new_tokens: int) -> tuple[list[int], bool, float]:
    import torch

    eos = tokenizer.eos_token_id
    ids = torch.tensor([prompt])
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), logits_processor=[processor],
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=eos)
    seconds = time.perf_counter() - started
    new = out[0, len(prompt):].tolist()
    finished = eos in new
    return (new[: new.index(eos)] if finished else new), finished, seconds  # EOS not counted, as in ctrldec's results


def _first_binding(constraint: Any, info: Any, tokens: list[int], budget: int) -> int | None:
    """The first output position whose budget mask is narrower than the constraint's own mask."""
    import numpy as np

    from ..engine.budget import budgeted

    grammar = constraint.compile(info)
    plain, bounded = grammar.matcher(), budgeted(grammar.matcher(), budget)
    for i, t in enumerate(tokens):
        if not np.array_equal(plain.mask(), bounded.mask()):
            return i
        if t in info.eos_token_ids:
            break
        plain.advance(t)
        bounded.advance(t)
    return None


def _ctrldec(decoder: Any, schema: Any, messages: list[dict], policy: str, budget_aware: bool, max_new_tokens: int) -> dict[str, Any]:
    from ..constraints.jsonschema import JSONSchema

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        constraint = JSONSchema(schema, lenient=True, extra_properties=policy)
        constraint.compile(decoder.info)
    result = decoder.generate(messages, constraint=constraint, greedy=True, max_new_tokens=max_new_tokens, budget_aware=budget_aware)
    entry = {"tokens": len(result.token_ids), "finished": result.finish_reason == "eos", "seconds": result.timing["total_s"],
             "text": result.text, "relaxations": len(constraint.relaxations)}
    if budget_aware:
        entry["first_binding"] = _first_binding(constraint, decoder.info, result.token_ids, max_new_tokens)
    return entry


def run(model: Any, tokenizer: Any, folder: str, *, splits: list[str], limit: int = 30, seed: int = 0,
        max_new_tokens: int = 512, configs: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Generate for ``limit`` schemas sampled from ``splits`` with each configuration; see the
    module docstring."""
    from ..errors import CtrldecError
    from ..generate import Decoder

    names = list(configs or DEFAULT_CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {', '.join(unknown)}; the configurations are: {', '.join(CONFIGS)}")
    decoder = Decoder(model, tokenizer)
    peers = _Peers(tokenizer, decoder.width, names)
    skipped = [n for n in names if not peers.available(n)]
    names = [n for n in names if peers.available(n)]
    results = []
    for i, row in enumerate(pick_schemas(folder, splits, limit, seed)):
        schema = json.loads(row["schema"])
        messages = [{"role": "system", "content": PROMPT}, {"role": "user", "content": json.dumps(schema)}]
        prompt = decoder.encode_prompt(messages)
        entry: dict[str, Any] = {"id": row["id"], "split": row["split"], "configs": {}}
        results.append(entry)
        for name in names:
            try:
                if CONFIGS[name] is not None:
                    policy, budget_aware = CONFIGS[name]  # type: ignore[misc]
                    out = _ctrldec(decoder, schema, messages, policy, budget_aware, max_new_tokens)
                else:
                    new, finished, seconds = _hf_generate(model, tokenizer, prompt, peers.processor(name, schema, len(prompt)), max_new_tokens)
                    out = {"tokens": len(new), "finished": finished, "seconds": seconds,
                           "text": tokenizer.decode(new, skip_special_tokens=True)}
            except (CtrldecError, ValueError, RuntimeError) as e:  # a compile error: the schema is not served
                entry["configs"][name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                continue
            if out["finished"]:
                errors = validation_errors(schema, out["text"])
                out["valid"], out["errors"] = not errors, errors[:3]
            out["text"] = out["text"][:2000]
            entry["configs"][name] = out
        if progress:
            cells = [f"{n}: {_cell(entry['configs'][n])}" for n in names]
            print(f"  {i + 1}: {row['id']}  " + "  ".join(cells), flush=True)
    return {"schemas": len(results), "max_new_tokens": max_new_tokens, "splits": splits, "seed": seed,
            "configs": {n: _summary(results, n) for n in names}, "skipped": skipped, "results": results}


def _cell(out: dict[str, Any]) -> str:
    if "error" in out:
        return "error"
    return f"{out['tokens']}t " + ("valid" if out.get("valid") else "INVALID" if out["finished"] else "truncated")


def _summary(results: list[dict], name: str) -> dict[str, Any]:
    outs = [r["configs"][name] for r in results if name in r["configs"]]
    done = [o for o in outs if "error" not in o]
    finished = [o for o in done if o["finished"]]
    seconds = sum(o["seconds"] for o in done)
    summary: dict[str, Any] = {
        "compiled": len(done),
        "finished": len(finished),
        "valid": sum(1 for o in finished if o["valid"]),
        "invalid": sum(1 for o in finished if not o["valid"]),
        "truncated": len(done) - len(finished),
        "mean_tokens": sum(o["tokens"] for o in done) / max(len(done), 1),
        "tokens_per_second": sum(o["tokens"] for o in done) / seconds if seconds else 0.0,
    }
    if any("first_binding" in o for o in done):
        summary["first_binding"] = [r["configs"][name].get("first_binding") for r in results if "error" not in r["configs"].get(name, {"error": 1})]
    return summary


def format_report(report: dict[str, Any]) -> str:
    n = report["schemas"]
    lines = [f"{n} schemas ({', '.join(report['splits'])}, seed {report['seed']}), greedy, max_new_tokens={report['max_new_tokens']}",
             f"{'configuration':22} {'compiled':>8} {'finished':>8} {'valid':>6} {'invalid':>7} {'truncated':>9} {'mean tok':>8} {'tok/s':>6}"]
    for name, s in report["configs"].items():
        lines.append(f"{name:22} {s['compiled']:>8} {s['finished']:>8} {s['valid']:>6} {s['invalid']:>7} {s['truncated']:>9} "
                     f"{s['mean_tokens']:>8.1f} {s['tokens_per_second']:>6.1f}")
    for name, s in report["configs"].items():
        if "first_binding" in s:
            bound = [b for b in s["first_binding"] if b is not None]
            lines.append(f"{name}: the budget bound binds in {len(bound)} of {len(s['first_binding'])} outputs, first at token "
                         f"{', '.join('-' if b is None else str(b) for b in s['first_binding'])}")
    if report["skipped"]:
        lines.append(f"skipped (not installed): {', '.join(report['skipped'])}")
    return "\n".join(lines)
