"""``AWRS``: adaptive weighted rejection sampling (Lipkin et al., COLM 2025, arXiv 2504.05410).

Each step draws an exact sample of the *potential* restricted to the tokens the constraint
allows, with a handful of ``Matcher.accepts`` checks and no mask, and returns an unbiased
estimate of that restriction's mass ``Z`` (``Choice.log_w = log Z-hat``): the weight sequential
Monte Carlo (``search.smc``) multiplies to correct the distortion of token-by-token masking.

The potential is the model's next-token distribution after the controllers (Mirostat, entropy
temperature) and temperature, top-k, top-p, min-p, all applied to the *unconstrained*
distribution; the constraint is then the condition. (The masking samplers warp the constrained
distribution instead. SMC needs a fixed potential times the constraint to have a global target,
``P(w | w in L)`` for the warped process; with temperature 1 and no warpers both orders agree.)

Two estimators, both unbiased (ALGORITHMS.md, AWRS step 3; tests check the mean of ``Z-hat``
against the exact ``Z`` over 100,000 draws):

* **recursive**: candidates drawn without replacement (by inverse CDF, tested tokens removed);
  each rejected token ``j`` multiplies the estimate by ``1 - q_j``, ``q_j = p_j / (1 - rejected
  mass before it)``;
  at the first accepted token ``x`` the next candidate is tested too: the estimate's last factor
  is 1 if it is also accepted, ``q_x`` if not.
* **geometric** (used when the top probability is at least 2/3, where it needs fewer checks):
  draws with replacement until two acceptances, the estimate ``1 / (n - 1)`` after ``n`` draws;
  draws that would land on an already rejected token are not made but counted (their number
  before each fresh draw is geometric).

Past ``max_checks`` rejections the full mask is computed: the sample is drawn from it and the
weight is the exact ``Z``, which is a proper weight too. A step where no allowed token has
positive potential (top-k cut every allowed token) returns ``log_w = -inf``: the particle is dead.

``weights="exact"`` keeps the mask-free draw but weighs every step by the exact ``Z`` (one full
mask and a sum over the allowed tokens). The estimate's own variance then leaves the weights,
so SMC needs fewer particles for the same fidelity: in ``ctrldec bench fidelity``'s binary case
(parity decided by the last digit, where the last step's weight is the only correction) SMC-16
went from a KL to the target of 0.50 to 0.18, SMC-64 from 0.27 to 0.05 (docs/fidelity.md).
ctrldec's masks are cached per state, so on a CPU the exact weight costs nothing measurable
beside a forward pass; the estimate is what an engine without cheap masks can afford.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..controllers.base import Controls, StepStats
from ..engine.matcher import Matcher
from ..numeric import LN2, entropy_bits, log_softmax, log_sum_exp
from .base import Choice, SamplingParams, allowed_tokens
from .full_mask import transformers_warpers
from .sampling import MAX_CHECKS

__all__ = ["AWRS", "GEOMETRIC_THRESHOLD"]

# Above this top probability, sampling with replacement until two acceptances needs fewer than
# two checks on average (1 + 2(1 - p)/p < 2 for p > 2/3), and the recursive estimator always
# makes at least two: the geometric one is then cheaper.
GEOMETRIC_THRESHOLD = math.log(2.0 / 3.0)


class AWRS:
    """Exact constrained samples with unbiased estimates of the allowed mass (see the module
    docstring). ``variant``: ``"auto"`` (geometric when the top probability is >= 2/3),
    ``"recursive"`` or ``"geometric"``. ``weights``: ``"estimate"`` (AWRS's unbiased estimate of
    the allowed mass, from the checks alone) or ``"exact"`` (the mass itself, from the full mask;
    the same draws). ``controllers``: applied to the unconstrained distribution, each sequence
    keeping its own state.

    >>> import ctrldec, torch
    >>> info = ctrldec.TokenizerInfo([b"a", b"b", b"c", b""], special_ids={3}, eos_token_ids=[3])
    >>> m = ctrldec.Regex("[ab]").matcher(info)
    >>> c = AWRS().choose(torch.log(torch.tensor([0.5, 0.2, 0.2, 0.1])), m, torch.Generator().manual_seed(0))
    >>> c.token in (0, 1), c.checks >= 1                 # an exact draw of p restricted to {a, b}
    (True, True)
    """

    def __init__(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, *,
                 controllers: Controls | list | tuple = (), variant: str = "auto", weights: str = "estimate",
                 max_checks: int = MAX_CHECKS) -> None:
        if variant not in ("auto", "recursive", "geometric"):
            raise ValueError(f"variant must be 'auto', 'recursive' or 'geometric', got {variant!r}")
        if weights not in ("estimate", "exact"):
            raise ValueError(f"weights must be 'estimate' or 'exact', got {weights!r}")
        if max_checks < 2:
            raise ValueError(f"max_checks must be at least 2 (the weight tests one token past the sample), got {max_checks}")
        self.params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        self.controls = controllers if isinstance(controllers, Controls) else Controls(controllers)
        self.variant = variant
        self.weights = weights
        self.max_checks = max_checks
        self._warpers = transformers_warpers(self.params)

    def __repr__(self) -> str:
        p = self.params
        return (f"AWRS(temperature={p.temperature}, top_k={p.top_k}, top_p={p.top_p}, min_p={p.min_p}, "
                f"variant={self.variant!r}{', weights=' + repr(self.weights) if self.weights != 'estimate' else ''})")

    def potential(self, logits: torch.Tensor, state: tuple = ()) -> tuple[torch.Tensor, tuple]:
        """The warped unconstrained scores of one step, and the controllers' step records."""
        scores, steps = self.controls.warp(logits.float(), state)
        scores = scores[None]
        for warper in self._warpers:
            scores = warper(None, scores)
        return scores[0], steps

    def log_potential(self, rows: torch.Tensor, tokens: list[int], state: tuple = ()) -> float:
        """Sum of ``log potential(token)`` over forced tokens (their proper weight: the constraint
        allows nothing else, so the allowed mass is the token's own probability)."""
        total = 0.0
        for row, token in zip(rows, tokens):
            total += float(log_softmax(self.potential(row, state)[0])[token])
        return total

    def log_potential_of(self, row: torch.Tensor, tokens: frozenset[int] | set[int], state: tuple = ()) -> float:
        """``log`` of the potential's total probability of ``tokens`` at one step (the EOS ids)."""
        logp = log_softmax(self.potential(row, state)[0])
        return float(np.logaddexp.reduce(logp[[t for t in tokens if t < len(logp)]]))

    def choose(self, logits: torch.Tensor, matcher: Matcher, rng: torch.Generator | None = None, state: tuple = ()) -> Choice:
        scores, steps = self.potential(logits, state)
        logp = log_softmax(scores)
        top = float(logp.max())
        geometric = self.variant == "geometric" or (self.variant == "auto" and top >= GEOMETRIC_THRESHOLD)
        token, checks, log_w, exact = (self._geometric if geometric else self._recursive)(logp, matcher, rng)
        if self.weights == "exact" and not exact and token is not None:
            log_w, exact = _log_allowed_mass(logp, matcher), True
        if token is None:
            token = int(torch.where(allowed_tokens(matcher, logits.numel()), logits.float(), -torch.inf).argmax())
        stats, controls = None, None
        if self.controls:
            controls, reported = self.controls.update(state, steps, token)
            stats = StepStats(entropy=entropy_bits(logp), surprise=float(-logp[token]) / LN2, prob=float(np.exp(logp[token])),
                              kept=int(np.isfinite(logp).sum()), controls=reported)
        return Choice(token, checks, exact, log_w=log_w, stats=stats, controls=controls)

    # -- the two estimators; each returns (token or None when dead, checks, log Z-hat, used the mask) ----

    def _recursive(self, logp: np.ndarray, matcher: Matcher, rng: torch.Generator | None):
        live = _LiveDistribution(np.exp(logp))  # sampling without replacement: tested tokens leave it
        checks = 0
        while checks < self.max_checks:
            token = live.draw(_uniform(rng))
            if token is None:
                return None, checks, -math.inf, False  # the whole support was rejected
            checks += 1
            rejected = live.removed  # probability mass of the rejected candidates
            log_q = float(logp[token]) - math.log1p(-min(rejected, 1.0 - 1e-300))
            live.remove(token)
            if matcher.accepts(token):
                nxt = live.draw(_uniform(rng))
                if nxt is None:
                    tail = 0.0  # the accepted token was the last one with positive probability
                else:
                    checks += 1
                    tail = 0.0 if matcher.accepts(nxt) else min(log_q, 0.0)
                return token, checks, math.log1p(-min(rejected, 1.0)) + tail, False
        return self._exact(logp, matcher, rng, None, checks)

    def _geometric(self, logp: np.ndarray, matcher: Matcher, rng: torch.Generator | None):
        live = _LiveDistribution(np.exp(logp))  # rejected tokens are removed from it
        draws, accepted, checks = 0, 0, 0
        known: set[int] = set()
        first = None
        while accepted < 2:
            if live.removed > 0:  # draws that would have hit rejected tokens first
                u = max(_uniform(rng), 1e-300)
                draws += int(math.floor(math.log(u) / math.log(live.removed))) if live.removed < 1 else 0
            token = live.draw(_uniform(rng))
            if token is None:
                return None, checks, -math.inf, False  # every token with positive potential was rejected
            draws += 1
            if token in known or matcher.accepts(token):
                checks += token not in known
                known.add(token)
                accepted += 1
                first = token if first is None else first
                continue
            checks += 1
            live.remove(token)
            if checks >= self.max_checks:
                return self._exact(logp, matcher, rng, first, checks)
        return first, checks, -math.log(draws - 1), False

    def _exact(self, logp: np.ndarray, matcher: Matcher, rng: torch.Generator | None, sample: int | None, checks: int):
        """The full mask: the exact allowed mass as the weight; a sample from it unless one is given."""
        mask = _allowed(logp, matcher)
        if not mask.any():
            return None, checks, -math.inf, True
        z = np.logaddexp.reduce(logp[mask])
        if sample is None:
            probs = torch.from_numpy(np.where(mask, np.exp(logp - z), 0.0))
            sample = int(torch.multinomial(probs, 1, generator=rng))
        return sample, checks, float(z), True


