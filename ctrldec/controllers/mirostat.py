"""Mirostat (v1, v2): keep the surprise of the generated text at a target.

Mirostat (Basu et al., ICLR 2021): the target ``tau`` is a surprise in bits; ``mu`` starts at
``2 * tau``. v2 keeps the tokens whose surprise is at most ``mu`` (at least the most likely one);
v1 estimates the Zipf exponent ``s`` of the top ``m`` probabilities and keeps the top
``k = (e * 2^mu / (1 - N^-e))^(1/s)`` tokens, ``e = s - 1``, ``N`` the number of allowed tokens.
After the token ``x`` is drawn: ``mu <- mu - eta * (S(x) - tau)``, with the surprise ``S(x)``
taken under the ``"original"`` distribution (the one the controller received: the reference
implementation's convention, our default) or the ``"truncated"`` renormalized one (llama.cpp's).
A step with a single allowed token is *forced*: its surprise is 0 by construction, it does not
update ``mu`` (otherwise structure a grammar fixes would push ``mu`` up without bound).

It works on the distribution it is given: under a constraint, the masked one, so it composes with
``GrammarLogitsProcessor`` placed before it, and inside ctrldec's loop it sees the masked
distribution too. Under a constraint ``tau`` can be out of reach: when most steps are nearly
determined by the grammar, even keeping every allowed token gives less surprise than ``tau`` and
``mu`` grows; ``ctrldec bench mirostat`` reports where.

>>> import torch, ctrldec
>>> m = ctrldec.Mirostat(tau=1.0, eta=0.5)
>>> state = m.init()                       # mu = 2 * tau
>>> scores, step = m.warp(torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])), state)
>>> [round(float(x), 2) for x in torch.softmax(scores, -1)]   # -log2 p <= 2 bits: p >= 0.25
[0.62, 0.38, 0.0, 0.0]
>>> state, stats = m.update(state, step, token=1)
>>> round(stats.surprise, 3), round(state.mu, 3)       # -log2 0.3; mu - eta * (1.737 - tau)
(1.737, 1.632)
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..numeric import LN2, entropy_bits, log_softmax
from .base import StepStats

__all__ = ["Mirostat", "MirostatState", "MirostatStep", "zipf_exponent", "mirostat_k"]

# Surprises this close to mu count as equal: float32 logits carry ~1e-7 relative error, and a
# token exactly at the boundary (a probability of 2^-mu) should be kept.
_TIE_BITS = 1e-6
# Prefixes the logits processor remembers (one per row of each recent call; 16-byte keys): enough
# for several concurrent generate calls with large beams, a few hundred KB at most.
_MAX_REMEMBERED = 8192


@dataclass(frozen=True)
class MirostatState:
    """Mirostat's per-sequence state: ``mu`` (bits). Immutable, so forking or rolling back a
    sequence is keeping the state object it had."""

    mu: float


@dataclass(frozen=True)
class MirostatStep:
    """What ``update`` needs once the token is known."""

    logprobs: np.ndarray  # natural-log probabilities the surprise is measured under
    original: np.ndarray  # natural-log probabilities of the distribution received
    mu: float
    kept: int
    forced: bool


def zipf_exponent(probs: np.ndarray | torch.Tensor, m: int = 100) -> float:
    """Least-squares Zipf exponent of the ``m`` largest probabilities (Mirostat v1's estimate):
    ``s = sum(t_i b_i) / sum(t_i^2)`` with ``t_i = log((i+1)/i)`` and ``b_i = log(p_i/p_{i+1})``,
    i = 1..m-1, over the positive probabilities in descending order.

    >>> round(zipf_exponent([1 / i**1.3 for i in range(1, 200)]), 6)
    1.3
    """
    p = np.sort(np.asarray(probs, dtype=np.float64).ravel())[::-1]
    p = p[p > 0][:m]
    if len(p) < 2:
        return float("inf")  # one candidate: any k keeps just it
    i = np.arange(1, len(p), dtype=np.float64)
    t = np.log((i + 1) / i)
    b = np.log(p[:-1] / p[1:])
    return float((t * b).sum() / (t * t).sum())


def mirostat_k(s: float, mu: float, n: int) -> int:
    """Mirostat v1's ``k = (e * 2^mu / (1 - n^-e))^(1/s)``, ``e = s - 1``, rounded, in [1, n].

    Computed in logs (``mu`` may be large under a constraint); ``e -> 0`` takes the limit
    ``1 / ln n``.

    >>> mirostat_k(1.1, 5.0, 49152)    # (0.1 * 32 / (1 - 49152**-0.1)) ** (1 / 1.1) = 4.2
    4
    """
    if n <= 1 or not math.isfinite(s):
        return 1
    if s <= 0:
        return n  # a flat or rising head: no truncation to speak of
    e = s - 1.0
    ln_n = math.log(n)
    ratio = 1.0 / ln_n if abs(e * ln_n) < 1e-12 else e / -math.expm1(-e * ln_n)
    log_k = (math.log(ratio) + mu * LN2) / s
    if log_k >= math.log(n):
        return n
    return max(1, min(n, int(round(math.exp(log_k)))))


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


class Mirostat:
    """Mirostat v1/v2: keep the surprise of the generated text at ``tau`` bits.

    Args:
        tau: target surprise in bits (> 0). llama.cpp's default is 5.0, the paper's 3.0.
        eta: learning rate of ``mu`` (> 0). 1.0 (the paper's, our default) reaches mu's
            equilibrium within a few tokens; llama.cpp's 0.1 takes hundreds, and until then the
            mean surprise misses tau by ``(mu_0 - mu_T) / (eta * T)`` after T tokens (measured on
            the default model, tau 3, 200 tokens: -0.21 bits at 0.1).
        version: 2 (truncate by surprise) or 1 (Zipf estimate, top-k).
        m: v1's number of top probabilities for the Zipf estimate.
        surprise: ``"original"`` (default) or ``"truncated"``: the distribution the surprise
            of the chosen token is measured under (see the module docstring).
        callback: for ``model.generate`` users, called as ``callback(row, stats)`` with a
            ``StepStats`` for each sampled token, once it is known (at the next call; call
            ``flush(sequences)`` after ``generate`` for each row's last token).

    As a logits processor (``model.generate(..., logits_processor=[grammar, mirostat],
    do_sample=True, top_k=0)``) the state is keyed by the row's token prefix, so it is right
    under batches and beam search, across ``generate`` calls, and when one instance serves
    several threads at once. Inside ctrldec's loop each sequence carries its own state.
    """

    def __init__(self, tau: float, eta: float = 1.0, *, version: int = 2, m: int = 100, surprise: str = "original",
                 callback: Callable[[int, StepStats], None] | None = None) -> None:
        check_positive("tau", tau)
        check_positive("eta", eta)
        if version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {version!r}")
        if not (isinstance(m, int) and m >= 2):
            raise ValueError(f"m must be an integer >= 2, got {m!r}")
        if surprise not in ("original", "truncated"):
            raise ValueError(f"surprise must be 'original' or 'truncated', got {surprise!r}")
        self.tau, self.eta, self.version, self.m, self.surprise = float(tau), float(eta), version, m, surprise
        self.callback = callback
        self._pending: OrderedDict[bytes, tuple[MirostatState, MirostatStep]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Mirostat(tau={self.tau}, eta={self.eta}, version={self.version}, m={self.m}, surprise={self.surprise!r})"

    # -- per-sequence interface (the Controller protocol) ----------------------------------------------

    def init(self) -> MirostatState:
        return MirostatState(2.0 * self.tau)

    def warp(self, scores: torch.Tensor, state: MirostatState) -> tuple[torch.Tensor, MirostatStep]:
        """Truncate 1-D ``scores`` (``-inf`` = not allowed) for this step."""
        logp = log_softmax(scores)
        allowed = np.isfinite(logp)
        n = int(allowed.sum())
        if n <= 1:
            return scores, MirostatStep(logp, logp, state.mu, n, True)
        if self.version == 2:
            keep = -logp / LN2 <= state.mu + _TIE_BITS
            keep[int(scores.argmax())] = True  # the scores' own argmax: logp can tie where scores do not
        else:
            k = mirostat_k(zipf_exponent(np.exp(logp[allowed]), self.m), state.mu, n)
            kth = -np.partition(-logp, k - 1)[k - 1]
            keep = logp >= kth  # ties with the k-th are kept, as in top-k warpers
        out = scores.masked_fill(~torch.from_numpy(keep), float("-inf"))
        measured = logp if self.surprise == "original" else log_softmax(np.where(keep, logp, -np.inf))
        return out, MirostatStep(measured, logp, state.mu, int(keep.sum()), False)

    def update(self, state: MirostatState, step: MirostatStep, token: int) -> tuple[MirostatState, StepStats]:
        """The state after ``token`` was drawn at ``step``, and that step's statistics."""
        original = step.original
        surprise = float(-step.logprobs[token]) / LN2
        stats = StepStats(entropy=entropy_bits(original), surprise=float(-original[token]) / LN2,
                          prob=float(np.exp(original[token])), kept=step.kept, forced=step.forced,
                          controls={"mu": step.mu})
        if step.forced:
            return state, stats
        return MirostatState(state.mu - self.eta * (surprise - self.tau)), stats

    def report(self, state: MirostatState) -> dict[str, float]:
        return {"mu": state.mu}

    # -- logits processor (model.generate) -------------------------------------------------------------

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        for i, row in enumerate(input_ids):
            state = self._observe(i, row)
            warped, step = self.warp(scores[i].float(), state)
            out[i] = warped.to(scores.dtype)
            self._remember(_key(row), (state, step))
        return out

    def _remember(self, key: bytes, value: tuple[MirostatState, MirostatStep]) -> None:
        with self._lock:
            self._pending[key] = value
            self._pending.move_to_end(key)
            while len(self._pending) > _MAX_REMEMBERED:
                self._pending.popitem(last=False)

    def _observe(self, i: int, row: torch.Tensor) -> MirostatState:
        """The state for ``row``: its parent prefix's state updated with its last token."""
        with self._lock:
            parent = self._pending.get(_key(row[:-1])) if row.numel() > 1 else None
        if parent is None:
            return self.init()  # a new prompt (or a prefix this processor has not seen)
        state, stats = self.update(parent[0], parent[1], int(row[-1]))
        if self.callback is not None:
            self.callback(i, stats)
        return state

    def flush(self, sequences: torch.LongTensor) -> None:
        """Report (to ``callback``) the last token of each row of ``model.generate``'s output."""
        for i, row in enumerate(sequences):
            self._observe(i, row)


def _key(row: torch.Tensor) -> bytes:
    """A 16-byte digest of a token prefix (rows can be thousands of tokens long)."""
    return hashlib.blake2b(row.cpu().numpy().astype(np.int64).tobytes(), digest_size=16).digest()
