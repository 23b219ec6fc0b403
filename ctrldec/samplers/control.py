"""Controllers: Mirostat (v1, v2) and entropy-adaptive temperature.

Both work on the distribution they are given: under a constraint, that is the masked (constrained)
distribution, so they compose with ``GrammarLogitsProcessor`` placed before them, and inside
ctrldec's loop (``generate(..., controllers=[...])``) they see the masked distribution too.

Each is a ``transformers`` logits processor (``__call__(input_ids, scores) -> scores``) and also
offers a per-sequence interface the loop uses (``init`` / ``warp`` / ``update``).

>>> import torch, ctrldec
>>> m = ctrldec.Mirostat(tau=1.0, eta=0.5)
>>> state = m.init()                       # mu = 2 * tau
>>> scores, step = m.warp(torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])), state)
>>> [round(float(x), 2) for x in torch.softmax(scores, -1)]   # -log2 p <= 2 bits: p >= 0.25
[0.62, 0.38, 0.0, 0.0]
>>> state, stats = m.update(state, step, token=1)
>>> round(stats.surprise, 3), round(state.mu, 3)       # -log2 0.3; mu - eta * (1.737 - tau)
(1.737, 1.632)

Mirostat (Basu et al., ICLR 2021): the target ``tau`` is a surprise in bits; ``mu`` starts at
``2 * tau``. v2 keeps the tokens whose surprise is at most ``mu`` (at least the most likely one);
v1 estimates the Zipf exponent ``s`` of the top ``m`` probabilities and keeps the top
``k = (e * 2^mu / (1 - N^-e))^(1/s)`` tokens, ``e = s - 1``, ``N`` the number of allowed tokens.
After the token ``x`` is drawn: ``mu <- mu - eta * (S(x) - tau)``, with the surprise ``S(x)``
taken under the ``"original"`` distribution (the one the controller received: the reference
implementation's convention, our default) or the ``"truncated"`` renormalized one (llama.cpp's).
A step with a single allowed token is *forced*: its surprise is 0 by construction, it does not
update ``mu`` (otherwise structure a grammar fixes would push ``mu`` up without bound).

Under a constraint, ``tau`` can be out of reach: when most steps are nearly determined by the
grammar, even keeping every allowed token gives less surprise than ``tau`` and ``mu`` grows;
``ctrldec bench mirostat`` reports where.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Mirostat", "MirostatState", "EntropyTemperature", "StepStats", "zipf_exponent", "mirostat_k",
           "entropy_bits", "choose_controlled"]

_LN2 = math.log(2.0)
# Surprises this close to mu count as equal: float32 logits carry ~1e-7 relative error, and a
# token exactly at the boundary (a probability of 2^-mu) should be kept.
_TIE_BITS = 1e-6


@dataclass(frozen=True)
class StepStats:
    """What happened at one step, relative to the distribution the controllers received
    (the constrained one): its entropy (bits), the chosen token's surprise ``-log2 p`` (bits)
    and probability, the ``mu`` used at this step (None without Mirostat), the number of
    tokens kept, the temperature applied (1.0 without ``EntropyTemperature``) and whether the
    step was forced (one allowed token)."""

    entropy: float
    surprise: float
    prob: float
    mu: float | None = None
    kept: int = 0
    temperature: float = 1.0
    forced: bool = False


@dataclass(frozen=True)
class MirostatState:
    """Mirostat's per-sequence state: ``mu`` (bits). Immutable, so forking or rolling back a
    sequence is keeping the state object it had."""

    mu: float


@dataclass(frozen=True)
class _Pending:
    """What ``update`` needs once the token is known."""

    logprobs: np.ndarray  # natural-log probabilities the surprise is measured under
    original: np.ndarray  # natural-log probabilities of the distribution received
    mu: float
    kept: int
    forced: bool


# The per-step arithmetic runs in numpy: one vocabulary-sized vector per step is too small for
# torch's intra-op threads to pay off, and on a loaded CPU their hand-offs cost milliseconds.
def _log_softmax(scores: torch.Tensor | np.ndarray) -> np.ndarray:
    x = (scores.detach().cpu().numpy() if torch.is_tensor(scores) else np.asarray(scores)).astype(np.float64)
    top = x.max()
    return x - (top + np.log(np.exp(x - top).sum()))


def _entropy_of(logp: np.ndarray) -> float:
    finite = np.isfinite(logp)
    return float(-(np.exp(logp[finite]) * logp[finite]).sum()) / _LN2


def entropy_bits(scores: torch.Tensor | np.ndarray) -> float:
    """Entropy in bits of ``softmax(scores)`` (1-D; ``-inf`` entries are excluded)."""
    return _entropy_of(_log_softmax(scores))


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
    log_k = (math.log(ratio) + mu * _LN2) / s
    if log_k >= math.log(n):
        return n
    return max(1, min(n, int(round(math.exp(log_k)))))


def _check_positive(name: str, value: float) -> None:
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
    under batches and beam search and across ``generate`` calls.
    """

    def __init__(self, tau: float, eta: float = 1.0, *, version: int = 2, m: int = 100, surprise: str = "original",
                 callback: Callable[[int, StepStats], None] | None = None) -> None:
        _check_positive("tau", tau)
        _check_positive("eta", eta)
        if version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {version!r}")
        if not (isinstance(m, int) and m >= 2):
            raise ValueError(f"m must be an integer >= 2, got {m!r}")
        if surprise not in ("original", "truncated"):
            raise ValueError(f"surprise must be 'original' or 'truncated', got {surprise!r}")
        self.tau, self.eta, self.version, self.m, self.surprise = float(tau), float(eta), version, m, surprise
        self.callback = callback
        self._pending: dict[bytes, tuple[MirostatState, _Pending]] = {}

    def __repr__(self) -> str:
        return f"Mirostat(tau={self.tau}, eta={self.eta}, version={self.version}, m={self.m}, surprise={self.surprise!r})"

    # -- per-sequence interface (ctrldec's loop) ----------------------------------------------------

    def init(self) -> MirostatState:
        return MirostatState(2.0 * self.tau)

    def warp(self, scores: torch.Tensor, state: MirostatState) -> tuple[torch.Tensor, _Pending]:
        """Truncate 1-D ``scores`` (``-inf`` = not allowed) for this step."""
        logp = _log_softmax(scores)
        allowed = np.isfinite(logp)
        n = int(allowed.sum())
        if n <= 1:
            return scores, _Pending(logp, logp, state.mu, n, True)
        if self.version == 2:
            keep = -logp / _LN2 <= state.mu + _TIE_BITS
            keep[int(logp.argmax())] = True
        else:
            k = mirostat_k(zipf_exponent(np.exp(logp[allowed]), self.m), state.mu, n)
            kth = -np.partition(-logp, k - 1)[k - 1]
            keep = logp >= kth  # ties with the k-th are kept, as in top-k warpers
        out = scores.masked_fill(~torch.from_numpy(keep), float("-inf"))
        measured = logp if self.surprise == "original" else _log_softmax(np.where(keep, logp, -np.inf))
        return out, _Pending(measured, logp, state.mu, int(keep.sum()), False)

    def update(self, state: MirostatState, step: _Pending, token: int) -> tuple[MirostatState, StepStats]:
        """The state after ``token`` was drawn at ``step``, and that step's statistics."""
        original = step.original
        surprise = float(-step.logprobs[token]) / _LN2
        stats = StepStats(entropy=_entropy_of(original), surprise=float(-original[token]) / _LN2,
                          prob=float(np.exp(original[token])), mu=step.mu, kept=step.kept, forced=step.forced)
        if step.forced:
            return state, stats
        return MirostatState(state.mu - self.eta * (surprise - self.tau)), stats

    # -- logits processor (model.generate) ----------------------------------------------------------

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        pending: dict[bytes, tuple[MirostatState, _Pending]] = {}
        for i, row in enumerate(input_ids):
            state = self._observe(i, row)
            warped, step = self.warp(scores[i].float(), state)
            out[i] = warped.to(scores.dtype)
            pending[row.cpu().numpy().tobytes()] = (state, step)
        self._pending = pending
        return out

    def _observe(self, i: int, row: torch.Tensor) -> MirostatState:
        """The state for ``row``: its parent prefix's state updated with its last token."""
        parent = self._pending.get(row[:-1].cpu().numpy().tobytes()) if row.numel() > 1 else None
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
        self._pending = {}