def _allowed(logp: np.ndarray, matcher: Matcher) -> np.ndarray:
    """The tokens the constraint allows and the potential does not rule out (``bool[V]``)."""
    return allowed_tokens(matcher, len(logp)).numpy() & np.isfinite(logp)


def _log_allowed_mass(logp: np.ndarray, matcher: Matcher) -> float:
    """``log Z``: the potential's log mass on the tokens the constraint allows (-inf if none)."""
    mask = _allowed(logp, matcher)
    return log_sum_exp(logp[mask]) if mask.any() else -math.inf


def _uniform(rng: torch.Generator | None) -> float:
    """One uniform draw in [0, 1) from the sequence's random stream."""
    return float(torch.rand(1, generator=rng, dtype=torch.float64))


class _LiveDistribution:
    """A distribution over token ids with a few tokens removed, drawn from by inverse CDF: one
    cumulative sum per step, then ``O(removed * log V)`` per draw, where a Gumbel vector over
    the vocabulary costs ``O(V)`` (two float64 logs per token) per draw. Drawing and removing
    in turn samples without replacement (the recursive estimator); drawing alone, with
    replacement (the geometric one)."""

    def __init__(self, p: np.ndarray) -> None:
        self.p = p / p.sum()
        self.cdf = np.cumsum(self.p)
        self.positive = int(np.count_nonzero(self.p))
        self.holes: list[int] = []  # removed token ids, ascending
        self.removed = 0.0  # their probability mass

    def remove(self, token: int) -> None:
        self.holes.insert(int(np.searchsorted(self.holes, token)), token)
        self.removed += float(self.p[token])

    def draw(self, u: float) -> int | None:
        """The token at live mass ``u * (1 - removed)``; None once every positive token is removed.
        Between consecutive holes the live CDF is the full CDF minus the holes' mass before it."""
        if len(self.holes) >= self.positive:
            return None
        target, offset, previous = u * max(1.0 - self.removed, 0.0), 0.0, -1
        for hole in [*self.holes, len(self.p)]:
            # max(): a rounding error in the offset must not land on the hole just passed
            token = max(int(np.searchsorted(self.cdf, target + offset, side="right")), previous + 1)
            if token < hole and self.p[token] > 0:
                return token
            if hole < len(self.p):
                offset, previous = offset + float(self.p[hole]), hole
        return self._last()

    def _last(self) -> int:
        """The highest live token with positive probability (``u`` rounded past the end)."""
        removed = set(self.holes)
        return next(t for t in np.flatnonzero(self.p)[::-1].tolist() if t not in removed)

