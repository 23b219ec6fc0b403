"""``ctrldec bench generate`` on a tiny model: every configuration runs, budget-aware outputs all
finish within the budget and validate, and the report has the columns the README quotes."""

from __future__ import annotations

import copy
import json

import pytest
from helpers import byte_level_tokenizer, tiny_llama

from ctrldec.bench import generation

SCHEMAS = [
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a", "b"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}, "required": ["tags"]},
]


@pytest.fixture(scope="module")
def tiny():
    tok = copy.deepcopy(byte_level_tokenizer())
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    return tiny_llama(len(tok), seed=1), tok


def test_every_configuration_runs_and_budget_aware_outputs_all_finish(tiny, tmp_path):
    model, tok = tiny
    with open(tmp_path / "Toy.jsonl", "w", encoding="utf-8") as f:
        for i, s in enumerate(SCHEMAS):
            f.write(json.dumps({"id": f"s{i}", "split": "Toy", "schema": json.dumps(s)}) + "\n")
    configs = list(generation.CONFIGS)
    report = generation.run(model, tok, str(tmp_path), splits=["Toy"], limit=2, max_new_tokens=16, configs=configs)
    assert report["schemas"] == 2
    for name in ("ctrldec", "ctrldec-allow"):  # budget-aware
        s = report["configs"][name]
        assert s["compiled"] == s["finished"] == s["valid"] == 2, s
        assert len(s["first_binding"]) == 2
    for r in report["results"]:
        for name, out in r["configs"].items():
            assert "error" in out or out["tokens"] <= 16, (name, out)
    text = generation.format_report(report)
    assert "ctrldec-nobudget" in text and "truncated" in text and "binds" in text
    with pytest.raises(ValueError, match="unknown configuration"):
        generation.run(model, tok, str(tmp_path), splits=["Toy"], limit=1, configs=["nope"])


def test_validation_uses_the_schema_s_own_draft():
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer"}
    assert generation.validation_errors(schema, "12345.0")  # draft-04 integers have no fraction part
    assert not generation.validation_errors({"type": "integer"}, "12345.0")  # 2020-12 accepts it
