"""Entropy-adaptive decoding on tiny random models: the switching rule, both KV caches kept in step
(a small model that is the full model itself must change nothing, whatever the switches), the
per-token record, threshold 0 as the full model alone, composition with drafts, batches and SMC,
and bad input."""

from __future__ import annotations

import math

import pytest
import torch

import ctrldec
from ctrldec.ead.switch import FULL, SMALL, _State
from helpers import sentencepiece_tokenizer, tiny_llama

PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick"
FLIP = 5.83  # the peaked tiny model's entropies lie around this: a one-pass window flips often


@pytest.fixture(scope="module")
def model(peaked_model):
    return peaked_model


def ids(tok, text=PROMPT):
    return tok(text)["input_ids"]


def flip(small):
    return ctrldec.EntropySwitch(small, window=1, threshold=FLIP, min_dwell=1)


def test_rule_switches_up_on_the_window_mean_and_back_after_the_dwell():
    switch = ctrldec.EntropySwitch(window=2, threshold=2.0, min_dwell=3)
    state = _State(SMALL)
    state = switch.after(state, 1.0)  # mean 1.0
    assert state.model == SMALL
    state = switch.after(state, 3.5)  # mean 2.25: the full model writes this very step
    assert (state.model, state.dwell, state.switches) == (FULL, 1, 1)
    state = switch.after(state, 0.1)  # mean 1.8 < 2, but it has written two passes of three
    assert state.model == FULL
    state = switch.after(state, 0.1)  # mean 0.1, three passes written: back to the small model
    assert (state.model, state.switches) == (SMALL, 2)
    assert state.window == (0.1, 0.1)


@pytest.mark.parametrize("constrained", [False, True], ids=["free", "regex"])
def test_threshold_zero_is_the_full_model_alone(tok, model, constrained):
    constraint = ctrldec.Regex(r"[a-z ]{0,40}\.") if constrained else None
    plain = ctrldec.generate(model, tok, ids(tok), constraint=constraint, greedy=True, max_new_tokens=30)
    out = ctrldec.generate(model, tok, ids(tok), constraint=constraint, greedy=True, max_new_tokens=30,
                           ead=ctrldec.EntropySwitch(layers=1, threshold=0.0))
    assert out.token_ids == plain.token_ids
    sampled = [m for m, k in zip(out.models, out.kinds) if k == "sampled"]
    assert sampled and set(sampled) == {FULL}


SPECULATIVE = [None, ["forced", "prompt_lookup"], ["forced", "recycling"], ["forced", "early_exit"]]


@pytest.mark.parametrize("drafters", SPECULATIVE, ids=lambda d: "+".join(d) if d else "none")
@pytest.mark.parametrize("constrained", [False, True], ids=["free", "regex"])
def test_switching_between_identical_models_changes_nothing(tok, model, drafters, constrained):
    """The small model is the full model: every hand-over (catch-up, cropping both caches, tree
    branches forgotten in the right cache) must leave the output exactly as without EAD."""
    constraint = ctrldec.Regex(r"[a-z ]{0,60}\.") if constrained else None
    # adaptive=False: a draft's size then does not follow measured pass times, which would change
    # how many random numbers speculative sampling draws (the outputs would differ, not their law)
    spec = (lambda: ctrldec.Speculative(drafters, early_exit_layers=1, adaptive=False)) if drafters else (lambda: None)
    switches, writers = 0, set()
    for greedy, seed in ((True, None), (False, 3)):
        common = dict(constraint=constraint, greedy=greedy, seed=seed, max_new_tokens=40)
        plain = ctrldec.generate(model, tok, ids(tok), speculative=spec(), **common)
        out = ctrldec.generate(model, tok, ids(tok), speculative=spec(), ead=flip(model), **common)
        assert out.token_ids == plain.token_ids
        assert len(out.models) == len(out.token_ids)
        switches += out.timing["ead/switches"]
        writers |= {m for m, kind in zip(out.models, out.kinds) if kind == "sampled"}
    assert switches >= 2 and writers == {SMALL, FULL}  # hand-overs happened, both ways


