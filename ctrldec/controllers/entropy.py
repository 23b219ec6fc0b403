"""Entropy-adaptive temperature: sample confident steps cooler, uncertain ones hotter.

``T = t_min + (t_max - t_min) * (H / log N)^exponent``, with ``H`` the entropy of the
(constrained) distribution and ``N`` the number of allowed tokens.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..numeric import LN2, entropy_bits, log_softmax
from .base import StepStats
from .mirostat import check_positive

__all__ = ["EntropyTemperature"]


class EntropyTemperature:
    """Temperature from the normalized entropy of the (constrained) distribution:
    ``T = t_min + (t_max - t_min) * (H / log N)^exponent``, N the number of allowed tokens.

    A step with one allowed token is left as it is. Stateless, so one instance serves any number
    of sequences; it is a ``transformers`` logits processor too.

    >>> import torch
    >>> et = EntropyTemperature(0.5, 1.5)
    >>> round(et.temperature(torch.zeros(4)), 3)    # uniform: H / log N = 1
    1.5
    >>> round(et.temperature(torch.tensor([10.0, 0.0, float("-inf")])), 2)  # nearly certain
    0.5
    """

    def __init__(self, t_min: float, t_max: float, exponent: float = 1.0) -> None:
        check_positive("t_min", t_min)
        check_positive("t_max", t_max)
        check_positive("exponent", exponent)
        if t_min > t_max:
            raise ValueError(f"t_min must be <= t_max, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max, self.exponent = float(t_min), float(t_max), float(exponent)

    def __repr__(self) -> str:
        return f"EntropyTemperature(t_min={self.t_min}, t_max={self.t_max}, exponent={self.exponent})"

    def temperature(self, scores: torch.Tensor) -> float:
        logp = log_softmax(scores)
        n = int(np.isfinite(logp).sum())
        if n <= 1:
            return 1.0
        h = min(1.0, entropy_bits(logp) * LN2 / math.log(n))
        return self.t_min + (self.t_max - self.t_min) * h**self.exponent

    # -- the Controller protocol ------------------------------------------------------------------------

    def init(self) -> None:
        return None

    def warp(self, scores: torch.Tensor, state: Any) -> tuple[torch.Tensor, float]:
        t = self.temperature(scores)
        return scores / t, t

    def update(self, state: Any, step: float, token: int) -> tuple[Any, StepStats]:
        return state, StepStats(controls={"temperature": step})

    def report(self, state: Any) -> dict[str, float]:
        return {}

    # -- logits processor (model.generate) -------------------------------------------------------------

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return torch.stack([self.warp(row.float(), None)[0].to(scores.dtype) for row in scores])
