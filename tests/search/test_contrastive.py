"""Contrastive search: alpha = 0 is greedy, the tree-attention pass scores what separate forward
passes would, every output valid, and clear errors."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from helpers import tiny_llama

import ctrldec
from ctrldec.constraints import tokenizer_info

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6}, "n": {"type": "integer"},
                                           "ok": {"type": "boolean"}}, "required": ["name", "n", "ok"]}


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=3)


@pytest.fixture(scope="module")
def decoder(model, tok):
    return ctrldec.Decoder(model, tok)


@pytest.mark.parametrize("constraint", [None, ctrldec.JSONSchema(SCHEMA), ctrldec.Regex(r"(ab|cd|efg)+!")],
                         ids=["free", "schema", "regex"])
def test_alpha_zero_is_greedy(decoder, constraint):
    for prompt in ([1, 2, 3], [50, 60, 70, 80]):
        greedy = decoder.generate(prompt, constraint=constraint, greedy=True, max_new_tokens=30)
        for k in (1, 4):
            out = decoder.generate(prompt, constraint=constraint, search=ctrldec.ContrastiveSearch(0.0, k), max_new_tokens=30)
            assert out.token_ids == greedy.token_ids
            assert out.finish_reason == greedy.finish_reason


def _reference(model, tok, prompt, constraint, alpha, k, n):
    """Contrastive search the slow way: every candidate through its own full forward pass, the
    context's hidden states recomputed from scratch; forced tokens appended unscored."""
    info = tokenizer_info(tok)
    eos = {tok.eos_token_id}
    matcher = constraint.compile(info).matcher() if constraint is not None else None
    ids: list[int] = []

    def run(tokens):
        with torch.no_grad():
            out = model(torch.tensor([prompt + tokens]), output_hidden_states=True)
        return out.logits[0, -1].float(), out.hidden_states[-1][0].float()

    def forced():
        if matcher is not None:
            for t in matcher.forced_tokens()[: n - len(ids)]:
                matcher.advance(t)
                ids.append(t)

    forced()
    while len(ids) < n and not (matcher is not None and matcher.is_done()):
        logits, context = run(ids)
        if matcher is not None:
            allowed = torch.from_numpy(matcher.allowed_token_ids())
            logits = torch.full_like(logits, float("-inf")).index_copy(0, allowed, logits[allowed])
        probs, cands = torch.topk(torch.softmax(logits, -1), min(k, int(torch.isfinite(logits).sum())))
        scores = []
        for p, c in zip(probs.tolist(), cands.tolist()):
            h = run(ids + [c])[1][-1]
            cos = torch.nn.functional.cosine_similarity(context, h[None], dim=-1).max()
            scores.append((1 - alpha) * p - alpha * float(cos))
        token = cands[int(torch.tensor(scores).argmax())].item()
        if token in eos:
            break
        ids.append(token)
        if matcher is not None:
            matcher.advance(token)
        forced()
    return ids


@pytest.mark.parametrize("constraint", [None, ctrldec.JSONSchema(SCHEMA)], ids=["free", "schema"])
def test_the_tree_pass_is_separate_passes(model, tok, decoder, constraint):
    for prompt in ([1, 2, 3], [11, 12]):
        out = decoder.generate(prompt, constraint=constraint, search=ctrldec.ContrastiveSearch(0.6, 4), max_new_tokens=24,
                               budget_aware=False)
        assert out.token_ids == _reference(model, tok, prompt, constraint, 0.6, 4, 24)


def test_outputs_are_valid_and_batches_independent(decoder):
    search = ctrldec.ContrastiveSearch(0.6, 3)
    prompts = [[1, 2, 3], [20, 21, 22, 23, 24, 25], [7]]
    together = decoder.generate_batch(prompts, constraint=ctrldec.JSONSchema(SCHEMA), search=search, max_new_tokens=40)
    for prompt, out in zip(prompts, together):
        assert not out.truncated
        jsonschema.validate(json.loads(out.text), SCHEMA)
        alone = decoder.generate(prompt, constraint=ctrldec.JSONSchema(SCHEMA), search=search, max_new_tokens=40)
        assert alone.token_ids == out.token_ids
        assert all(lp == lp for lp in out.logprobs)  # forced tokens scored too


def test_streaming_follows_the_chosen_branch(decoder):
    chunks = list(decoder.stream([1, 2, 3], search=ctrldec.ContrastiveSearch(0.6, 4), max_new_tokens=20))
    assert len(chunks) > 1
    assert "".join(chunks) == decoder.last_result.text


def test_custom_generate_takes_penalty_alpha(model, tok, decoder):
    run = ctrldec.custom_generate(None, tokenizer=tok)
    out = model.generate(torch.tensor([[1, 2, 3]]), custom_generate=run, penalty_alpha=0.6, top_k=4, max_new_tokens=12,
                         pad_token_id=0)
    ref = decoder.generate([1, 2, 3], search=ctrldec.ContrastiveSearch(0.6, 4), max_new_tokens=12)
    assert out[0, 3:].tolist()[: len(ref.token_ids)] == ref.token_ids


@pytest.mark.parametrize("args, needle", [((1.5, 4), "alpha must be in"), ((-0.1, 4), "alpha must be in"),
                                          ((0.6, 0), "k must be an integer >= 1")])
def test_bad_configuration_is_refused(args, needle):
    with pytest.raises(ctrldec.CtrldecError, match=needle):
        ctrldec.ContrastiveSearch(*args)


def test_search_with_a_sampler_names_both(decoder):
    with pytest.raises(ctrldec.CtrldecError, match="search=ContrastiveSearch.*sampler=SMC"):
        decoder.generate([1, 2], search=ctrldec.ContrastiveSearch(), sampler=ctrldec.SMC(particles=2), max_new_tokens=3)
