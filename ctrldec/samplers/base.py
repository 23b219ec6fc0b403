"""The ``TokenSampler`` protocol: which token comes next, and with which weight.

A sampler sees one step's logits, the sequence's ``Matcher`` (``Unconstrained`` without a
constraint), its random generator and its controller states; it returns a ``Choice``. It never
changes the matcher: the caller commits the token. Samplers hold no per-sequence state, so one
instance serves every sequence of a batch, in any thread.

A new sampler implements ``choose``::

    class FirstAllowed:                       # the lowest allowed token id, deterministically
        controls = Controls()

        def choose(self, logits, matcher, rng=None, state=()):
            token = next(t for t in range(logits.numel()) if matcher.accepts(t))
            return Choice(token, checks=token + 1, log_q=0.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..controllers.base import Controls, StepStats
from ..engine.matcher import Matcher

__all__ = ["SamplingParams", "Choice", "TokenSampler"]


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


@dataclass(frozen=True)
class Choice:
    """One sampled token.

    ``checks``: ``Matcher.accepts`` calls it took; ``full_mask``: the whole mask was computed;
    ``log_q``: log-probability of the token under the distribution it was drawn from, when the
    sampler knows it (a mask-free sampler does not know the normaliser: None); ``log_w``: the log
    importance weight of the draw (0 for samplers that are exact for their target, AWRS's log Z
    estimate); ``stats`` and ``controls``: the step's statistics and the controller states after
    it (samplers that run controllers or diagnostics).
    """

    token: int
    checks: int = 0
    full_mask: bool = False
    log_q: float | None = None
    log_w: float = 0.0
    stats: StepStats | None = None
    controls: tuple | None = None


@runtime_checkable
class TokenSampler(Protocol):
    controls: Controls  # the controllers it runs (each sequence keeps their states)

    def choose(self, logits: torch.Tensor, matcher: Matcher, rng: torch.Generator | None = None,
               state: tuple = ()) -> Choice:
        """Pick the next token from 1-D ``logits`` under ``matcher``; ``state``: the sequence's
        controller states (``Controls.init()``)."""


def allowed_tokens(matcher: Matcher, width: int) -> torch.Tensor:
    """The matcher's full mask as ``bool[width]`` (raises ``DeadEndError`` when nothing is allowed)."""
    from ..engine.bitmask import to_bool_tensor

    mask = matcher.mask()
    if not mask.any():  # computed once: a budget matcher's mask is not cached (check_not_dead would build it again)
        matcher.check_not_dead()
    return to_bool_tensor(mask, width)


def masked(logits: torch.Tensor, matcher: Matcher) -> torch.Tensor:
    """``logits`` with the tokens the matcher does not allow set to ``-inf``."""
    return logits.masked_fill(~allowed_tokens(matcher, logits.numel()), float("-inf"))

