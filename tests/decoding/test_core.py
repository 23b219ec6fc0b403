"""The decoding core's seams: batched forwards, KV rows, sequences that fork and roll back, and a
drafter written outside the package (what a new drafter needs: ``name``, ``propose``, ``observe``)."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from helpers import tiny_llama

import ctrldec
from ctrldec.controllers import Controls, Mirostat
from ctrldec.decoding import Batch, KVCache, Runner, Sequence, run
from ctrldec.decoding import kv as kv_module
from ctrldec.decoding.kv import crop_cache, fork_cache
from ctrldec.samplers import FullMask, Greedy, Multinomial, SamplingParams
from ctrldec.search import Sampling
from ctrldec.speculative import Draft, ForcedText


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=5)


PROMPTS = [[5], [7, 8, 9, 10, 11, 12], [3, 4], [20, 21, 22, 23]]
CONSTRAINTS = {
    "none": None,
    "json": ctrldec.Grammar.builtin("json_compact"),
    "regex": ctrldec.Regex('\\{"id": [0-9]{1,3}, "tag": "(alpha|beta|gamma)"\\}'),
}


class _CountingForward:
    """Counts the model's forward calls and the rows of each."""

    def __init__(self, model):
        self.model, self.rows = model, []

    def __enter__(self):
        self.original = self.model.forward

        @functools.wraps(self.original)
        def forward(*args, **kwargs):
            self.rows.append(int(kwargs["input_ids"].shape[0]))
            return self.original(*args, **kwargs)

        self.model.forward = forward
        return self

    def __exit__(self, *exc):
        self.model.forward = self.original


@pytest.mark.parametrize("name", sorted(CONSTRAINTS))
def test_generate_batch_equals_single_runs_with_one_forward_per_step(tok, model, name):
    decoder = ctrldec.Decoder(model, tok)
    options = dict(constraint=CONSTRAINTS[name], greedy=True, max_new_tokens=24)
    singles = [decoder.generate(p, **options) for p in PROMPTS]
    with _CountingForward(model) as counted:
        batch = decoder.generate_batch(PROMPTS, **options)
    assert [r.token_ids for r in batch] == [r.token_ids for r in singles]
    assert [r.text for r in batch] == [r.text for r in singles]
    assert [r.finish_reason for r in batch] == [r.finish_reason for r in singles]
    # one pass per step for all rows: as many passes as the longest single run, not their sum
    assert len(counted.rows) == max(r.timing["forward_passes"] for r in singles)
    assert counted.rows[0] == len(PROMPTS)


def test_generate_batch_samples_each_row_with_its_own_seed(tok, model):
    decoder = ctrldec.Decoder(model, tok)
    grammar = CONSTRAINTS["json"]
    batch = decoder.generate_batch(PROMPTS, constraint=grammar, seed=10, max_new_tokens=20)
    singles = [decoder.generate(p, constraint=grammar, seed=10 + i, max_new_tokens=20) for i, p in enumerate(PROMPTS)]
    assert [r.token_ids for r in batch] == [r.token_ids for r in singles]
    assert all(grammar.is_prefix(r.text) for r in batch)


class RepeatLast:
    """A toy drafter: guesses that the last token repeats."""

    name = "repeat_last"

    def __init__(self):
        self.outcomes: list[tuple[int, int]] = []

    def propose(self, seq: Sequence, k: int) -> Draft:
        return Draft([seq.tokens[-1]] * min(k, 3))

    def observe(self, seq: Sequence, draft: Draft, accepted: int) -> None:
        self.outcomes.append((len(draft.tokens), accepted))


def test_a_toy_drafter_plugs_in_and_is_lossless(tok, model):
    prompt = tok("aaaaaaaa", add_special_tokens=False)["input_ids"]
    regex = ctrldec.Regex("a{1,30}b?")
    plain = ctrldec.generate(model, tok, prompt, constraint=regex, greedy=True, max_new_tokens=20, drafters=[])
    drafter = RepeatLast()
    drafted = ctrldec.generate(model, tok, prompt, constraint=regex, greedy=True, max_new_tokens=20,
                               drafters=[ForcedText(), drafter])
    assert drafted.token_ids == plain.token_ids
    assert drafter.outcomes and drafted.timing["drafted"] == sum(n for n, _ in drafter.outcomes)
    assert drafted.timing["draft_accepted"] == sum(a for _, a in drafter.outcomes)
    if drafted.timing["draft_accepted"]:
        assert drafted.timing["forward_passes"] < plain.timing["forward_passes"]


def test_a_custom_sampler_plugs_in(tok, model):
    class Lowest:
        controls = Controls()

        def choose(self, logits, matcher, rng=None, state=()):
            token = next(t for t in range(logits.numel()) if matcher.accepts(t))
            return ctrldec.samplers.Choice(token, checks=token + 1, log_q=0.0)

    regex = ctrldec.Regex("[a-c]{4}")
    out = ctrldec.generate(model, tok, [1], constraint=regex, sampler=Lowest(), max_new_tokens=8)
    assert out.text == "aaaa" and regex.matches(out.text)


