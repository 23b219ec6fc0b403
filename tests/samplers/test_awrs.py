"""AWRS: exact samples of the constrained potential, and unbiased estimates of its mass Z."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import ctrldec
from ctrldec.samplers import AWRS

LETTERS = [chr(c).encode() for c in range(ord("a"), ord("z") + 1)] + [b""]
INFO = ctrldec.TokenizerInfo(LETTERS, special_ids={26}, eos_token_ids=[26])
ALLOWED = ctrldec.Regex("[aeiouxyz]")


def _logits(kind: str) -> torch.Tensor:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, size=27)
    if kind == "peaked":  # the top token (a disallowed one) has probability > 2/3
        x[1] = x.max() + 4.0
    return torch.tensor(x, dtype=torch.float32)


def _exact(logits: torch.Tensor, temperature: float = 1.0) -> tuple[float, np.ndarray]:
    p = torch.softmax(logits.double() / temperature, -1).numpy()
    allowed = ALLOWED.matcher(INFO).allowed_token_ids()
    q = np.zeros_like(p)
    q[allowed] = p[allowed]
    return float(q.sum()), q / q.sum()


@pytest.mark.parametrize("variant", ["recursive", "geometric"])
@pytest.mark.parametrize("kind", ["flat", "peaked"])
def test_weights_are_unbiased_and_samples_exact(variant, kind, record_property):
    """100,000 draws: the mean of Z-hat is within 3 standard errors of Z (a 0.27% false-failure
    rate per case, fixed seed), and the tokens pass a chi-square test (p > 0.001) against the
    constrained distribution."""
    logits = _logits(kind)
    z, target = _exact(logits)
    sampler = AWRS(variant=variant)
    gen = torch.Generator().manual_seed(11)
    matcher = ALLOWED.matcher(INFO)
    n = 100_000
    weights = np.empty(n)
    counts = np.zeros(27)
    checks = 0
    for i in range(n):
        c = sampler.choose(logits, matcher, gen)
        weights[i] = math.exp(c.log_w)
        counts[c.token] += 1
        checks += c.checks
    se = weights.std(ddof=1) / math.sqrt(n)
    assert abs(weights.mean() - z) < 3 * se, (weights.mean(), z, se)
    support = target > 0
    assert counts[~support].sum() == 0
    assert chisquare(counts[support], target[support] * n).pvalue > 0.001
    record_property("mean_checks", checks / n)


@pytest.mark.parametrize("variant", ["recursive", "geometric"])
@pytest.mark.parametrize("kind", ["flat", "peaked"])
def test_exact_weights_are_the_allowed_mass_and_leave_the_draws_alone(variant, kind):
    logits = _logits(kind)
    z, _ = _exact(logits)
    estimated, exact = AWRS(variant=variant), AWRS(variant=variant, weights="exact")
    a, b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for _ in range(200):
        ce, cx = estimated.choose(logits, ALLOWED.matcher(INFO), a), exact.choose(logits, ALLOWED.matcher(INFO), b)
        assert (cx.token, cx.checks) == (ce.token, ce.checks)  # the same draws, the same checks
        assert cx.log_w == pytest.approx(math.log(z), abs=1e-9) and cx.full_mask
    assert "weights='exact'" in repr(exact) and "weights" not in repr(estimated)


def test_exact_fallback_after_max_checks_keeps_the_weight_proper():
    """With room for two checks only, most draws fall back to the mask: the weight is then the
    exact Z, and the mean stays Z."""
    logits = _logits("flat")
    z, _ = _exact(logits)
    sampler = AWRS(variant="recursive", max_checks=2)
    gen = torch.Generator().manual_seed(5)
    weights = [math.exp(sampler.choose(logits, ALLOWED.matcher(INFO), gen).log_w) for _ in range(20_000)]
    assert abs(np.mean(weights) - z) < 3 * np.std(weights, ddof=1) / math.sqrt(len(weights)) + 1e-12


def test_temperature_changes_the_potential():
    logits = _logits("flat")
    z, _ = _exact(logits, temperature=0.5)
    gen = torch.Generator().manual_seed(2)
    # recursive: at T=0.5 the top (disallowed) token has p = 0.99 and the geometric estimate is
    # heavy-tailed (1 with probability 4e-5, Z = 0.006): 20,000 draws would not show its mean
    weights = [math.exp(AWRS(temperature=0.5, variant="recursive").choose(logits, ALLOWED.matcher(INFO), gen).log_w) for _ in range(20_000)]
    assert abs(np.mean(weights) - z) < 3 * np.std(weights, ddof=1) / math.sqrt(len(weights))


def test_a_potential_without_allowed_tokens_kills_the_particle():
    logits = _logits("peaked")  # top-1 keeps only "b", which the constraint forbids
    c = AWRS(top_k=1).choose(logits, ALLOWED.matcher(INFO), torch.Generator().manual_seed(0))
    assert c.log_w == -math.inf and ALLOWED.matcher(INFO).accepts(c.token)


def test_bad_parameters():
    with pytest.raises(ValueError, match="variant"):
        AWRS(variant="fast")
    with pytest.raises(ValueError, match="temperature"):
        AWRS(temperature=0)
    with pytest.raises(ValueError, match="max_checks"):
        AWRS(max_checks=1)
    with pytest.raises(ValueError, match="weights must be 'estimate' or 'exact'"):
        AWRS(weights="mask")


def test_warpers_shape_the_potential_before_the_constraint():
    """top-k, top-p and min-p cut the unconstrained distribution; Z is the allowed mass of what
    they keep (20,000 draws, mean within 3 standard errors)."""
    from transformers import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = _logits("flat")
    scores = MinPLogitsWarper(0.02)(None, TopPLogitsWarper(0.95)(None, TopKLogitsWarper(12)(None, logits[None])))[0]
    p = torch.softmax(scores.double(), -1).numpy()
    z = float(p[ALLOWED.matcher(INFO).allowed_token_ids()].sum())
    sampler = AWRS(top_k=12, top_p=0.95, min_p=0.02)
    gen = torch.Generator().manual_seed(9)
    draws = [sampler.choose(logits, ALLOWED.matcher(INFO), gen) for _ in range(20_000)]
    weights = np.exp([c.log_w for c in draws])
    assert all(p[c.token] > 0 for c in draws)
    assert abs(weights.mean() - z) < 3 * weights.std(ddof=1) / math.sqrt(len(weights))


def test_the_geometric_variants_draws_skip_rejected_tokens_exactly():
    """The inverse-CDF draw with holes (the geometric estimator's sampling with replacement from
    the tokens not yet rejected): 100,000 draws pass a chi-square test (p > 0.001) against p
    with the holes removed, zero-probability tokens and holes at both ends included."""
    from ctrldec.samplers.awrs import _LiveDistribution

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(12, 0.5))
    p[3] = 0.0
    live = _LiveDistribution(p)
    for token in (5, 0, 11):
        live.remove(token)
    target = p.copy()
    target[[0, 5, 11]] = 0.0
    target /= target.sum()
    n = 100_000
    counts = np.bincount([live.draw(u) for u in rng.random(n)], minlength=12)
    support = target > 0
    assert counts[~support].sum() == 0
    assert chisquare(counts[support], target[support] * n).pvalue > 0.001
    for token in np.flatnonzero(support):
        live.remove(int(token))
    assert live.draw(0.5) is None  # every token with positive probability removed: a dead step
