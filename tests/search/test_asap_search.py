"""ASAp in ctrldec's loop: the exact sampling distribution, convergence to P(w | L), rounds, errors.

The distributions are checked on the fidelity bench's tabled tiny model (``bench/tabled.py``): the
real loop runs against a table of the model's distributions, and ``asap_distribution`` computes
ASAp's exact distribution from the trie.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_llama
from scipy import stats

import ctrldec
from ctrldec.bench import fidelity
from ctrldec.errors import CtrldecError

CASE = fidelity.Case("tiny", "word: carts\nword: cats\nword: ", fidelity._regex("(cat|car|cart|dog)s?"), "words")
BIASED = fidelity.Case("tiny-ab", "x", fidelity._regex("(a|bbbb|cc)"), "alternatives of different lengths")


@pytest.fixture(scope="module")
def prepared(tok):
    return fidelity.prepare(tiny_llama(len(tok), seed=1), tok, CASE)


@pytest.fixture(scope="module")
def biased(tok):
    return fidelity.prepare(tiny_llama(len(tok), seed=5), tok, BIASED)


def _counts(prep, config, n, seed):
    index = prep.exact.index()
    counts = np.zeros(len(index))
    for start in range(0, n, 100):
        for r in prep.decoder.generate_batch([prep.prompt] * min(100, n - start), seed=seed + start, sampler=config,
                                             **prep.generate_options()):
            counts[index[tuple(r.token_ids)]] += 1
    return counts


def test_samples_follow_the_exact_formula_from_the_trie(prepared):
    """A trie learned from 5 samples, then frozen (learn=False): 3,000 draws through the loop against
    asap_distribution's product of reweighted, renormalised probabilities. Chi-square at the 0.1%
    level (fixed seeds: a 0.1% false-failure rate over seeds)."""
    config = ctrldec.ASAp()
    _counts(prepared, config, 5, seed=0)
    frozen = ctrldec.ASAp(config.oracle, learn=False)
    q = fidelity.asap_distribution(prepared, frozen.oracle)
    assert q.sum() == pytest.approx(1.0)
    assert fidelity.divergences(q, prepared.exact.q_mask)["tv"] > 0.05  # it is not masking's any more
    counts = _counts(prepared, frozen, 3000, seed=1000)
    assert frozen.oracle.samples == 5
    keep = q * 3000 >= 5
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(q[keep], q[~keep].sum()) * 3000
    assert stats.chisquare(observed[expected > 0], expected[expected > 0]).pvalue > 1e-3


def test_kl_to_p_star_decreases_with_samples_and_ends_far_below_masking(biased):
    mask_kl = fidelity.divergences(biased.exact.q_mask, biased.exact.p_star)["kl"]
    curve = fidelity.asap_curve(biased, [10, 50, 200], batch=1, seed=0)
    kls = [r["kl"] for r in curve]
    assert mask_kl > 1.0
    assert kls[0] >= kls[1] >= kls[2] and kls[2] <= mask_kl / 10
    batched = fidelity.asap_curve(biased, [10, 50, 200], batch=8, seed=0)
    assert batched[-1]["kl"] <= mask_kl / 10


def test_rounds_update_the_trie_after_their_last_sample(biased):
    config = ctrldec.ASAp()
    results = biased.decoder.generate_batch([biased.prompt] * 8, seed=0, sampler=config, **biased.generate_options())
    assert all(r.finish_reason == "eos" and not r.truncated for r in results)
    assert config.oracle.samples == 8 and 1 < len(config.oracle)
    assert config.oracle.efg(0) < 1.0


def test_oracle_learns_a_bound_on_p_of_l_that_tightens_to_the_exact_value(biased):
    config = ctrldec.ASAp()
    _counts(biased, config, 300, seed=0)
    assert config.oracle.log_p_language_bound >= biased.exact.log_p_language - 1e-6
    assert config.oracle.log_p_language_bound == pytest.approx(biased.exact.log_p_language, abs=0.05)


def test_fast_forward_and_prompt_lookup_keep_outputs_valid(tok):
    model = tiny_llama(len(tok), seed=3)
    constraint = ctrldec.Regex(r'\{"name": "(ab|abc|b)"\}')
    config = ctrldec.ASAp()
    for seed in range(6):
        out = ctrldec.generate(model, tok, [5, 6, 7], constraint=constraint, sampler=config, seed=seed, max_new_tokens=24)
        assert constraint.matches(out.text) and out.finish_reason == "eos"
        assert "forced" in out.kinds
    assert config.oracle.samples == 6


def test_asap_without_a_constraint_is_a_clear_error(tok):
    with pytest.raises(CtrldecError, match="ASAp .* needs a constraint"):
        ctrldec.generate(tiny_llama(len(tok)), tok, [1, 2], sampler=ctrldec.ASAp(), max_new_tokens=3)


def test_greedy_asap_is_refused_as_meaningless(tok):
    with pytest.raises(CtrldecError, match="greedy decoding is meaningless"):
        ctrldec.generate(tiny_llama(len(tok)), tok, [1, 2], constraint=ctrldec.Regex("a|b"), sampler=ctrldec.ASAp(),
                         greedy=True)


def test_one_oracle_refuses_another_prompt_or_constraint(tok):
    model = tiny_llama(len(tok))
    config = ctrldec.ASAp()
    ctrldec.generate(model, tok, [1, 2], constraint=ctrldec.Regex("a|b"), sampler=config, seed=0)
    with pytest.raises(CtrldecError, match="learned a prompt"):
        ctrldec.generate(model, tok, [1, 3], constraint=ctrldec.Regex("a|b"), sampler=config, seed=0)
    with pytest.raises(CtrldecError, match=r"learned constraint Regex\('a\|b'\)"):
        ctrldec.generate(model, tok, [1, 2], constraint=ctrldec.Regex("a|c"), sampler=config, seed=0)


def test_saved_oracle_continues_in_another_process_the_same_way(tok, tmp_path):
    model = tiny_llama(len(tok), seed=5)
    constraint = ctrldec.Regex("(a|bbbb|cc)")
    config = ctrldec.ASAp()
    for seed in range(20):
        ctrldec.generate(model, tok, [1, 2, 3], constraint=constraint, sampler=config, seed=seed, max_new_tokens=8)
    config.oracle.save(tmp_path / "o.npz")
    loaded = ctrldec.ASAp(ctrldec.ASApOracle.load(tmp_path / "o.npz"))
    a = [ctrldec.generate(model, tok, [1, 2, 3], constraint=constraint, sampler=c, seed=99, max_new_tokens=8).text
         for c in (config, loaded)]
    assert a[0] == a[1] and loaded.oracle.efg(0) == config.oracle.efg(0)


def test_asap_takes_only_an_oracle():
    with pytest.raises(CtrldecError, match="takes an ASApOracle"):
        ctrldec.ASAp("file.npz")


def test_a_round_of_one_prompt_feeds_it_once_and_equals_separate_calls(tok):
    """generate_batch([prompt] * 6): the prompt and the forced text go through the model in one
    row, copied to the others; each row's output is still the one generate(seed + i) draws."""
    model = tiny_llama(len(tok), seed=3)
    constraint = ctrldec.Regex(r'\{"name": "(ab|abc|b)"\}')
    decoder = ctrldec.Decoder(model, tok)
    learned = ctrldec.ASAp()
    for seed in range(4):
        decoder.generate([5, 6, 7], constraint=constraint, sampler=learned, seed=seed, max_new_tokens=24)
    frozen = ctrldec.ASAp(learned.oracle, learn=False)
    fed: list[int] = []
    runner_forward = decoder.runner.forward
    decoder.runner.forward = lambda kv, feeds, keep, **kw: (fed.append(sum(map(len, feeds))), runner_forward(kv, feeds, keep, **kw))[1]
    batch = decoder.generate_batch([[5, 6, 7]] * 6, constraint=constraint, sampler=frozen, seed=10, max_new_tokens=24)
    first_feed = fed[0]
    decoder.runner.forward = runner_forward
    alone = [decoder.generate([5, 6, 7], constraint=constraint, sampler=frozen, seed=10 + i, max_new_tokens=24)
             for i in range(6)]
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone]
    assert first_feed == 3 + alone[0].kinds.index("sampled")  # one row: the prompt and the forced text before a draw
