"""Speculative decoding on the default model: greedy outputs token for token the same as without
drafts, for every drafter, on free text and under a JSON Schema; drafts are used."""

from __future__ import annotations

import json

import pytest

import ctrldec

pytestmark = pytest.mark.model

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
                                           "age": {"type": "integer"}}, "required": ["name", "tags", "age"]}
DRAFTERS = [["prompt_lookup"], ["recycling"], ["early_exit"], ["prompt_lookup", "recycling", "early_exit"]]


@pytest.fixture(scope="module")
def decoder(default_model):
    model, tokenizer = default_model
    return ctrldec.Decoder(model, tokenizer)


@pytest.mark.parametrize("constrained", [False, True], ids=["free", "schema"])
def test_every_drafter_is_lossless_for_greedy(decoder, constrained):
    constraint = ctrldec.JSONSchema(SCHEMA) if constrained else None
    prompt = ("Describe a person as JSON matching this schema: " + json.dumps(SCHEMA)) if constrained else \
        "List the planets of the solar system, one per line, with one fact about each."
    options = dict(constraint=constraint, greedy=True, max_new_tokens=40, budget_aware=False)
    plain = decoder.generate(prompt, lookahead=0, **options)
    drafted = 0
    for names in DRAFTERS:
        spec = ctrldec.Speculative(["forced", *names], early_exit_layers=8, adaptive=False)  # the sizer is timed: see test_adaptive
        out = decoder.generate(prompt, speculative=spec, **options)
        assert out.token_ids == plain.token_ids, names
        drafted += out.timing.get("drafted", 0)
    assert drafted > 0