def test_batches_and_smc_switch_per_row(tok, model):
    prompts = [ids(tok), ids(tok, "SELECT name, count(*) FROM users"), ids(tok, "café naïve")]
    decoder = ctrldec.Decoder(model, tok)
    plain = decoder.generate_batch(prompts, greedy=True, max_new_tokens=25)
    out = decoder.generate_batch(prompts, greedy=True, max_new_tokens=25, ead=flip(model))
    assert [o.token_ids for o in out] == [p.token_ids for p in plain]
    constraint = ctrldec.Regex(r"[a-z ]{0,40}\.")
    smc = dict(constraint=constraint, sampler=ctrldec.SMC(particles=4, ess_threshold=1.0), seed=2, max_new_tokens=30)
    plain = ctrldec.generate(model, tok, ids(tok), **smc)
    out = ctrldec.generate(model, tok, ids(tok), ead=flip(model), **smc)
    assert out.token_ids == plain.token_ids and out.smc.resampled == plain.smc.resampled


def test_early_exit_small_model_writes_and_is_recorded(tok, model):
    out = ctrldec.generate(model, tok, ids(tok), greedy=True, max_new_tokens=30,
                           ead=ctrldec.EntropySwitch(layers=1, window=1, threshold=FLIP, min_dwell=1))
    assert {SMALL, FULL} <= set(out.models)
    assert out.timing["ead/passes_small"] > 0 and out.timing["ead/passes_full"] > 0
    alone = ctrldec.generate(model, tok, ids(tok), greedy=True, max_new_tokens=30,
                             ead=ctrldec.EntropySwitch(layers=1, threshold=100.0))
    assert set(alone.models) == {SMALL} and "ead/passes_full" not in alone.timing


@pytest.mark.parametrize("kwargs,match", [
    ({"window": 0}, "window must be an integer >= 1"),
    ({"threshold": -0.5}, "threshold must be a finite entropy >= 0"),
    ({"threshold": math.nan}, "threshold must be a finite entropy >= 0"),
    ({"min_dwell": -1}, "min_dwell must be an integer >= 0"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ctrldec.CtrldecError, match=match):
        ctrldec.EntropySwitch(**kwargs)


def test_small_models_that_do_not_share_the_tokenizer_are_refused(tok, model):
    narrow = tiny_llama(len(tok) + 8)
    with pytest.raises(ctrldec.CtrldecError, match="must score the same vocabulary"):
        ctrldec.generate(model, tok, ids(tok), max_new_tokens=3, ead=ctrldec.EntropySwitch(narrow))
    other = sentencepiece_tokenizer()
    with pytest.raises(ctrldec.CtrldecError, match="EAD's small model's tokenizer differs"):
        ctrldec.generate(model, tok, ids(tok), max_new_tokens=3, ead=ctrldec.EntropySwitch(model, small_tokenizer=other))
    with pytest.raises(ctrldec.CtrldecError, match="early exit after 2 layers"):
        ctrldec.generate(model, tok, ids(tok), max_new_tokens=3, ead=ctrldec.EntropySwitch(layers=2))
    with pytest.raises(ctrldec.CtrldecError, match="not both"):
        ctrldec.EntropySwitch(model, layers=1)
    with pytest.raises(ctrldec.CtrldecError, match="ead= takes ctrldec.EntropySwitch"):
        ctrldec.generate(model, tok, ids(tok), ead=0.5)


def test_custom_generate_takes_ead(tok, model):
    prompt = torch.tensor([ids(tok)])
    plain = model.generate(prompt, custom_generate=ctrldec.custom_generate(tokenizer=tok), max_new_tokens=12,
                           do_sample=False, pad_token_id=0)
    run = ctrldec.custom_generate(tokenizer=tok, ead=ctrldec.EntropySwitch(model, window=1, threshold=FLIP, min_dwell=1))
    switched = model.generate(prompt, custom_generate=run, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert switched.tolist() == plain.tolist()  # the small model is the full one: switching changes nothing