def test_clashing_options_are_named(tok, model):
    with pytest.raises(ctrldec.CtrldecError, match="sampler= replaces greedy"):
        ctrldec.generate(model, tok, [1], sampler=Greedy(), greedy=True)
    with pytest.raises(ctrldec.CtrldecError, match="drafters= replaces lookahead"):
        ctrldec.generate(model, tok, [1], drafters=[], lookahead=4)
    with pytest.raises(ctrldec.CtrldecError, match="controllers="):
        ctrldec.generate(model, tok, [1], sampler=Greedy(), controllers=[Mirostat(3.0)])
    with pytest.raises(ctrldec.CtrldecError, match="unknown option.*beams"):
        ctrldec.generate(model, tok, [1], beams=4)


def test_a_prompt_past_the_context_is_refused_before_the_forward(tok, model):
    with _CountingForward(model) as calls, pytest.raises(ctrldec.ModelError, match="context of 512 positions"):
        ctrldec.generate(model, tok, [5] * 600, max_new_tokens=4)
    assert calls.rows == []
    with pytest.raises(ctrldec.ModelError, match="past the model's context of 512"):  # forced text runs past it
        ctrldec.generate(model, tok, [5] * 500, constraint=ctrldec.Regex("a{40}"), max_new_tokens=60)


def test_nan_logits_are_an_error_not_a_sample(tok, model):
    original = model.forward

    @functools.wraps(original)  # keeps the signature the runner reads
    def broken(*args, **kwargs):
        out = original(*args, **kwargs)
        out.logits[..., 7] = float("nan")
        return out

    model.forward = broken
    try:
        with pytest.raises(ctrldec.ModelError, match="NaN logit .*token 7"):
            ctrldec.generate(model, tok, [5, 6], max_new_tokens=4)
    finally:
        model.forward = original
    processor = ctrldec.Regex("[ab]+").logits_processor(tok)
    scores = torch.zeros(1, len(tok))
    scores[0, 3] = float("inf")
    with pytest.raises(ctrldec.ModelError, match="NaN or inf.*token 3"):
        processor(torch.tensor([[1]]), scores)


def _decode(model, tok, sequences, sampler, drafters=()):
    batch = Batch(Runner(model), sequences)
    for _ in run(Sampling(sampler, drafters), batch):
        pass
    return batch


def _sequence(tok, prompt, constraint=None, **kw):
    info = ctrldec.constraints.tokenizer_info(tok)
    eos = frozenset(info.eos_token_ids)
    matcher = constraint.compile(info).matcher() if constraint else ctrldec.Unconstrained(info.vocab_size, eos)
    return Sequence(prompt, matcher, info, eos, **kw)


def test_rollback_restores_every_part_of_a_sequence(tok, model):
    """Roll back to k tokens: ids, matcher, Mirostat state, text, scores and steps equal what the
    same run had after k tokens, and what a run stopped at k has."""
    grammar = ctrldec.Regex('\\{"id": [0-9]{1,3}, "tag": "[a-z]{3,12}", "n": [0-9]{2,4}\\}')
    controls = Controls([Mirostat(2.0)])
    sampler = FullMask(SamplingParams(), controls)

    def decoded(n):
        seq = _sequence(tok, [4, 5], grammar, max_new_tokens=n, rng=torch.Generator().manual_seed(3),
                        controls=controls, record=True)
        _decode(model, tok, [seq], sampler, [ForcedText()])
        return seq

    full = decoded(20)
    assert full.finish_reason == "length" and {"forced", "sampled"} <= set(full.kinds)
    for k in (1, 5, 9, 14):
        short, back = decoded(k), decoded(20)
        back.rollback(k)
        assert back.ids == short.ids == full.ids[:k] and back.matcher.tokens() == full.ids[:k]
        assert back.kinds == short.kinds and back.checks == short.checks
        assert back.text == short.text and back.data == short.data
        assert back.state == full._states[k] and back.steps == full.steps[:k] and back.logprobs == full.logprobs[:k]
        assert not back.finished and back.fed <= len(back.prompt) + k - 1


def test_forked_sequences_and_kv_rows_continue_alike(tok, model):
    """Fork a half-decoded sequence and duplicate its KV row: both continue as the original would."""
    sampler = Multinomial(SamplingParams(temperature=0.9))
    reference = _sequence(tok, [9, 10, 11], max_new_tokens=16, rng=torch.Generator().manual_seed(1))
    _decode(model, tok, [reference], sampler)
    seq = _sequence(tok, [9, 10, 11], max_new_tokens=16, rng=torch.Generator().manual_seed(1))
    batch = Batch(Runner(model), [seq])
    strategy = Sampling(sampler)
    for _ in range(6):
        strategy.step(batch)
    twin = seq.fork()
    batch.kv.select_rows([0, 0])
    twin.row = 1
    batch.sequences.append(twin)
    batch.live.append(twin)
    for _ in run(strategy, batch):
        pass
    assert seq.ids == twin.ids == reference.ids
    assert twin.matcher is not seq.matcher and twin.matcher.tokens() == seq.matcher.tokens()


