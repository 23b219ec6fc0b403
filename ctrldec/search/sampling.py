"""``Sampling``: each sequence draws its own tokens (greedy or sampled); drafts verified exactly.

The first strategy, and what ``ctrldec.generate`` runs by default. One step, per live sequence:

1. certain drafts (the constraint's forced tokens) are committed at once (fast-forward);
2. the first speculative drafter with something to say proposes a draft (a chain or a tree),
   cut to what the constraint allows;
3. one forward pass for the whole batch feeds every sequence's unfed tokens and its draft (a tree
   under a tree attention mask);
4. the rows of forced tokens give their log-probabilities; drafters that learn from the model's
   outputs (Token Recycling) see every row; the verifier keeps the draft while the sampler's
   draws agree with it and commits the first draw that differs (or the one after the draft), so
   every step commits at least one sampled token;
5. the KV row is cropped to what was kept (a tree's rejected branches become holes).

A sequence that finishes on forced tokens gets one last pass only to score them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass

from ..decoding.loop import Batch
from ..decoding.sequence import GenerationResult, Sequence
from ..samplers.base import TokenSampler
from ..speculative.adaptive import DraftSizer
from ..speculative.drafters import NO_DRAFT, Draft, Drafter, ForcedText
from ..speculative.verifier import Verifier

__all__ = ["Sampling"]


@dataclass
class _Plan:
    feed: list[int]
    scored: int  # leading kept rows that score forced tokens
    draft: Draft | None  # None: nothing to verify (the sequence has finished, or must end)
    drafter: Drafter | None = None
    ends: bool = False  # keep the row after the feed: the EOS step's distribution

    @property
    def keep(self) -> int:
        return self.scored + (len(self.draft.tokens) + 1 if self.draft is not None else 0) + self.ends

    def parents(self) -> list[int] | None:
        """The feed as a tree (``KVCache.step_layout``), for a tree draft; None for a chain."""
        if self.draft is None or self.draft.parents is None:
            return None
        chain = len(self.feed) - len(self.draft.tokens)
        return list(range(-1, chain - 1)) + [chain - 1 if p < 0 else chain + p for p in self.draft.parents]


class Sampling:
    """Independent sequences drawn by ``sampler``, with ``drafters`` checked by ``verifier``."""

    speculative = True  # False: certain drafts (forced text) only; a subclass that must sample every step

    def __init__(self, sampler: TokenSampler, drafters: Seq[Drafter] = (), verifier: Verifier | None = None,
                 sizer: DraftSizer | None = None) -> None:
        self.sampler = sampler
        self.drafters = list(drafters)
        self.verifier = verifier or Verifier()
        self.sizer = sizer  # cuts drafts to the size with the most expected tokens per second (None: whole drafts)
        self.learners = [d for d in self.drafters if callable(getattr(d, "learn", None))]
        self._forced = any(isinstance(d, ForcedText) for d in self.drafters)  # forced text is committed each step
        self._rows = 1  # live sequences in the current step

    def step(self, batch: Batch) -> None:
        self._rows = len(batch.live)
        plans = [self._plan(seq) for seq in batch.live]
        if not any(p.feed for p in plans):
            return  # every sequence finished with nothing left to score
        if self.sizer is not None:
            self._size(plans)
        trees = [p.parents() for p in plans]
        started = time.perf_counter()
        out = batch.forward([p.feed for p in plans], [p.keep for p in plans],
                            parents=trees if any(t is not None for t in trees) else None)
        if self.sizer is not None and batch.passes > 1:  # not the prefill
            self.sizer.measured(len(plans), max(len(p.feed) for p in plans), time.perf_counter() - started)
        for seq, plan, rows in zip(batch.live, plans, out.logits):
            for drafter in self.learners:
                drafter.learn(seq, plan.feed[len(plan.feed) - plan.keep:], rows)
            self._settle(seq, plan, rows, batch)
        batch.kv.compact_if_sparse()

    def results(self, batch: Batch) -> list[GenerationResult]:
        return batch.results()

    def _plan(self, seq: Sequence) -> _Plan:
        draft, drafter = self._draft(seq)
        scored = seq.unscored
        if seq.finished:
            return _Plan(seq.unfed[:-1] if scored else [], scored, None)
        return _Plan(seq.unfed + draft.tokens, scored, draft, drafter)

    def _draft(self, seq: Sequence) -> tuple[Draft, Drafter | None]:
        """Commit certain drafts; return the first speculative one, cut at its first token the
        constraint does not allow and to room - 1 tokens (so that the token drawn after it fits)."""
        for drafter in self.drafters:
            if seq.finished:
                break
            if self.speculative and self.sizer is not None and not self.sizer.worth_asking(drafter.name, self._rows, len(seq.unfed)):
                continue  # its drafts have not paid for the time they take
            started = time.perf_counter()
            draft = drafter.propose(seq, seq.room)
            if not draft.certain and self.sizer is not None:
                self.sizer.drafted(drafter.name, time.perf_counter() - started, len(draft.tokens))
            if draft.certain:
                seq.commit_forced(draft.tokens)
            elif self.speculative and draft.tokens:
                draft = draft.valid(seq.matcher, seq.room - 1)  # cut at the first invalid token
                fed = len(seq.unfed)
                if draft.tokens and (self.sizer is None or self.sizer.cut(draft, drafter.name, 1, fed, fed)):
                    return draft, drafter  # else the next drafter may have a draft worth scoring
        return NO_DRAFT, None

    def _size(self, plans: list[_Plan]) -> None:
        """Cut each draft to the size ``self.sizer`` expects the most tokens per second from."""
        base = max(len(p.feed) - (len(p.draft.tokens) if p.draft is not None else 0) for p in plans)
        for plan in plans:
            if plan.draft is None or not plan.draft.tokens:
                continue
            n = len(plan.draft.tokens)
            fed = len(plan.feed) - n
            m = self.sizer.cut(plan.draft, plan.drafter.name, len(plans), fed, base)  # type: ignore[union-attr]
            if m < n:
                plan.draft = plan.draft.prefix(m)
                plan.feed = plan.feed[: fed + m]

    def _settle(self, seq: Sequence, plan: _Plan, rows, batch: Batch) -> None:
        if plan.scored:
            seq.score(rows[: plan.scored])
        if plan.draft is None:
            return
        fed = seq.fed
        draft = plan.draft
        path = self.verifier.verify(seq, rows[plan.scored:], draft, self.sampler, forced=self._forced)
        kept = len(path)
        if draft.tokens:
            _count(seq, "drafted", len(draft.tokens), plan.drafter.name)  # type: ignore[union-attr]
            _count(seq, "draft_accepted", kept, plan.drafter.name)  # type: ignore[union-attr]
            _count(seq, "verified", 1, plan.drafter.name)  # type: ignore[union-attr]
            plan.drafter.observe(seq, draft, kept)  # type: ignore[union-attr]
            if self.sizer is not None:
                self.sizer.observe(plan.drafter.name, len(draft.tokens), path)  # type: ignore[union-attr]
        seq.fed = fed - len(draft.tokens) + kept
        if draft.parents is not None:
            on_path = set(path)  # the draft is the row's last len(draft) columns: count back from the end
            batch.kv.forget(seq.row, [j - len(draft.tokens) for j in range(len(draft.tokens)) if j not in on_path])
        batch.kv.crop(seq.row, seq.fed)


def _count(seq: Sequence, what: str, n: int, drafter: str) -> None:
    """Add to a sequence's totals and to the drafter's own (``timing["drafted"]``, ``timing["drafted/prompt_lookup"]``)."""
    for key in (what, f"{what}/{drafter}"):
        seq.counters[key] = seq.counters.get(key, 0) + n