class EntropyTemperature:
    """Temperature from the normalized entropy of the (constrained) distribution:
    ``T = t_min + (t_max - t_min) * (H / log N)^exponent``, N the number of allowed tokens.

    Confident steps (low entropy) are sampled cooler, uncertain ones hotter. A step with one
    allowed token is left as it is.

    >>> import torch
    >>> et = EntropyTemperature(0.5, 1.5)
    >>> round(et.temperature(torch.zeros(4)), 3)    # uniform: H / log N = 1
    1.5
    >>> round(et.temperature(torch.tensor([10.0, 0.0, float("-inf")])), 2)  # nearly certain
    0.5
    """

    def __init__(self, t_min: float, t_max: float, exponent: float = 1.0) -> None:
        _check_positive("t_min", t_min)
        _check_positive("t_max", t_max)
        _check_positive("exponent", exponent)
        if t_min > t_max:
            raise ValueError(f"t_min must be <= t_max, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max, self.exponent = float(t_min), float(t_max), float(exponent)

    def __repr__(self) -> str:
        return f"EntropyTemperature(t_min={self.t_min}, t_max={self.t_max}, exponent={self.exponent})"

    def temperature(self, scores: torch.Tensor) -> float:
        logp = _log_softmax(scores)
        n = int(np.isfinite(logp).sum())
        if n <= 1:
            return 1.0
        h = min(1.0, _entropy_of(logp) * _LN2 / math.log(n))
        return self.t_min + (self.t_max - self.t_min) * h**self.exponent

    def init(self) -> None:
        return None

    def warp(self, scores: torch.Tensor, state: Any) -> tuple[torch.Tensor, float]:
        t = self.temperature(scores)
        return scores / t, t

    def update(self, state: Any, step: float, token: int) -> tuple[Any, None]:
        return state, None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return torch.stack([self.warp(row.float(), None)[0].to(scores.dtype) for row in scores])


def choose_controlled(logits: torch.Tensor, matcher: Any, params: Any, generator: torch.Generator | None,
                      controllers: list[Any], states: list[Any], *, width: int | None = None) -> tuple[int, StepStats]:
    """Pick the next token from the whole distribution, the way ``model.generate`` does with
    ``logits_processor=[GrammarLogitsProcessor, *controllers]``: mask, the controllers in
    order, then temperature, top-k, top-p, min-p (transformers' own warpers, in its order), then
    ``torch.multinomial`` (or argmax when greedy). ``states`` is updated in place.

    Same seed, same logits: the same token as ``model.generate`` draws.
    """
    from transformers import MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from .sampling import _allowed

    base = logits.float()
    if width is not None and base.numel() > width:
        base = base[:width]
    if matcher is not None:
        base = base.masked_fill(~torch.from_numpy(_allowed(matcher, base.numel())), float("-inf"))
    scores = base
    steps = []
    for c, state in zip(controllers, states):
        scores, step = c.warp(scores, state)
        steps.append(step)
    scores = scores[None]
    if not params.greedy:
        warpers = ([TemperatureLogitsWarper(params.temperature)] if params.temperature != 1 else []) + \
            ([TopKLogitsWarper(params.top_k)] if params.top_k else []) + \
            ([TopPLogitsWarper(params.top_p)] if params.top_p < 1 else []) + \
            ([MinPLogitsWarper(params.min_p)] if params.min_p > 0 else [])
        for warper in warpers:
            scores = warper(None, scores)
        token = int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)[0, 0])
    else:
        token = int(scores[0].argmax())
    mu = None
    temperature = 1.0
    for j, (c, step) in enumerate(zip(controllers, steps)):
        states[j], info = c.update(states[j], step, token)
        if isinstance(c, Mirostat):
            mu = info.mu
        elif isinstance(c, EntropyTemperature):
            temperature = step
    logp = _log_softmax(base)
    n = int(np.isfinite(logp).sum())
    return token, StepStats(entropy=_entropy_of(logp), surprise=float(-logp[token]) / _LN2, prob=float(np.exp(logp[token])),
                            mu=mu, kept=int(np.isfinite(scores.numpy()).sum()), temperature=temperature, forced=n <= 1)
