"""Adaptive draft size: cut each draft where the expected tokens per second peak.

Two things decide how much of a draft is worth scoring: how likely each drafted token is to be
kept, and what a wider forward pass costs. Both are measured online:

* per drafter and per draft position ``j`` (a chain's depth, a tree's node in breadth-first
  order), the share of verifications that kept token ``j`` (a Beta(1, 1) prior);
* per batch size and pass width (tokens fed per row), the wall time of the loop's forward
  passes (an exponential average; widths not measured yet are interpolated, optimistically, so
  they get tried).

A draft of ``m`` tokens then yields ``1 + sum(p_j, j < m)`` tokens (every verification commits one
token of its own) for ``cost(width + m)``; the draft is cut to the best ``m`` (0: no draft this
step). A drafter that runs a model (early exit, a draft model) also costs the time it takes to
draft, measured per drafter: it is not asked at all while even its best cut, with that time
added, would give fewer tokens per second than no draft (``worth_asking``; it is asked anyway
after 16, 32, 64, ... skipped chances, so that its figures can recover at a cost that fades).
Its draft's time is spent before the cut, so only this question saves it.

On a CPU, where a pass of 4 tokens costs 1.6x a pass of 1 but one of 3 barely more, this
keeps drafts short unless they are very likely kept; on a GPU, where width is nearly free, it
keeps them whole. SpecDec++ stops on a rejection-risk threshold alone; the cost curve is what
makes the same rule right on both.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .drafters import Draft

__all__ = ["DraftSizer"]

_EMA = 0.2
_PRIOR_SLOPE = 0.05  # relative cost of one more token per row before anything is measured
_FREE = 0.02  # a drafter whose draft takes under this share of a pass is always asked (lookups, tables)
_EXPLORE = 16  # a drafter not worth asking is asked again after this many chances, then twice as many, ...


class DraftSizer:
    """Online acceptance per drafter and position, online cost per pass width; see the module docstring."""

    def __init__(self, longest: int = 64) -> None:
        self.longest = longest
        self._kept: dict[str, np.ndarray] = {}
        self._seen: dict[str, np.ndarray] = {}
        self._cost: dict[tuple[int, int], float] = {}  # (rows, width) -> seconds
        self._drafting: dict[str, tuple[float, float]] = {}  # drafter -> (seconds, tokens) of a draft, averaged
        self._skipped: dict[str, int] = {}
        self._lock = threading.Lock()

    def acceptance(self, drafter: str) -> np.ndarray:
        """The estimated chance each draft position is kept."""
        kept, seen = self._stats(drafter)
        return (kept + 1) / (seen + 2)

    def cost(self, rows: int, width: int) -> float:
        """Estimated seconds of a pass of ``rows`` rows ``width`` tokens wide (relative units
        until something is measured)."""
        known = self._cost.get((rows, width))
        if known is not None:
            return known
        measured = sorted((w, c) for (r, w), c in self._cost.items() if r == rows)
        if not measured:
            return 1.0 + _PRIOR_SLOPE * (width - 1)
        below = [(w, c) for w, c in measured if w < width]
        above = [(w, c) for w, c in measured if w > width]
        if below and above:  # interpolate between the nearest measured widths
            (w0, c0), (w1, c1) = below[-1], above[0]
            return c0 + (c1 - c0) * (width - w0) / (w1 - w0)
        w0, c0 = (below[-1] if below else above[0])
        return c0 * (1.0 + _PRIOR_SLOPE * (width - w0))  # optimistic: so that it gets measured

    def measured(self, rows: int, width: int, seconds: float) -> None:
        """One forward pass of the loop took ``seconds``."""
        with self._lock:
            old = self._cost.get((rows, width))
            self._cost[(rows, width)] = seconds if old is None else (1 - _EMA) * old + _EMA * seconds

    def cut(self, draft: Draft, drafter: str, rows: int, fed: int, width: int) -> int:
        """How many of ``draft``'s tokens to score, for a row that feeds ``fed`` other tokens in a
        pass otherwise ``width`` wide (the widest other row)."""
        n = min(len(draft.tokens), self.longest)
        if n == 0:
            return 0
        gain = np.concatenate([[1.0], 1.0 + np.cumsum(self.acceptance(drafter)[:n])])
        costs = np.array([self.cost(rows, max(width, fed + m)) for m in range(n + 1)])
        return int(np.argmax(gain / costs))

    def drafted(self, drafter: str, seconds: float, tokens: int) -> None:
        """Making one speculative draft of ``tokens`` tokens took ``seconds``."""
        with self._lock:
            old = self._drafting.get(drafter)
            self._drafting[drafter] = (seconds, tokens) if old is None else (
                (1 - _EMA) * old[0] + _EMA * seconds, (1 - _EMA) * old[1] + _EMA * tokens)

    def worth_asking(self, drafter: str, rows: int, fed: int) -> bool:
        """Whether a draft from ``drafter`` can pay for the time it takes to make, for a row that
        feeds ``fed`` tokens in a pass of ``rows`` rows: some cut ``m`` must give more tokens per
        second, ``(rows + sum(p_j, j < m)) / (cost(fed + m) + drafting time)``, than no draft,
        ``rows / cost(fed)``. Drafters that take no measurable time are always asked."""
        made = self._drafting.get(drafter)
        if made is None or made[0] < _FREE * self.cost(rows, max(fed, 1)):
            return True
        seconds, n = made[0], min(self.longest, max(1, math.ceil(made[1])))  # cuts up to its usual length
        gain = rows + np.cumsum(self.acceptance(drafter)[:n])
        costs = np.array([self.cost(rows, fed + m) for m in range(1, n + 1)]) + seconds
        if float((gain / costs).max()) > rows / self.cost(rows, max(fed, 1)):
            self._skipped.pop(drafter, None)
            return True
        with self._lock:
            self._skipped[drafter] = skipped = self._skipped.get(drafter, 0) + 1
        return skipped >= _EXPLORE and not skipped & (skipped - 1)  # asked again at 16, 32, 64, ... skips

    def observe(self, drafter: str, scored: int, path: list[int]) -> None:
        """A verification of ``scored`` draft tokens kept the nodes ``path``."""
        with self._lock:
            kept, seen = self._stats(drafter)
            seen[:scored] += 1
            kept[[j for j in path if j < self.longest]] += 1

    def _stats(self, drafter: str) -> tuple[np.ndarray, np.ndarray]:
        if drafter not in self._kept:
            self._kept[drafter] = np.zeros(self.longest)
            self._seen[drafter] = np.zeros(self.longest)
        return self._kept[drafter], self._seen[drafter]
