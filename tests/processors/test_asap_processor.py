"""ASApLogitsProcessor inside ``model.generate``: valid outputs, learning from observe, the same
reweighting as the loop's sampler, clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_llama

import ctrldec
from ctrldec.errors import CtrldecError
from ctrldec.samplers.asap import ASApStep

REGEX = ctrldec.Regex("(a|bbbb|cc)")
PROMPT = torch.tensor([[1, 2, 3]])


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=5)


def _round(model, tok, proc, seed, k=8):
    torch.manual_seed(seed)
    return model.generate(PROMPT, logits_processor=[proc], do_sample=True, num_return_sequences=k, max_new_tokens=8,
                          pad_token_id=tok.eos_token_id)


def test_sampled_rounds_are_valid_and_teach_the_oracle(tok, model):
    oracle = ctrldec.ASApOracle()
    proc = oracle.logits_processor(REGEX, tok)
    for seed in range(4):
        out = _round(model, tok, proc, seed)
        for row in out:
            assert REGEX.matches(tok.decode(row[3:], skip_special_tokens=True))
        assert proc.observe(out) == 8
    assert oracle.samples == 32 and oracle.efg(0) < 1e-3  # P(L) is tiny under this random model


def test_processor_and_loop_learn_the_same_estimates(tok, model):
    """The loop's oracle after 30 samples and the processor's after 4 rounds of 8 agree where both
    explored everything: the root's estimate is P(L) for both (every path of L tried)."""
    loop = ctrldec.ASAp()
    for seed in range(30):
        ctrldec.generate(model, tok, [1, 2, 3], constraint=REGEX, sampler=loop, seed=seed, max_new_tokens=8)
    oracle = ctrldec.ASApOracle()
    proc = oracle.logits_processor(REGEX, tok)
    for seed in range(4):
        proc.observe(_round(model, tok, proc, seed))
    assert len(oracle) == len(loop.oracle)
    assert oracle.efg(0) == pytest.approx(loop.oracle.efg(0), rel=1e-4)


def test_scores_are_the_loops_reweighted_distribution(tok, model):
    oracle = ctrldec.ASApOracle()
    proc = oracle.logits_processor(REGEX, tok)
    proc.observe(_round(model, tok, proc, 0))
    scores = torch.randn(1, len(tok))
    out = proc(PROMPT, scores)
    step = ASApStep(oracle, [tok.eos_token_id])
    logp = torch.log_softmax(scores[0].double(), -1)
    masked = logp.masked_fill(~torch.isfinite(ctrldec.GrammarLogitsProcessor(REGEX, tok)(PROMPT, scores)[0]), -math.inf)
    expected = torch.softmax(oracle.reweighted(masked, step.node), -1)
    assert torch.softmax(out[0].double(), -1).numpy() == pytest.approx(expected.numpy(), abs=1e-6)


def test_processor_refuses_another_prompt_and_needs_a_constraint(tok, model):
    oracle = ctrldec.ASApOracle()
    proc = oracle.logits_processor(REGEX, tok)
    _round(model, tok, proc, 0, k=2)
    with pytest.raises(CtrldecError, match="learned a prompt"):
        proc(torch.tensor([[4, 5]]), torch.randn(1, len(tok)))
    with pytest.raises(CtrldecError, match="needs a constraint"):
        oracle.logits_processor(None, tok)
