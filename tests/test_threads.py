"""Four threads share one constraint object, one HF logits processor and one model: every output
is valid and equal to what one thread alone produces with the same seed."""

from __future__ import annotations

import json
import sys
import threading

import pytest
import torch
from helpers import tiny_llama

import ctrldec
from ctrldec.constraints.grammar import clear_caches

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 4},
        "n": {"type": "integer", "minimum": -5, "maximum": 5000},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "n"],
    "additionalProperties": False,
}
PROMPTS = [[5, 6], [7, 8, 9], [10], [11, 12, 13, 14]]


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=2)


def _work(model, tok, constraint, processor, k):
    """What thread ``k`` produces: the loop sampling and greedy, and HF generate with the processor."""
    decoder = ctrldec.Decoder(model, tok)
    prompt = PROMPTS[k]
    sampled = [decoder.generate(prompt, constraint=constraint, seed=100 * k + j, max_new_tokens=40).token_ids for j in range(3)]
    greedy = decoder.generate(prompt, constraint=constraint, greedy=True, max_new_tokens=40).token_ids
    ids = torch.tensor([prompt])
    hf = model.generate(ids, attention_mask=torch.ones_like(ids), logits_processor=[processor], max_new_tokens=40,
                        do_sample=False, pad_token_id=0)
    return sampled + [greedy, hf[0, len(prompt):].tolist()]


def _valid_prefix(constraint, tok, ids):
    text = tok.decode([t for t in ids if t != tok.eos_token_id])
    return constraint.is_prefix(text) and (tok.eos_token_id not in ids or constraint.matches(text))


def test_four_threads_share_a_constraint_a_processor_and_a_model(tok, model):
    constraint = ctrldec.JSONSchema(json.dumps(SCHEMA))
    reference = [_work(model, tok, constraint, constraint.logits_processor(tok), k) for k in range(4)]
    for ids in (ids for outputs in reference for ids in outputs):
        assert _valid_prefix(constraint, tok, ids)
    clear_caches()  # the threads start from cold tables: lazily built rows, masks, interned stacks
    shared = ctrldec.JSONSchema(json.dumps(SCHEMA))
    processor = shared.logits_processor(tok)
    results: dict[int, object] = {}

    def target(k):
        try:
            results[k] = _work(model, tok, shared, processor, k)
        except Exception as e:  # surfaced by the assertion below
            results[k] = e

    threads = [threading.Thread(target=target, args=(k,)) for k in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so that cache fills interleave
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert [results[k] for k in range(4)] == reference
