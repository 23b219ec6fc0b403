"""``Sampling``: each sequence draws its own tokens (greedy or sampled); drafts verified exactly.

The first strategy, and what ``ctrldec.generate`` runs by default. One step, per live sequence:

1. certain drafts (the constraint's forced tokens) are committed at once (fast-forward);
2. the first speculative drafter with something to say proposes a draft (prompt lookup);
3. one forward pass for the whole batch feeds every sequence's unfed tokens and its draft;
4. the rows of forced tokens give their log-probabilities; the verifier keeps the draft while the
   sampler's draws agree with it and commits the first draw that differs (or the one after the
   draft), so every step commits at least one sampled token;
5. the KV row is cropped to what was kept.

A sequence that finishes on forced tokens gets one last pass only to score them.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

from ..decoding.loop import Batch
from ..decoding.sequence import GenerationResult, Sequence
from ..samplers.base import TokenSampler
from ..speculative.drafters import NO_DRAFT, Draft, Drafter
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


class Sampling:
    """Independent sequences drawn by ``sampler``, with ``drafters`` checked by ``verifier``."""

    speculative = True  # False: certain drafts (forced text) only; a subclass that must sample every step

    def __init__(self, sampler: TokenSampler, drafters: Seq[Drafter] = (), verifier: Verifier | None = None) -> None:
        self.sampler = sampler
        self.drafters = list(drafters)
        self.verifier = verifier or Verifier()

    def step(self, batch: Batch) -> None:
        plans = [self._plan(seq) for seq in batch.live]
        if not any(p.feed for p in plans):
            return  # every sequence finished with nothing left to score
        out = batch.forward([p.feed for p in plans], [p.keep for p in plans])
        for seq, plan, rows in zip(batch.live, plans, out.logits):
            self._settle(seq, plan, rows, batch)

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
            draft = drafter.propose(seq, seq.room)
            if draft.certain:
                seq.commit_forced(draft.tokens)
            elif self.speculative:
                n = seq.matcher.validate_tokens(draft.tokens[: seq.room - 1])  # cut at the first invalid token
                if n:
                    return Draft(draft.tokens[:n], draft.q and draft.q[:n]), drafter
        return NO_DRAFT, None

    def _settle(self, seq: Sequence, plan: _Plan, rows, batch: Batch) -> None:
        if plan.scored:
            seq.score(rows[: plan.scored])
        if plan.draft is None:
            return
        fed = seq.fed
        kept = self.verifier.verify(seq, rows[plan.scored:], plan.draft, self.sampler)
        if plan.draft.tokens:
            seq.counters["drafted"] = seq.counters.get("drafted", 0) + len(plan.draft.tokens)
            seq.counters["draft_accepted"] = seq.counters.get("draft_accepted", 0) + kept
            plan.drafter.observe(seq, plan.draft, kept)  # type: ignore[union-attr]
        seq.fed = fed - len(plan.draft.tokens) + kept
        batch.kv.crop(seq.row, seq.fed)
