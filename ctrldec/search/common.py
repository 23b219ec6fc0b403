"""What the search strategies share: fast-forward of a beam, and one step's constrained log-probabilities."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from ..decoding.sequence import Sequence
from ..engine.matcher import Unconstrained
from ..samplers.base import allowed_tokens
from ..speculative.drafters import Drafter, ForcedText

__all__ = ["certain_drafters", "fast_forward", "constrained_logp"]


def certain_drafters(drafters: Seq[Drafter]) -> list[Drafter]:
    """The drafters a search keeps: those whose drafts are certain (forced text). A search decides
    every token itself, so a speculative draft (prompt lookup) has nothing to be checked against."""
    return [d for d in drafters if isinstance(d, ForcedText)]


def fast_forward(seq: Sequence, drafters: Seq[Drafter]) -> None:
    """Commit the tokens the constraint fixes after ``seq``'s last token (they cost no choice)."""
    for drafter in drafters:
        if seq.finished:
            return
        draft = drafter.propose(seq, seq.room)
        if draft.certain and draft.tokens:
            seq.commit_forced(draft.tokens)


def constrained_logp(logits: torch.Tensor, seq: Sequence) -> torch.Tensor:
    """``log p~``: the step's log-probabilities restricted to what ``seq``'s matcher allows and
    renormalized (float32, ``-inf`` where not allowed), as beam search under transformers'
    ``logits_processor`` sees them."""
    logits = logits.float()
    m = seq.matcher
    if not (isinstance(m, Unconstrained) and m.vocab_size >= logits.numel()):  # unconstrained: no mask to build
        logits = logits.masked_fill(~allowed_tokens(seq.matcher, logits.numel()), float("-inf"))
    return torch.log_softmax(logits, dim=-1)
