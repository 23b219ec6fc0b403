"""Choosing the next token under a constraint, mostly without a full mask.

The distribution sampled is always: the model's distribution restricted to the tokens the
constraint allows (masking), then temperature, top-k, top-p, min-p applied in that order (the
order of Hugging Face's warpers), on the restricted distribution.

* Greedy: candidates are tested in probability order; the first one ``Matcher.accepts`` is the
  answer.
* Sampling with temperature only: Gumbel-max. Every token gets a key log p + Gumbel noise;
  testing candidates in key order, the first accepted one is an exact sample of the restricted
  distribution (ALGORITHMS.md, AWRS steps 1-2): about 1/Z checks, Z the allowed mass.
* top-k / top-p / min-p: candidates are tested in probability order until the support of the
  warped distribution is known (top-p needs the allowed mass Z, which is bracketed by the mass
  seen so far and the mass not yet tested), then one token is drawn from it.

Past ``max_checks`` tests the full mask is computed and the same distribution sampled from it,
so the result is exact either way; ``Choice.checks`` reports the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["SamplingParams", "Choice", "choose"]


@dataclass(frozen=True)
class SamplingParams:
    """``greedy`` or sampling with temperature, top_k (0: off), top_p (1: off), min_p (0: off)."""

    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self) -> None:
        if not self.greedy and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")

    @property
    def warped(self) -> bool:
        return self.top_k > 0 or self.top_p < 1 or self.min_p > 0


@dataclass
class Choice:
    token: int
    checks: int  # Matcher.accepts calls
    full_mask: bool  # fell back to computing the whole mask


def _accepts(matcher: Any, token: int) -> bool:
    return matcher is None or matcher.accepts(token)


def _candidates(keys: torch.Tensor, budget: int):
    """Token ids in descending key order, produced lazily in growing chunks (up to ``budget``)."""
    n = keys.numel()
    done = 0
    chunk = 8
    while done < min(n, budget):
        k = min(n, max(done + chunk, done + 1), budget)
        top = torch.topk(keys, k).indices.tolist()
        yield from top[done:k]
        done = k
        chunk *= 4


def _warp(probs: np.ndarray, allowed: list[int], params: SamplingParams, unseen_mass: float, next_prob: float) -> list[int] | None:
    """top-k, then top-p, then min-p on the allowed tokens (in descending probability).

    The tokens not tested yet have total probability ``unseen_mass``, each at most
    ``next_prob``; any of them may be allowed. Returns None while the support still depends
    on them.
    """
    support = allowed
    if params.top_k:
        if len(support) < params.top_k and unseen_mass > 0:
            return None
        support = support[: params.top_k]
        unseen_mass = next_prob = 0.0  # all of the top-k are known: renormalise over them
    if params.top_p < 1:
        cum = np.cumsum(probs[support]) if support else np.zeros(0)
        known = cum[-1] if len(cum) else 0.0
        cut_lo = int(np.searchsorted(cum, params.top_p * known * (1 - 1e-12)))
        cut_hi = int(np.searchsorted(cum, params.top_p * (known + unseen_mass) * (1 - 1e-12)))
        if unseen_mass > 0 and (cut_hi >= len(cum) or cut_lo != cut_hi):
            return None
        support = support[: cut_lo + 1]
        unseen_mass = next_prob = 0.0
    if params.min_p > 0 and support:
        threshold = params.min_p * probs[support[0]]
        if next_prob >= threshold:
            return None
        support = [t for t in support if probs[t] >= threshold]
    elif not params.top_k and params.top_p >= 1 and unseen_mass > 0:
        return None
    return support or None


def choose(logits: torch.Tensor, matcher: Any, params: SamplingParams, generator: torch.Generator | None = None,
           *, max_checks: int = 64, width: int | None = None) -> Choice:
    """Pick the next token from 1-D ``logits`` under ``matcher`` (None: unconstrained)."""
    logits = logits.float()
    if width is not None and logits.numel() > width:
        logits = logits[:width]
    if params.greedy:
        checks = 0
        for t in _candidates(logits, max_checks):
            checks += 1
            if _accepts(matcher, t):
                return Choice(t, checks, False)
        return Choice(_full_mask_choice(logits, matcher, params, generator), checks, True)
    scores = logits / params.temperature
    if not params.warped:
        gumbel = -torch.log(-torch.log(torch.rand(scores.shape, generator=generator).clamp_(1e-20, 1.0)))
        keys = scores + gumbel
        checks = 0
        for t in _candidates(keys, max_checks):
            checks += 1
            if _accepts(matcher, t):
                return Choice(t, checks, False)
        return Choice(_sample_masked(scores, _allowed(matcher, scores.numel()), generator), checks, True)
    probs = torch.softmax(scores.double(), dim=-1).numpy()
    order = np.argsort(-probs, kind="stable")
    allowed: list[int] = []
    seen = 0.0
    checks = 0
    for i, t in enumerate(order[:max_checks].tolist()):
        checks += 1
        seen += probs[t]
        if _accepts(matcher, t):
            allowed.append(t)
        next_prob = float(probs[order[i + 1]]) if i + 1 < len(order) else 0.0
        support = _warp(probs, allowed, params, max(0.0, 1.0 - seen) if i + 1 < len(order) else 0.0, next_prob)
        if support:
            return Choice(_draw(probs, support, generator), checks, False)
    mask = _allowed(matcher, scores.numel())
    allowed = [t for t in order.tolist() if mask[t]]
    support = _warp(probs, allowed, params, 0.0, 0.0)
    if not support:
        raise ValueError("no token is allowed")
    return Choice(_draw(probs, support, generator), checks, True)


def _allowed(matcher: Any, width: int) -> np.ndarray:
    if matcher is None:
        return np.ones(width, dtype=bool)
    matcher.check_not_dead()
    bits = np.unpackbits(matcher.mask().view(np.uint8), bitorder="little")
    out = np.zeros(width, dtype=bool)
    n = min(width, len(bits))
    out[:n] = bits[:n].astype(bool)
    return out


def _draw(probs: np.ndarray, support: list[int], generator: torch.Generator | None) -> int:
    weights = torch.tensor(probs[support], dtype=torch.float64)
    return support[int(torch.multinomial(weights / weights.sum(), 1, generator=generator))]


def _sample_masked(scores: torch.Tensor, allowed: np.ndarray, generator: torch.Generator | None) -> int:
    masked = scores.masked_fill(~torch.from_numpy(allowed), float("-inf"))
    return int(torch.multinomial(torch.softmax(masked.double(), dim=-1), 1, generator=generator))


def _full_mask_choice(logits: torch.Tensor, matcher: Any, params: SamplingParams, generator: torch.Generator | None) -> int:
    allowed = torch.from_numpy(_allowed(matcher, logits.numel()))
    return int(logits.masked_fill(~allowed, float("-inf")).argmax())
