"""Mask-free samplers: the next token under a constraint, mostly without a full mask.

The distribution sampled is always: the model's distribution restricted to the tokens the
constraint allows (masking), then temperature, top-k, top-p, min-p applied in that order (the
order of Hugging Face's warpers), on the restricted distribution.

* ``Greedy``: candidates are tested in probability order; the first one ``Matcher.accepts`` is the
  answer.
* ``Multinomial`` with temperature only: Gumbel-max. Every token gets a key log p + Gumbel noise;
  testing candidates in key order, the first accepted one is an exact sample of the restricted
  distribution (ALGORITHMS.md, AWRS steps 1-2): about 1/Z checks, Z the allowed mass.
* ``Multinomial`` with top-k / top-p / min-p: candidates are tested in probability order until the
  support of the warped distribution is known (top-p needs the allowed mass Z, which is bracketed
  by the mass seen so far and the mass not yet tested), then one token is drawn from it.

Past ``max_checks`` tests the full mask is computed and the same distribution sampled from it,
so the result is exact either way; ``Choice.checks`` reports the cost.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..controllers.base import Controls
from ..engine.matcher import Matcher
from .base import Choice, SamplingParams, allowed_tokens, masked

__all__ = ["Greedy", "Multinomial", "choose", "MAX_CHECKS"]

# Candidates tested before the full mask is computed: a mask costs 0.1-4 ms on a cold state and
# one check ~1 us, and a good model needs 1-2 checks (`ctrldec bench e2e`: 1.37 greedy, 1.93 at T=1).
MAX_CHECKS = 64


def candidates(keys: torch.Tensor, budget: int) -> Iterator[int]:
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


class Greedy:
    """The most likely allowed token."""

    def __init__(self, max_checks: int = MAX_CHECKS) -> None:
        self.max_checks = max_checks
        self.controls = Controls()

    def __repr__(self) -> str:
        return "Greedy()"

    def choose(self, logits: torch.Tensor, matcher: Matcher, rng: torch.Generator | None = None, state: tuple = ()) -> Choice:
        logits = logits.float()
        checks = 0
        for t in candidates(logits, self.max_checks):
            checks += 1
            if matcher.accepts(t):
                return Choice(t, checks, log_q=0.0)
        return Choice(int(masked(logits, matcher).argmax()), checks, True, log_q=0.0)


class Multinomial:
    """An exact sample of the constrained distribution after temperature, top-k, top-p, min-p."""

    def __init__(self, params: SamplingParams | None = None, max_checks: int = MAX_CHECKS) -> None:
        self.params = params or SamplingParams()
        if self.params.greedy:
            raise ValueError("Multinomial samples: use Greedy() for greedy decoding")
        self.max_checks = max_checks
        self.controls = Controls()

    def __repr__(self) -> str:
        return f"Multinomial({self.params})"

    def choose(self, logits: torch.Tensor, matcher: Matcher, rng: torch.Generator | None = None, state: tuple = ()) -> Choice:
        scores = logits.float() / self.params.temperature
        if self.params.warped:
            return self._walk_warped(scores, matcher, rng)
        gumbel = -torch.log(-torch.log(torch.rand(scores.shape, generator=rng).clamp_(1e-20, 1.0)))
        checks = 0
        for t in candidates(scores + gumbel, self.max_checks):
            checks += 1
            if matcher.accepts(t):
                return Choice(t, checks)
        token = torch.multinomial(torch.softmax(masked(scores, matcher).double(), dim=-1), 1, generator=rng)
        return Choice(int(token), checks, True)

    def _walk_warped(self, scores: torch.Tensor, matcher: Matcher, rng: torch.Generator | None) -> Choice:
        params = self.params
        probs = torch.softmax(scores.double(), dim=-1).numpy()
        order = np.argsort(-probs, kind="stable")
        allowed: list[int] = []
        seen = 0.0
        checks = 0
        for i, t in enumerate(order[: self.max_checks].tolist()):
            checks += 1
            seen += probs[t]
            if matcher.accepts(t):
                allowed.append(t)
            last = i + 1 == len(order)
            next_prob = 0.0 if last else float(probs[order[i + 1]])
            support = _warp(probs, allowed, params, 0.0 if last else max(0.0, 1.0 - seen), next_prob)
            if support:
                return Choice(_draw(probs, support, rng), checks)
        mask = allowed_tokens(matcher, scores.numel()).numpy()
        support = _warp(probs, [t for t in order.tolist() if mask[t]], params, 0.0, 0.0)
        if not support:
            raise ValueError("no token is allowed")
        return Choice(_draw(probs, support, rng), checks, True)


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


def _draw(probs: np.ndarray, support: list[int], rng: torch.Generator | None) -> int:
    weights = torch.tensor(probs[support], dtype=torch.float64)
    return support[int(torch.multinomial(weights / weights.sum(), 1, generator=rng))]


def choose(logits: torch.Tensor, matcher: Matcher, params: SamplingParams, generator: torch.Generator | None = None,
           *, max_checks: int = MAX_CHECKS) -> Choice:
    """One mask-free draw with ``params`` (``Greedy`` or ``Multinomial``), for one-off use."""
    sampler = Greedy(max_checks) if params.greedy else Multinomial(params, max_checks)
    return sampler.choose(logits, matcher, generator)
