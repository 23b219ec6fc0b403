"""``ctrldec bench generate``: generate JSON for real schemas with a model and validate it.

JSONSchemaBench's protocol: system message "You need to generate a JSON object that matches the
schema below.", the schema as the user message, greedy decoding, with ctrldec's loop (what
``ctrldec generate --schema --lenient`` runs). Every finished output (EOS
reached) is validated with ``jsonschema`` (Draft 2020-12, FormatChecker on); outputs cut off by
the token budget are counted separately.
"""

from __future__ import annotations

import glob
import json
import os
import random
import warnings
from typing import Any

__all__ = ["run", "PROMPT", "pick_schemas", "validation_errors"]

PROMPT = "You need to generate a JSON object that matches the schema below."


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
    """Why ``text`` is not a JSON instance of ``schema`` (Draft 2020-12, FormatChecker on); [] if it is."""
    import jsonschema

    try:
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        return [e.message for e in validator.iter_errors(json.loads(text))]
    except (ValueError, jsonschema.exceptions.SchemaError) as e:
        return [f"{type(e).__name__}: {e}"]


def run(model: Any, tokenizer: Any, folder: str, *, splits: list[str], limit: int = 30, seed: int = 0,
        max_new_tokens: int = 512, progress: bool = False) -> dict[str, Any]:
    """Generate for ``limit`` schemas sampled from ``splits``; see the module docstring."""
    from ..constraints.jsonschema import JSONSchema
    from ..errors import CtrldecError
    from ..generate import Decoder

    decoder = Decoder(model, tokenizer)
    results = []
    for i, row in enumerate(pick_schemas(folder, splits, limit, seed)):
        schema = json.loads(row["schema"])
        entry: dict[str, Any] = {"id": row["id"], "split": row["split"]}
        results.append(entry)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                constraint = JSONSchema(schema, lenient=True)
                constraint.compile(decoder.info)
            entry["relaxations"] = constraint.relaxations
        except CtrldecError as e:
            entry["error"] = str(e)
            continue
        messages = [{"role": "system", "content": PROMPT}, {"role": "user", "content": json.dumps(schema)}]
        result = decoder.generate(messages, constraint=constraint, greedy=True, max_new_tokens=max_new_tokens)
        entry["seconds"] = result.timing["total_s"]
        entry["tokens"] = len(result.token_ids)
        entry["finished"] = result.finish_reason == "eos"
        text = result.text
        entry["output"] = text[:2000]
        if entry["finished"]:
            errors = validation_errors(schema, text)
            entry["valid"] = not errors
            entry["errors"] = errors[:3]
        if progress:
            print(f"  {i + 1}: {row['id']} {entry['tokens']} tokens, finished={entry['finished']}, valid={entry.get('valid')}", flush=True)
    done = [r for r in results if "error" not in r]
    finished = [r for r in done if r["finished"]]
    return {
        "schemas": len(results),
        "compiled": len(done),
        "finished": len(finished),
        "valid": sum(1 for r in finished if r["valid"]),
        "invalid": [r for r in finished if not r["valid"]],
        "tokens_per_second": sum(r["tokens"] for r in done) / max(sum(r["seconds"] for r in done), 1e-9),
        "results": results,
    }


def format_report(report: dict[str, Any]) -> str:
    return (
        f"{report['schemas']} schemas: {report['compiled']} compiled, {report['finished']} finished within the "
        f"token budget, {report['valid']} of those valid (jsonschema, FormatChecker), "
        f"{len(report['invalid'])} invalid; {report['tokens_per_second']:.1f} tokens/s"
    )
