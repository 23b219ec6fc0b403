"""Mask-free samplers: exact samples of the masked, warped distribution with few checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import ctrldec
from ctrldec.samplers.sampling import SamplingParams, choose

# A toy "model": a fixed next-token distribution over single-letter tokens, constrained by a
# regex that allows about a third of them.
LETTERS = [chr(c).encode() for c in range(ord("a"), ord("z") + 1)] + [b""]
TOY_INFO = ctrldec.TokenizerInfo(LETTERS, special_ids={26}, eos_token_ids=[26])
TOY_LOGITS = torch.tensor(np.random.default_rng(0).normal(0, 2, size=27), dtype=torch.float32)
ALLOWED_RE = ctrldec.Regex("[aeiouxyz]")


def masked_then_warped(params: SamplingParams) -> np.ndarray:
    """The reference: restrict to allowed tokens, renormalise, then warp (full knowledge)."""
    m = ALLOWED_RE.matcher(TOY_INFO)
    allowed = m.allowed_token_ids()
    p = torch.softmax(TOY_LOGITS.double() / params.temperature, dim=-1).numpy()
    q = np.zeros_like(p)
    q[allowed] = p[allowed]
    q /= q.sum()
    order = [t for t in np.argsort(-q, kind="stable") if q[t] > 0]
    if params.top_k:
        order = order[: params.top_k]
    w = q[order] / q[order].sum()
    if params.top_p < 1:
        cut = int(np.searchsorted(np.cumsum(w), params.top_p * (1 - 1e-12)))
        order, w = order[: cut + 1], w[: cut + 1] / w[: cut + 1].sum()
    if params.min_p > 0:
        keep = [i for i in range(len(order)) if w[i] >= params.min_p * w[0]]
        order, w = [order[i] for i in keep], w[keep] / w[keep].sum()
    out = np.zeros_like(p)
    out[order] = w
    return out


@pytest.mark.parametrize(
    "params",
    [SamplingParams(), SamplingParams(temperature=0.6), SamplingParams(top_k=3), SamplingParams(top_p=0.7),
     SamplingParams(min_p=0.3), SamplingParams(temperature=1.4, top_k=5, top_p=0.9, min_p=0.05)],
    ids=["plain", "temperature", "top_k", "top_p", "min_p", "all"],
)
def test_mask_free_sampler_matches_the_masked_distribution(params, record_property):
    """20,000 draws, chi-square p > 0.01 (fixed seed: a new seed fails 1% of the time by chance)."""
    generator = torch.Generator().manual_seed(1234)
    counts = np.zeros(27)
    checks = 0
    draws = 20_000
    for _ in range(draws):
        choice = choose(TOY_LOGITS, ALLOWED_RE.matcher(TOY_INFO), params, generator, max_checks=8)
        counts[choice.token] += 1
        checks += choice.checks
    expected = masked_then_warped(params)
    support = expected > 0
    assert counts[~support].sum() == 0, "a token outside the warped, masked support was drawn"
    if support.sum() > 1:
        assert chisquare(counts[support], expected[support] * draws).pvalue > 0.01
    record_property("mean_checks_per_token", checks / draws)
    print(params, "mean accepts checks per token:", checks / draws)


def test_greedy_takes_the_most_likely_allowed_token():
    choice = choose(TOY_LOGITS, ALLOWED_RE.matcher(TOY_INFO), SamplingParams(greedy=True))
    allowed = ALLOWED_RE.matcher(TOY_INFO).allowed_token_ids()
    assert choice.token == allowed[int(TOY_LOGITS[allowed].argmax())]


