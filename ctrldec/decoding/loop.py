"""The loop: a strategy advances a batch of sequences one step at a time, one forward pass each.

``Batch`` owns the sequences, their ``KVCache`` rows and the ``Runner``; ``Strategy.step``
decides what each live sequence feeds and what it commits; ``run`` is the whole loop::

    while batch.live:
        strategy.step(batch)     # one batched forward pass, then commits
        batch.retire()           # finished sequences leave the cache
        yield

A strategy is a class with ``step(batch)``; everything specific to it (particles, beams, drafts)
lives in its own file under ``search/``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence as Seq
from typing import Any, Protocol, runtime_checkable

from ..controllers.base import Controls

from .kv import KVCache
from .runner import Forward, Runner
from .sequence import GenerationResult, Sequence

__all__ = ["Batch", "Strategy", "StrategyFactory", "run"]


@runtime_checkable
class Strategy(Protocol):
    def step(self, batch: Batch) -> None:
        """Advance every live sequence of ``batch`` by one forward pass."""

    def results(self, batch: Batch) -> list[GenerationResult]:
        """One result per sequence the batch started with (per prompt)."""


class Batch:
    """The sequences one loop decodes together, their KV cache rows, and the pass counts."""

    def __init__(self, runner: Runner, sequences: Seq[Sequence]) -> None:
        self.runner = runner
        self.sequences = list(sequences)
        self.live: list[Sequence] = list(sequences)
        self.kv: KVCache = runner.new_cache(len(self.live))
        for row, seq in enumerate(self.live):
            seq.row = row
        self.passes = 0
        self.started = time.perf_counter()
        self.prefill_s = 0.0
        self._ended: dict[int, float] = {}  # id(sequence) -> seconds since start when it finished

    def forward(self, feeds: Seq[Seq[int]], keep: Seq[int], *, hidden: bool | Seq[int] = False,
                parents: Seq[Seq[int] | None] | None = None) -> Forward:
        """One pass: ``feeds[i]`` for ``self.live[i]``; their ``fed`` counts advance (for a tree
        feed, ``parents``, the caller sets ``fed`` and crops the branches it does not keep)."""
        out = self.runner.forward(self.kv, feeds, keep, hidden=hidden, parents=parents, sequences=self.live)
        for seq, feed in zip(self.live, feeds):
            if feed:
                seq.fed += len(feed)
                seq.counters["passes"] = seq.counters.get("passes", 0) + 1
        self.passes += 1
        if self.passes == 1:
            self.prefill_s = time.perf_counter() - self.started
        return out

    def retire(self) -> None:
        """Finished sequences leave the cache; the others keep their order."""
        if all(not s.finished for s in self.live):
            return
        now = time.perf_counter() - self.started
        for seq in self.live:
            if seq.finished:
                self._ended[id(seq)] = now
        keep = [s for s in self.live if not s.finished]
        self.reassign(keep, [s.row for s in keep])

    def reassign(self, sequences: Seq[Sequence], rows: Seq[int], *, any_order: bool = False) -> None:
        """The live sequences become ``sequences``, sequence ``i`` on the cache row that was
        ``rows[i]`` (rows may repeat: forked or resampled sequences share a prefix). With
        ``any_order`` the live sequences may come out in another order (``KVCache.place_rows``:
        fewer rows copied); strategies that use it find their sequences by ``seq.row``."""
        if not any_order:
            self.kv.select_rows(rows)
            self.live = list(sequences)
        else:
            slots = self.kv.place_rows(rows)
            self.live = [seq for _, seq in sorted(zip(slots.tolist(), sequences), key=lambda p: p[0])]
        for row, seq in enumerate(self.live):
            seq.row = row

    def timing(self, seq: Sequence) -> dict[str, float]:
        """``seq``'s timing: the batch's prefill, the time until it finished, its passes."""
        total = self._ended.get(id(seq), time.perf_counter() - self.started)
        decode = total - self.prefill_s
        timing = {"prefill_s": self.prefill_s, "decode_s": decode, "total_s": total,
                  "forward_passes": seq.counters.get("passes", 0), "batch_size": len(self.sequences),
                  "tokens_per_s": len(seq.ids) / decode if decode > 0 and seq.ids else 0.0}
        timing.update({k: v for k, v in seq.counters.items() if k != "passes"})
        return timing

    def results(self) -> list[GenerationResult]:
        """One result per sequence, in the order given, with its timing."""
        return [seq.result(self.timing(seq)) for seq in self.sequences]


@runtime_checkable
class StrategyFactory(Protocol):
    """A configuration that makes a strategy per generate call (``SMC``): passed as ``sampler=``."""

    controls: Controls

    def strategy(self, drafters: Seq[Any] = ()) -> Strategy:
        """The strategy for one call, using ``drafters``."""


def run(strategy: Strategy, batch: Batch) -> Iterator[None]:
    """Step until every sequence has finished; yields after each step (for streaming)."""
    while batch.live:
        strategy.step(batch)
        batch.retire()
        yield
