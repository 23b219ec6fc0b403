"""SMC with AWRS weights: valid outputs, a report, an unbiased estimate of P(L), a distribution
closer to P(w | L) than masking's, and clear errors."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from helpers import tiny_llama

import ctrldec
from ctrldec.constraints import tokenizer_info

PROMPT = [1, 2, 3]


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=5)


def _language(constraint, info, eos):
    """Every token sequence (ending with EOS) the constraint allows: a DFS over the masks."""
    out, stack = [], [(constraint.matcher(info), [])]
    while stack:
        m, prefix = stack.pop()
        for t in m.allowed_token_ids().tolist():
            if t == eos:
                out.append(prefix + [t])
            else:
                child = m.fork()
                child.advance(t)
                stack.append((child, prefix + [t]))
    return out


def _exact(model, tok, constraint):
    """log P(w) for every w in L, and masking's exact probability of each."""
    info = tokenizer_info(tok)
    eos = tok.eos_token_id
    sequences = _language(constraint, info, eos)
    log_p, log_mask = [], []
    for w in sequences:
        with torch.no_grad():
            rows = torch.log_softmax(model(torch.tensor([PROMPT + w])).logits[0, len(PROMPT) - 1:].double(), -1)
        m = constraint.matcher(info)
        lp = lm = 0.0
        for row, t in zip(rows, w):
            lp += float(row[t])
            lm += float(row[t] - torch.logsumexp(row[m.allowed_token_ids()], 0))
            if t != eos:
                m.advance(t)
        log_p.append(lp)
        log_mask.append(lm)
    return sequences, np.array(log_p), np.array(log_mask)


REGEX = ctrldec.Regex("(a|bbbb|cc)")  # alternatives of different lengths: masking is badly biased


@pytest.mark.parametrize("weights", ["estimate", "exact"])
def test_smc_corrects_masking_and_estimates_p_of_l_without_bias(tok, model, weights):
    """300 runs of SMC with 16 particles, with AWRS's estimated or exact weights. The weighted
    particles, averaged over runs, are within KL 0.05 of P(w | L) while masking is at 1.27
    (exact); the mean of the estimates of P(L) is within 3 standard errors of the exact P(L)
    (fixed seeds; a 0.27% false-failure rate each)."""
    sequences, log_p, log_mask = _exact(model, tok, REGEX)
    log_pl = np.logaddexp.reduce(log_p)
    p_star = np.exp(log_p - log_pl)
    kl_mask = float((p_star * (log_p - log_pl - log_mask)).sum())
    index = {tuple(w[:-1]): i for i, w in enumerate(sequences)}
    decoder = ctrldec.Decoder(model, tok)
    q = np.zeros(len(sequences))
    estimates = []
    for seed in range(300):
        smc = ctrldec.SMC(particles=16, sampler=ctrldec.AWRS(weights=weights))
        out = decoder.generate(PROMPT, constraint=REGEX, sampler=smc, seed=seed, max_new_tokens=8)
        report = out.smc
        w = np.exp(np.array(report.log_weights) - report.log_marginal_likelihood) / len(report.log_weights)
        for p, wi in zip(report.particles, w):
            if wi > 0:
                q[index[tuple(p.token_ids)]] += wi
        estimates.append(math.exp(report.log_marginal_likelihood - log_pl))  # P(L)-hat / P(L)
    q /= q.sum()
    kl_smc = float((p_star * (np.log(p_star) - np.log(np.maximum(q, 1e-12)))).sum())
    assert kl_mask > 1.0 and kl_smc < 0.05, (kl_mask, kl_smc)
    se = np.std(estimates, ddof=1) / math.sqrt(len(estimates))
    assert abs(np.mean(estimates) - 1.0) < 3 * se, (np.mean(estimates), se)


@pytest.mark.parametrize("constraint", [REGEX, ctrldec.Grammar.builtin("json_compact"),
                                        ctrldec.JSONSchema({"type": "object", "properties": {"ok": {"type": "boolean"}},
                                                            "required": ["ok"], "additionalProperties": False})],
                         ids=["regex", "lark", "json_schema"])
def test_smc_outputs_are_valid_and_reported(tok, model, constraint):
    out = ctrldec.generate(model, tok, PROMPT, constraint=constraint, sampler=ctrldec.SMC(particles=6), seed=1,
                           max_new_tokens=12)
    report = out.smc
    assert len(report.particles) == len(report.log_weights) == 6 and report.ess
    assert all(constraint.is_prefix(p.text) for p in report.particles)
    if report.complete:
        assert out.finish_reason == "eos" and constraint.matches(out.text) and math.isfinite(report.log_marginal_likelihood)
    else:
        assert out.truncated


def test_one_batched_forward_per_step_for_all_particles(tok, model):
    rows = []
    original = model.forward

    @functools.wraps(original)
    def counting(*args, **kwargs):
        rows.append(int(kwargs["input_ids"].shape[0]))
        return original(*args, **kwargs)

    model.forward = counting
    try:
        out = ctrldec.generate(model, tok, PROMPT, constraint=ctrldec.Regex("[a-z]{6}"), sampler=ctrldec.SMC(particles=8),
                               seed=0, max_new_tokens=6, budget_aware=False)
    finally:
        model.forward = original
    assert rows[0] == 1  # the prompt is fed once, then shared by the particles
    assert max(rows) <= 8 and len(rows) <= 1 + 6
    assert out.smc.complete == 0 or out.finish_reason == "eos"


def test_controllers_run_per_particle(tok, model):
    sampler = ctrldec.AWRS(controllers=[ctrldec.Mirostat(3.0)])
    out = ctrldec.generate(model, tok, PROMPT, constraint=ctrldec.Regex("[a-z ]{4,10}\\."),
                           sampler=ctrldec.SMC(particles=4, ess_threshold=1.0, sampler=sampler), seed=2, max_new_tokens=12)
    for p in out.smc.particles:
        assert len(p.steps) == len(p.token_ids) and all(s.mu is not None for s in p.steps)


def test_generate_batch_runs_one_smc_per_prompt(tok, model):
    results = ctrldec.Decoder(model, tok).generate_batch([PROMPT, [4, 5]], constraint=REGEX,
                                                         sampler=ctrldec.SMC(particles=4), seed=0, max_new_tokens=8)
    assert len(results) == 2 and all(r.smc is not None and len(r.smc.particles) == 4 for r in results)
    assert all(REGEX.matches(r.text) for r in results if r.finish_reason == "eos")


def test_no_particle_can_finish_in_time(tok, model):
    out = ctrldec.generate(model, tok, PROMPT, constraint=ctrldec.Regex("[a-z]{30}"), sampler=ctrldec.SMC(particles=4),
                           seed=0, max_new_tokens=3, budget_aware=False)  # the constraint's language, cut off
    assert out.truncated and out.smc.complete == 0 and out.smc.log_marginal_likelihood == -math.inf
    assert ctrldec.Regex("[a-z]{30}").is_prefix(out.text)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"particles": 0}, "at least one particle"), ({"particles": -3}, "at least one particle"),
    ({"particles": 2.5}, "at least one particle"), ({"ess_threshold": 0}, "ess_threshold"),
    ({"ess_threshold": 1.5}, "ess_threshold"), ({"resampling": "stratified"}, "resampling"),
    ({"sampler": ctrldec.Greedy()}, "AWRS"),
])
def test_bad_input(kwargs, message):
    with pytest.raises(ctrldec.CtrldecError, match=message):
        ctrldec.SMC(**kwargs)
