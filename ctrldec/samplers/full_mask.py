"""``FullMask``: the whole constrained distribution, then controllers, then transformers' warpers.

What ``model.generate(..., logits_processor=[GrammarLogitsProcessor, *controllers])`` draws: the
mask, the controllers in order (Mirostat, entropy temperature), then temperature, top-k, top-p,
min-p (transformers' own warpers, in its order), then ``torch.multinomial`` (argmax when greedy).
With the same seed and logits, the same token as ``model.generate``. Controllers need the whole
distribution, and so do per-step diagnostics (entropy, surprise), so both use this sampler.
"""

from __future__ import annotations

import numpy as np
import torch

from ..controllers.base import Controls, StepStats
from ..engine.matcher import Matcher
from ..numeric import LN2, entropy_bits, log_softmax
from .base import Choice, SamplingParams, masked

__all__ = ["FullMask", "Target", "transformers_warpers"]


def transformers_warpers(params: SamplingParams) -> list:
    """transformers' own warpers for ``params``, in the order ``model.generate`` applies them."""
    from transformers import MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if params.greedy:
        return []
    return (([TemperatureLogitsWarper(params.temperature)] if params.temperature != 1 else [])
            + ([TopKLogitsWarper(params.top_k)] if params.top_k else [])
            + ([TopPLogitsWarper(params.top_p)] if params.top_p < 1 else [])
            + ([MinPLogitsWarper(params.min_p)] if params.min_p > 0 else []))


class FullMask:
    """Sample from the full constrained distribution after ``controls`` and the warpers of ``params``.

    Every choice carries ``StepStats`` (entropy, surprise and probability of the token under the
    constrained distribution, tokens kept, the controllers' reports) and the controller states
    after the token.
    """

    def __init__(self, params: SamplingParams | None = None, controls: Controls | None = None) -> None:
        self.params = params or SamplingParams()
        self.controls = controls or Controls()
        self._warpers = transformers_warpers(self.params)

    def __repr__(self) -> str:
        return f"FullMask({self.params}, {list(self.controls.controllers)})"

    def choose(self, logits: torch.Tensor, matcher: Matcher, rng: torch.Generator | None = None, state: tuple = ()) -> Choice:
        target = self.target(logits, matcher, state)
        if self.params.greedy:
            token = int(target.scores.argmax())
        else:
            token = int(torch.multinomial(target.probs[None], 1, generator=rng)[0, 0])
        return target.choice(token)

    def target(self, logits: torch.Tensor, matcher: Matcher, state: tuple = ()) -> Target:
        """The distribution ``choose`` draws from at this step (for the verifier's rejection rule)."""
        base = masked(logits.float(), matcher)
        scores, steps = self.controls.warp(base, state)
        scores = scores[None]
        for warper in self._warpers:
            scores = warper(None, scores)
        return Target(self, base, scores[0], torch.softmax(scores[0], dim=-1), state, steps)


class Target:
    """One step's distribution under ``FullMask``: ``probs`` (after mask, controllers and warpers),
    and ``choice(token)``, the ``Choice`` of committing ``token`` (statistics, controller states)."""

    def __init__(self, sampler: FullMask, base: torch.Tensor, scores: torch.Tensor, probs: torch.Tensor, state: tuple,
                 steps: list) -> None:
        self.sampler, self.base, self.scores, self.probs, self.state, self.steps = sampler, base, scores, probs, state, steps

    def choice(self, token: int) -> Choice:
        new_state, controls = self.sampler.controls.update(self.state, self.steps, token)
        logp = log_softmax(self.base)
        stats = StepStats(entropy=entropy_bits(logp), surprise=float(-logp[token]) / LN2, prob=float(np.exp(logp[token])),
                          kept=int(torch.isfinite(self.scores).sum()), forced=int(np.isfinite(logp).sum()) <= 1,
                          controls=controls)
        log_q = 0.0 if self.sampler.params.greedy else float(torch.log(self.probs[token]))
        return Choice(token, 0, True, log_q=log_q, stats=stats, controls=new_state)
