"""Beam search and diverse beam search: transformers' beam search step for step (with and without
ctrldec's processor), groups=1 is beam search, every hypothesis valid, diversity, clear errors."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from helpers import tiny_llama

import ctrldec

REGEX = r"(yes|no|maybe)( and (yes|no))*"
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"enum": ["x", "yy", "zzz"]},
                                           "c": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3}},
          "required": ["a", "b", "c"]}


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=5)


@pytest.fixture(scope="module")
def decoder(model, tok):
    return ctrldec.Decoder(model, tok)


def _hf_beams(model, decoder, prompt, beams, n, processors=()):
    """transformers' hypotheses (EOS and padding dropped) and their scores, best first."""
    eos = sorted(decoder.eos)
    out = model.generate(torch.tensor([prompt]), num_beams=beams, num_return_sequences=beams, max_new_tokens=n,
                         do_sample=False, eos_token_id=eos, pad_token_id=eos[0], output_scores=True,
                         return_dict_in_generate=True, logits_processor=list(processors))
    rows = [[t for t in row[len(prompt):].tolist() if t not in eos] for row in out.sequences]
    return rows, out.sequences_scores.tolist()


@pytest.mark.parametrize("beams", [2, 3, 5])
@pytest.mark.parametrize("prompt", [[1, 2, 3, 4], [7, 8], [30, 31, 32, 33, 34, 35]])
def test_unconstrained_beam_search_is_transformers(model, decoder, prompt, beams):
    out = decoder.generate(prompt, search=ctrldec.BeamSearch(beams, recombine=False), max_new_tokens=12)
    rows, scores = _hf_beams(model, decoder, prompt, beams, 12)
    assert [h.token_ids for h in out.search.hypotheses] == rows
    assert out.search.scores == pytest.approx(scores, abs=1e-4)
    assert out.token_ids == rows[0]


@pytest.mark.parametrize("budget", [False, True])
@pytest.mark.parametrize("constraint", [ctrldec.Regex(REGEX), ctrldec.JSONSchema(SCHEMA)], ids=["regex", "schema"])
def test_constrained_beam_search_is_transformers_with_the_processor(model, tok, decoder, constraint, budget):
    """Without fast-forward every token is a step: exactly transformers' beam search with
    ctrldec's processor (which renormalizes log-probabilities after masking), every hypothesis."""
    n = 24
    for beams in (2, 4):
        out = decoder.generate([1, 2, 3, 4], constraint=constraint, search=ctrldec.BeamSearch(beams, recombine=False),
                               max_new_tokens=n, fast_forward=False, budget_aware=budget)
        proc = ctrldec.GrammarLogitsProcessor(constraint, tok, max_new_tokens=n if budget else None)
        rows, scores = _hf_beams(model, decoder, [1, 2, 3, 4], beams, n, [proc])
        assert [h.token_ids for h in out.search.hypotheses] == rows
        assert out.search.scores == pytest.approx(scores, abs=1e-4)


def test_diverse_beam_search_with_one_group_is_beam_search(decoder):
    for constraint in (None, ctrldec.JSONSchema(SCHEMA)):
        beam = decoder.generate([5, 6, 7], constraint=constraint, search=ctrldec.BeamSearch(4), max_new_tokens=30)
        diverse = decoder.generate([5, 6, 7], constraint=constraint, search=ctrldec.DiverseBeamSearch(4, 1, 0.0),
                                   max_new_tokens=30)
        assert diverse.search.texts == beam.search.texts
        assert diverse.search.scores == beam.search.scores


@pytest.mark.parametrize("search", [ctrldec.BeamSearch(4), ctrldec.DiverseBeamSearch(6, 3, 0.5),
                                    ctrldec.DiverseBeamSearch(6, 2, 2.0, length_penalty=0.0)])
@pytest.mark.parametrize("fast_forward", [True, False])
def test_every_hypothesis_is_valid(decoder, search, fast_forward):
    for prompt in ([1, 2, 3], [9, 10, 11, 12]):
        out = decoder.generate(prompt, constraint=ctrldec.JSONSchema(SCHEMA), search=search, max_new_tokens=40,
                               fast_forward=fast_forward)
        assert len(out.search.hypotheses) == search.beams
        for h in out.search.hypotheses:
            assert not h.truncated
            jsonschema.validate(json.loads(h.text), SCHEMA)
        assert out.search.scores == sorted(out.search.scores, reverse=True)
        assert sorted(set(out.search.groups)) == list(range(search.groups))


def test_recombined_hypotheses_are_different_texts(decoder):
    """The default merges tokenizations of one text; without it beam search keeps such copies."""
    constraint = ctrldec.Regex(REGEX)
    copies = 0
    for prompt in ([1, 2, 3], [9, 10, 11, 12], [60, 61]):
        for search in (ctrldec.BeamSearch(6), ctrldec.DiverseBeamSearch(6, 3, 0.5)):
            out = decoder.generate(prompt, constraint=constraint, search=search, max_new_tokens=20)
            assert len(set(out.search.texts)) == len(out.search.texts) == 6
        plain = decoder.generate(prompt, constraint=constraint, search=ctrldec.BeamSearch(6, recombine=False), max_new_tokens=20)
        copies += len(plain.search.texts) - len(set(plain.search.texts))
    assert copies > 0  # the regex's "and" splits several ways: transformers' beam search keeps the copies


def test_fast_forward_saves_passes_and_scores_forced_tokens(decoder):
    constraint = ctrldec.JSONSchema(SCHEMA)
    fast = decoder.generate([1, 2, 3], constraint=constraint, search=ctrldec.BeamSearch(3), max_new_tokens=40)
    slow = decoder.generate([1, 2, 3], constraint=constraint, search=ctrldec.BeamSearch(3), max_new_tokens=40,
                            fast_forward=False)
    assert fast.timing["forward_passes"] < slow.timing["forward_passes"]
    assert "forced" in fast.kinds
    assert all(lp == lp and lp <= 0 for h in fast.search.hypotheses for lp in h.logprobs)  # no NaN left


