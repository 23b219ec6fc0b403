"""Mirostat and entropy temperature: hand-computed cases, properties, HF-processor vs loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ctrldec
from ctrldec.controllers import Mirostat, MirostatState, EntropyTemperature, mirostat_k, zipf_exponent
from helpers import tiny_llama

NEG = float("-inf")


def _logits(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float32))


def _kept(scores):
    return torch.isfinite(scores).nonzero().flatten().tolist()


# -- hand-computed cases --------------------------------------------------------------------------


@pytest.mark.parametrize(("mu", "kept"), [(0.5, [0]), (1.0, [0]), (2.0, [0, 1]), (3.0, [0, 1, 2]), (5.0, [0, 1, 2, 3])])
def test_v2_keeps_tokens_whose_surprise_is_at_most_mu(mu, kept):
    # surprises: -log2 [0.5, 0.3, 0.15, 0.05] = 1, 1.737, 2.737, 4.322 bits
    scores, _ = Mirostat(3.0, version=2).warp(_logits([0.5, 0.3, 0.15, 0.05]), MirostatState(mu))
    assert _kept(scores) == kept


def test_v2_always_keeps_the_most_likely_token():
    scores, _ = Mirostat(1.0).warp(_logits([0.3, 0.4, 0.3]), MirostatState(0.1))
    assert _kept(scores) == [1]


def test_zipf_estimate_by_hand():
    # t = log(2), log(3/2); b = log(0.6/0.3), log(0.3/0.1)
    t = [math.log(2), math.log(1.5)]
    b = [math.log(2), math.log(3)]
    expected = (t[0] * b[0] + t[1] * b[1]) / (t[0] ** 2 + t[1] ** 2)
    assert zipf_exponent([0.1, 0.6, 0.3], m=100) == pytest.approx(expected)  # order does not matter
    assert zipf_exponent([0.6, 0.3, 0.1, 0.05], m=3) == pytest.approx(expected)  # only the top m
    assert zipf_exponent([i**-1.7 for i in range(1, 500)], m=100) == pytest.approx(1.7)


def test_v1_k_by_hand():
    # s = 2, e = 1: k = (1 * 2^3 / (1 - 1/100))^(1/2) = 2.843 -> 3
    assert mirostat_k(2.0, 3.0, 100) == 3
    # e -> 0 takes the limit 1/ln n: k = (2^4 / ln 1000)^(1/1) = 2.316 -> 2
    assert mirostat_k(1.0, 4.0, 1000) == 2
    assert mirostat_k(1.5, 500.0, 1000) == 1000  # huge mu: everything, no overflow
    assert mirostat_k(1.5, -20.0, 1000) == 1
    assert mirostat_k(-0.5, 2.0, 10) == 10


def test_v1_keeps_the_top_k():
    probs = np.array([i**-2.0 for i in range(1, 101)])
    probs /= probs.sum()
    scores, step = Mirostat(3.0, version=1).warp(_logits(probs.tolist()), MirostatState(3.0))
    k = mirostat_k(2.0, 3.0, 100)
    assert _kept(scores) == list(range(k)) and step.kept == k


@pytest.mark.parametrize(("surprise", "expected_mu"), [
    # original: S = -log2 0.25 = 2 ; mu = 2 - 1 * (2 - 3) = 3
    ("original", 3.0),
    # truncated: mu = 2 keeps {0.5, 0.25} -> 2/3, 1/3; S = log2 3 = 1.585 ; mu = 2 - (1.585 - 3)
    ("truncated", 2.0 - (math.log2(3) - 3.0)),
])
def test_mu_update_under_both_surprise_conventions(surprise, expected_mu):
    m = Mirostat(3.0, eta=1.0, surprise=surprise)
    _, step = m.warp(_logits([0.5, 0.25, 0.125, 0.125]), MirostatState(2.0))
    state, stats = m.update(MirostatState(2.0), step, token=1)
    assert state.mu == pytest.approx(expected_mu)
    assert stats.surprise == pytest.approx(2.0) and stats.prob == pytest.approx(0.25)  # stats: original
    assert stats.entropy == pytest.approx(1.75) and stats.mu == 2.0 and stats.kept == 2


def test_mu_starts_at_twice_tau_and_forced_steps_leave_it():
    m = Mirostat(2.5, eta=1.0)
    state = m.init()
    assert state.mu == 5.0
    _, step = m.warp(torch.tensor([NEG, 3.0, NEG]), state)
    after, stats = m.update(state, step, token=1)
    assert after == state and stats.forced and stats.surprise == 0.0


def test_entropy_temperature_formula():
    et = EntropyTemperature(0.2, 1.2, exponent=2.0)
    probs = [0.7, 0.2, 0.1, 0.0]
    h = -sum(p * math.log(p) for p in probs if p)
    expected = 0.2 + 1.0 * (h / math.log(3)) ** 2  # N = 3 allowed tokens
    scores = _logits(probs)
    assert et.temperature(scores) == pytest.approx(expected, rel=1e-5)
    warped, t = et.warp(scores, None)
    assert torch.allclose(warped[:3], scores[:3] / expected)
    assert et.temperature(torch.tensor([NEG, 1.0])) == 1.0  # one allowed token: untouched


@pytest.mark.parametrize("bad", [
    lambda: Mirostat(0), lambda: Mirostat(-1.0), lambda: Mirostat(3, eta=0), lambda: Mirostat(3, eta=-0.1),
    lambda: Mirostat(3, version=3), lambda: Mirostat(3, surprise="mine"), lambda: Mirostat(float("nan")),
    lambda: EntropyTemperature(1.5, 0.5), lambda: EntropyTemperature(0, 1), lambda: EntropyTemperature(0.5, 1, exponent=0),
])
def test_bad_parameters_are_clear_value_errors(bad):
    with pytest.raises(ValueError, match="must be"):
        bad()


# -- properties ----------------------------------------------------------------------------------

logit_vectors = st.lists(st.floats(-20, 20), min_size=2, max_size=60).map(lambda xs: torch.tensor(xs))


@settings(max_examples=200, deadline=None)
@given(logit_vectors, st.floats(0.01, 12), st.sampled_from([1, 2]), st.integers(0, 2**16))
def test_truncation_keeps_the_argmax_and_only_allowed_tokens(scores, mu, version, mask_seed):
    mask = torch.from_numpy(np.random.default_rng(mask_seed).random(scores.numel()) < 0.3)
    mask[int(scores.argmax())] = False  # at least one allowed
    scores = scores.masked_fill(mask, NEG)
    out, step = Mirostat(3.0, version=version).warp(scores, MirostatState(mu))
    kept = torch.isfinite(out)
    assert kept[int(scores.argmax())] and not (kept & mask).any()
    assert torch.equal(out[kept], scores[kept]) and step.kept == int(kept.sum())
    if version == 2:
        logp = torch.log_softmax(scores.double(), -1)
        surprise = -logp / math.log(2)
        top = torch.zeros_like(kept)
        top[int(logp.argmax())] = True  # the first most likely token, even when mu is below its surprise
        assert bool(((surprise <= mu + 1e-6) | top).eq(kept).all())


def test_mirostat_tracks_tau_on_a_zipf_distribution():
    """A stationary Zipf(1.2) source over 5,000 tokens: after 400 steps the mean surprise is within
    0.1 bits of tau (mean error = (mu_0 - mu_T) / (eta T) when mu stays bounded)."""
    probs = np.array([i**-1.2 for i in range(1, 5001)])
    scores = torch.log(torch.from_numpy(probs / probs.sum())).float()
    gen = torch.Generator().manual_seed(0)
    for version in (1, 2):
        for tau in (3.0, 5.0):
            m = Mirostat(tau, eta=0.5, version=version)
            state, surprises = m.init(), []
            for _ in range(400):
                warped, step = m.warp(scores, state)
                token = int(torch.multinomial(torch.softmax(warped, -1), 1, generator=gen))
                state, stats = m.update(state, step, token)
                surprises.append(stats.surprise)
            assert abs(np.mean(surprises) - tau) < 0.1, (version, tau, np.mean(surprises))


# -- as a logits processor and inside the loop ---------------------------------------------------


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=3)


def test_processor_state_is_keyed_by_prefix():
    """Rows reordered (as beam search does) get the same truncation: mu follows the prefix."""
    m = Mirostat(1.0, eta=1.0)
    scores = torch.log_softmax(torch.randn(2, 50, generator=torch.Generator().manual_seed(1)), -1)
    m(torch.tensor([[1, 2], [1, 3]]), scores)
    a = m(torch.tensor([[1, 2, 7], [1, 3, 9]]), scores)
    m2 = Mirostat(1.0, eta=1.0)
    m2(torch.tensor([[1, 3], [1, 2]]), scores.flip(0))
    b = m2(torch.tensor([[1, 3, 9], [1, 2, 7]]), scores.flip(0))
    assert torch.equal(a, b.flip(0))
    # the two rows had different observed tokens, so different mu: compare with the loop's update
    state = MirostatState(2.0)
    _, step = m.warp(scores[0], state)
    state, _ = m.update(state, step, 7)
    assert torch.equal(a[0], m.warp(scores[0], state)[0])


@pytest.mark.parametrize("version", [1, 2])
def test_same_seed_same_output_as_hf_processor(tok, model, version):
    prompt = tok("The quick brown", add_special_tokens=False)["input_ids"]
    seen: list[tuple[int, float]] = []
    proc = Mirostat(2.0, eta=0.5, version=version, callback=lambda row, s: seen.append((row, s.mu)))
    torch.manual_seed(11)
    hf = model.generate(torch.tensor([prompt]), logits_processor=[proc], do_sample=True, top_k=0, top_p=1.0,
                        temperature=1.0, max_new_tokens=25, pad_token_id=0)
    proc.flush(hf)
    ours = ctrldec.generate(model, tok, prompt, controllers=[Mirostat(2.0, eta=0.5, version=version)], seed=11,
                            max_new_tokens=25, lookahead=0)
    hf_new = [t for t in hf[0, len(prompt):].tolist() if t != tok.eos_token_id]
    assert ours.token_ids == hf_new and len(ours.token_ids) >= 5
    assert [mu for _, mu in seen][: len(ours.steps)] == pytest.approx([s.mu for s in ours.steps])


def test_same_seed_same_output_under_a_grammar(tok, model):
    grammar = ctrldec.Grammar.builtin("json_compact")
    prompt = tok("{", add_special_tokens=False)["input_ids"]
    torch.manual_seed(4)
    hf = model.generate(torch.tensor([prompt]),
                        logits_processor=[grammar.logits_processor(tok), EntropyTemperature(0.5, 1.5), Mirostat(3.0)],
                        do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=30, pad_token_id=0)
    ours = ctrldec.generate(model, tok, prompt, constraint=grammar, seed=4, max_new_tokens=30, lookahead=0,
                            fast_forward=False, controllers=[EntropyTemperature(0.5, 1.5), Mirostat(3.0)])
    hf_new = [t for t in hf[0, len(prompt):].tolist() if t != tok.eos_token_id]
    assert ours.token_ids == hf_new
    assert grammar.is_prefix(ours.text)


def test_loop_diagnostics_align_with_tokens(tok, model):
    regex = ctrldec.Regex('\\{"n": [0-9]{1,3}, "word": "[a-z]{1,8}"\\}')
    out = ctrldec.generate(model, tok, [1, 2], constraint=regex, seed=0, max_new_tokens=30,
                           controllers=[Mirostat(2.0)])
    assert len(out.steps) == len(out.token_ids)
    for kind, s in zip(out.kinds, out.steps):
        assert s.forced == (kind == "forced") or (s.forced and kind == "sampled")
        assert s.mu is not None and 0.0 <= s.prob <= 1.0 and s.surprise >= 0 and s.entropy >= 0
    # forced tokens leave mu: between two sampled steps only sampled surprises move it
    plain = ctrldec.generate(model, tok, [1, 2], constraint=regex, seed=0, max_new_tokens=30, diagnostics=True)
    assert len(plain.steps) == len(plain.token_ids) and all(s.mu is None for s in plain.steps)


def test_loop_rejects_a_non_controller(tok, model):
    with pytest.raises(ctrldec.CtrldecError, match="not a controller"):
        ctrldec.generate(model, tok, [1], controllers=[object()])


@pytest.mark.model
def test_default_model_same_seed_same_output_as_hf_processor(default_model):
    model, tok = default_model
    decoder = ctrldec.Decoder(model, tok)
    prompt = decoder.encode_prompt("Write one sentence about the sea.")
    torch.manual_seed(7)
    hf = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                        logits_processor=[Mirostat(3.0)], do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                        max_new_tokens=30, pad_token_id=tok.eos_token_id)
    ours = decoder.generate(prompt, controllers=[Mirostat(3.0)], seed=7, max_new_tokens=30, lookahead=0)
    assert ours.token_ids == [t for t in hf[0, len(prompt):].tolist() if t != tok.eos_token_id]


def test_one_processor_serves_interleaved_generations():
    """Two generations (different prompt lengths, as from two threads) call one Mirostat
    processor in turn: each row's mu follows its own prefix, as with one processor each."""
    gen = torch.Generator().manual_seed(5)
    scores = [torch.log_softmax(torch.randn(1, 40, generator=gen), -1) for _ in range(12)]
    shared, alone = Mirostat(2.0, eta=0.8), {"a": Mirostat(2.0, eta=0.8), "b": Mirostat(2.0, eta=0.8)}
    rows = {"a": [1, 2, 3], "b": [4, 5, 6, 7, 8, 9]}
    for step in range(6):
        for name in ("a", "b"):
            ids = torch.tensor([rows[name]])
            s = scores[2 * step + (name == "b")]
            assert torch.equal(shared(ids, s), alone[name](ids, s)), (step, name)
            rows[name].append(int(s.argmax()))


def test_truncation_keeps_the_scores_own_argmax_where_log_probabilities_tie():
    # -1.2e-38 and 0 are one log-probability in float64; the argmax (what greedy picks) is token 1
    scores = torch.tensor([-1.1755e-38, 0.0])
    out, _ = Mirostat(3.0, version=2).warp(scores, MirostatState(0.5))
    assert torch.isfinite(out[1])
