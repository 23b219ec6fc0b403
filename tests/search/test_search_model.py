"""On the default model: ctrldec's beam search returns transformers' best sequence (unconstrained,
and under a schema against transformers with ctrldec's processor), contrastive search with
alpha = 0 is greedy, and the CLI runs each search."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

import ctrldec

pytestmark = [pytest.mark.model, pytest.mark.slow]

PROMPTS = [
    "What is the capital of France?",
    "Name three colors of the rainbow.",
    "Write one sentence about the sea.",
    "How many legs does a spider have?",
    "Say hello in Spanish.",
    "What is 2 plus 2?",
    "Give me a word that rhymes with cat.",
    "What do bees make?",
    "Describe a cat in five words.",
    "Which planet is closest to the sun?",
]
SCHEMAS = [
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}, "country": {"type": "string", "maxLength": 20}},
     "required": ["city", "country"]},
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"},
                                      "pet": {"enum": ["cat", "dog", "none"]}}, "required": ["name", "age", "pet"]},
    {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 2, "maxItems": 3},
]


@pytest.fixture(scope="module")
def model(default_model):
    return default_model[0]


@pytest.fixture(scope="module")
def decoder(default_model):
    return ctrldec.Decoder(*default_model)


def _hf_best(model, decoder, ids, beams, n, processors=()):
    eos = sorted(decoder.eos)
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), num_beams=beams,
                         max_new_tokens=n, do_sample=False, length_penalty=1.0, early_stopping=False, eos_token_id=eos,
                         pad_token_id=eos[0], logits_processor=list(processors))
    return [t for t in out[0, len(ids):].tolist() if t not in eos]


def test_beam_search_is_transformers_on_ten_prompts(model, decoder):
    for prompt in PROMPTS:
        ids = decoder.encode_prompt(prompt)
        ours = decoder.generate(ids, search=ctrldec.BeamSearch(4, recombine=False), max_new_tokens=16)
        assert ours.token_ids == _hf_best(model, decoder, ids, 4, 16), prompt


def test_beam_search_under_a_schema_is_transformers_with_the_processor(model, decoder):
    for schema in SCHEMAS:
        constraint = ctrldec.JSONSchema(schema)
        ids = decoder.encode_prompt(f"Answer with JSON for this schema: {json.dumps(schema)}")
        ours = decoder.generate(ids, constraint=constraint, search=ctrldec.BeamSearch(3, recombine=False), max_new_tokens=40,
                                fast_forward=False)
        processor = ctrldec.GrammarLogitsProcessor(constraint, decoder.tokenizer, max_new_tokens=40)
        assert ours.token_ids == _hf_best(model, decoder, ids, 3, 40, [processor])
        for h in ours.search.hypotheses:
            jsonschema.validate(json.loads(h.text), schema)


def test_every_strategy_is_valid_under_a_schema(decoder):
    searches = [ctrldec.ContrastiveSearch(0.6, 4), ctrldec.BeamSearch(4), ctrldec.DiverseBeamSearch(6, 3, 0.5)]
    for schema in SCHEMAS:
        ids = decoder.encode_prompt(f"Answer with JSON for this schema: {json.dumps(schema)}")
        for search in searches:
            out = decoder.generate(ids, constraint=ctrldec.JSONSchema(schema), search=search, max_new_tokens=48)
            for h in (out.search.hypotheses if out.search else [out]):
                assert not h.truncated
                jsonschema.validate(json.loads(h.text), schema)


def test_contrastive_search_with_alpha_zero_is_greedy(decoder):
    for prompt, constraint in [(PROMPTS[2], None), ("A person as JSON.", ctrldec.JSONSchema(SCHEMAS[1]))]:
        greedy = decoder.generate(prompt, constraint=constraint, greedy=True, max_new_tokens=40)
        ours = decoder.generate(prompt, constraint=constraint, search=ctrldec.ContrastiveSearch(0.0, 4), max_new_tokens=40)
        assert ours.token_ids == greedy.token_ids


@pytest.mark.parametrize("flags", [["--search", "contrastive", "--alpha", "0.6", "--top-k", "4"],
                                   ["--search", "diverse-beam", "--beams", "4", "--groups", "2", "--diversity", "1.0"]])
def test_cli_search(tmp_path, capsys, flags):
    from ctrldec.cli import main

    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMAS[1]))
    assert main(["generate", "A person as JSON.", "--schema", str(schema), "--max-new-tokens", "40", *flags]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == (4 if "diverse-beam" in flags else 1)
    assert len(set(lines)) == len(lines)
    for line in lines:
        jsonschema.validate(json.loads(line), SCHEMAS[1])