@pytest.mark.parametrize("room", [2, 4, 6, 9])
def test_hypotheses_ended_by_forced_text_are_scored(decoder, room):
    """A beam whose forced text runs into the length limit (or completes the constraint) ends in
    the step that committed it; its forced tokens still get their log-probabilities."""
    constraint = ctrldec.Regex(r"(yes|no), and that is the whole answer to the question")
    out = decoder.generate([1, 2, 3], constraint=constraint, search=ctrldec.BeamSearch(2), max_new_tokens=room,
                             budget_aware=False)  # the text cannot finish in time: cut at the limit
    assert "forced" in out.kinds
    for h in out.search.hypotheses:
        assert h.logprobs and all(lp == lp and lp <= 0 for lp in h.logprobs), h.logprobs  # no NaN
        with torch.no_grad():  # and they are the model's: one pass over the prompt and the output
            logits = decoder.model(torch.tensor([[1, 2, 3, *h.token_ids]])).logits[0, 2:-1]
        expected = torch.log_softmax(logits.double(), dim=-1)[torch.arange(len(h.token_ids)), h.token_ids]
        assert torch.allclose(torch.tensor(h.logprobs, dtype=torch.float64), expected, atol=1e-4)


def test_groups_choose_different_tokens(decoder):
    """With a large penalty, no two groups take the same first token (the model has plenty)."""
    out = decoder.generate([4, 5, 6], search=ctrldec.DiverseBeamSearch(3, 3, 1e6), max_new_tokens=6)
    firsts = {g: h.token_ids[0] for h, g in zip(out.search.hypotheses, out.search.groups)}
    assert len(set(firsts.values())) == 3


def test_batch_rows_are_independent(decoder):
    search = ctrldec.DiverseBeamSearch(4, 2, 0.5)
    prompts = [[1, 2, 3], [40, 41, 42, 43, 44]]
    together = decoder.generate_batch(prompts, constraint=ctrldec.Regex(REGEX), search=search, max_new_tokens=16)
    for prompt, out in zip(prompts, together):
        alone = decoder.generate(prompt, constraint=ctrldec.Regex(REGEX), search=search, max_new_tokens=16)
        assert out.search.texts == alone.search.texts


def test_custom_generate_takes_transformers_beam_arguments(model, tok, decoder):
    run = ctrldec.custom_generate(ctrldec.Regex(REGEX), tokenizer=tok)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    out = model.generate(ids, custom_generate=run, max_new_tokens=12, num_beams=4, num_return_sequences=2, pad_token_id=0,
                         attention_mask=torch.ones_like(ids))
    assert out.shape[0] == 4
    for i, prompt in enumerate(ids.tolist()):
        ref = decoder.generate(prompt, constraint=ctrldec.Regex(REGEX), search=ctrldec.BeamSearch(4), max_new_tokens=12)
        for j in range(2):
            assert [t for t in out[2 * i + j, 4:].tolist() if t != 0] == ref.search.hypotheses[j].token_ids
    groups = model.generate(ids, custom_generate=run, max_new_tokens=12, num_beams=6, num_beam_groups=3,
                            diversity_penalty=0.5, num_return_sequences=6, pad_token_id=0, attention_mask=torch.ones_like(ids))
    ref = decoder.generate([1, 2, 3, 4], constraint=ctrldec.Regex(REGEX), search=ctrldec.DiverseBeamSearch(6, 3, 0.5),
                           max_new_tokens=12)
    texts = [tok.decode([t for t in r[4:].tolist() if t != 0]) for r in groups[:6]]
    n = len(ref.search.texts)  # fewer than 6 different texts fit in 12 tokens: the last one repeats
    assert texts[:n] == ref.search.texts and set(texts[n:]) <= {ref.search.texts[-1]}


@pytest.mark.parametrize("make, needle", [
    (lambda: ctrldec.BeamSearch(0), "beams must be an integer >= 1"),
    (lambda: ctrldec.DiverseBeamSearch(6, 4, 0.5), "beams=6 is not divisible by groups=4"),
    (lambda: ctrldec.DiverseBeamSearch(6, 3, 0.0), "diversity must be > 0 with groups=3"),
    (lambda: ctrldec.BeamSearch(4, early_stopping="sometimes"), "early_stopping must be"),
])
def test_bad_configuration_is_refused(make, needle):
    with pytest.raises(ctrldec.CtrldecError, match=needle):
        make()


@pytest.mark.parametrize("extra, needle", [
    ({"sampler": ctrldec.SMC(particles=4)}, "sampler=SMC"),
    ({"controllers": [ctrldec.Mirostat(3.0)]}, "controllers="),
    ({"temperature": 0.7}, "temperature=0.7"),
    ({"lookahead": 4}, "lookahead=4"),
])
def test_search_refuses_what_it_cannot_honour(decoder, extra, needle):
    with pytest.raises(ctrldec.CtrldecError, match=f"search=BeamSearch.*{needle}"):
        decoder.generate([1, 2, 3], search=ctrldec.BeamSearch(2), max_new_tokens=4, **extra)


def test_transformers_beam_sampling_is_refused(model, tok):
    run = ctrldec.custom_generate(None, tokenizer=tok)
    with pytest.raises(ctrldec.CtrldecError, match="beam sampling"):
        model.generate(torch.tensor([[1, 2, 3]]), custom_generate=run, num_beams=2, do_sample=True, max_new_tokens=3)