def test_kv_holes_and_padding_give_the_logits_of_a_plain_run(model):
    """Row 0 drops a rejected draft (holes) and rows of different lengths share a pass (padding):
    the next logits equal those of each row's plain single-row run."""
    runner = Runner(model)
    kv = KVCache(2)
    runner.forward(kv, [[1, 2, 3], [4, 5, 6, 7, 8]], [1, 1])
    runner.forward(kv, [[9, 10, 11], [12]], [3, 1])
    kv.crop(0, 4)  # keep 1, 2, 3, 9: 10 and 11 were a rejected draft
    out = runner.forward(kv, [[13], [14, 15]], [1, 2])
    for row, tokens, rows in ((0, [1, 2, 3, 9, 13], 1), (1, [4, 5, 6, 7, 8, 12, 14, 15], 2)):
        alone = KVCache(1)
        expected = runner.forward(alone, [tokens], [rows]).logits[0]
        torch.testing.assert_close(out.logits[row], expected, atol=1e-4, rtol=1e-4)
    assert kv.lengths.tolist() == [5, 8]


def test_kv_select_rows_keeps_reorders_and_duplicates(model):
    runner = Runner(model)
    kv = KVCache(2)
    runner.forward(kv, [[1, 2], [3, 4, 5]], [1, 1])
    other = kv.fork()
    kv.select_rows([1, 1, 0])
    out = runner.forward(kv, [[6], [6], [6]], [1, 1, 1])
    torch.testing.assert_close(out.logits[0], out.logits[1])
    alone = runner.forward(other, [[6], [6]], [1, 1])
    torch.testing.assert_close(out.logits[0], alone.logits[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.logits[2], alone.logits[0], atol=1e-4, rtol=1e-4)
    assert other.rows == 2 and kv.rows == 3


@pytest.mark.parametrize("indices", [[2, 2, 0, 0], [3, 1, 1, 1], [0, 1, 2, 3], [3, 2, 1, 0], [1, 1], [2]])
def test_kv_place_rows_is_select_rows_in_another_order(model, indices):
    """Rows of different lengths (one with a hole): after ``place_rows`` the row ``slots[i]`` gives
    the logits of row ``indices[i]`` before; kept rows do not move when the count is unchanged."""
    runner = Runner(model)
    kv = KVCache(4)
    runner.forward(kv, [[1, 2], [3, 4, 5], [6], [7, 8, 9, 10]], [1] * 4)
    runner.forward(kv, [[11, 12], [13], [14], [15]], [1] * 4)
    kv.crop(0, 3)  # row 0: 1, 2, 11 (12 was a rejected draft)
    before = kv.fork()
    slots = kv.place_rows(indices)
    assert sorted(slots.tolist()) == list(range(len(indices)))
    if len(indices) == 4:
        assert all(slots[indices.index(r)] == r for r in set(indices))
    out = runner.forward(kv, [[16]] * len(indices), [1] * len(indices))
    expected = runner.forward(before, [[16]] * 4, [1] * 4).logits
    for i, row in enumerate(indices):
        torch.testing.assert_close(out.logits[slots[i]], expected[row], atol=1e-4, rtol=1e-4)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["pass", "beam", "beam", "crop", "trim", "select"]), st.lists(st.integers(0, 3), min_size=4, max_size=4)),
                min_size=8, max_size=20))
def test_kv_place_rows_copies_only_what_differs(model, ops):
    """``place_rows`` copies a row only from the first column where the two rows' keys and values
    may differ (``KVCache.shared``): through passes, beam steps, crops and duplicating selections the
    cache holds, bit for bit, what full-row copies give."""
    runner = Runner(model)
    kv, full = KVCache(1), KVCache(1)
    for cache in (kv, full):
        runner.forward(cache, [[1, 2, 3]], [1])
        cache.select_rows([0, 0, 0, 0])
    for step, (op, args) in enumerate(ops):
        for cache in (kv, full):
            if op == "pass":
                runner.forward(cache, [[20 + 4 * step + a] * (1 + a % 2) for a in args], [1] * 4)
            elif op == "beam":
                cache.place_rows(args)
            elif op == "crop":
                cache.crop(args[0], max(1, cache.length(args[0]) - args[1]))
            elif op == "trim":  # every row drops its tail: trailing columns leave the cache
                for row in range(cache.rows):
                    cache.crop(row, max(1, cache.length(row) - 1 - args[0] % 2))
            else:
                cache.select_rows(sorted(args))
        full.shared = kv_module._unshared(full.rows)  # the reference always copies whole rows
        assert (kv.positions == full.positions).all() and (kv.shared == kv.shared.T).all()
        for a, b in zip(kv.cache.layers, full.cache.layers):
            assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_cache_fork_and_crop(tok, model):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    other = fork_cache(cache)
    crop_cache(other, 2)
    assert other.get_seq_length() == 2 and cache.get_seq_length() == 4
