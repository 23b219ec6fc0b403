"""Log-probabilities and entropies of one step's logits: the arithmetic samplers, controllers and
the decoding loop share.

It runs in numpy float64: one vocabulary-sized vector per step is too small for torch's intra-op
threads to pay off (on a loaded CPU their hand-offs cost milliseconds), and float64 keeps the
log-probabilities of very unlikely tokens exact.

>>> import numpy as np
>>> logp = log_softmax(np.log([0.5, 0.25, 0.25]))
>>> [round(float(x), 4) for x in np.exp(logp)], round(entropy_bits(logp), 4)
([0.5, 0.25, 0.25], 1.5)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["LN2", "as_float64", "log_softmax", "log_sum_exp", "entropy_bits"]

LN2 = math.log(2.0)


def as_float64(scores: Any) -> np.ndarray:
    """A torch tensor or array-like as a float64 numpy array (no copy when it already is one)."""
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    return np.asarray(scores, dtype=np.float64)


def log_softmax(scores: Any) -> np.ndarray:
    """Natural-log probabilities over the last axis; ``-inf`` scores stay ``-inf``."""
    x = as_float64(scores)
    top = x.max(axis=-1, keepdims=True)
    return x - (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))


def log_sum_exp(x: np.ndarray) -> float:
    """``log(sum(exp(x)))`` of a non-empty 1-D array of finite values, without overflow (~20x
    faster than ``np.logaddexp.reduce`` over a vocabulary)."""
    top = float(x.max())
    return top + math.log(float(np.exp(x - top).sum()))


def entropy_bits(logp: np.ndarray) -> float:
    """Entropy in bits of a 1-D vector of natural-log probabilities (``-inf`` entries excluded)."""
    finite = np.isfinite(logp)
    return float(-(np.exp(logp[finite]) * logp[finite]).sum()) / LN2
