"""The verifier: which drafted tokens to keep, exactly.

Two rules, both lossless (the output distribution is that of one-token-at-a-time decoding; the
tests check greedy outputs token for token and sampled ones with chi-square):

* **Sample-and-compare**, for deterministic drafts (forced text, prompt lookup, Token Recycling's
  trees, a greedy draft model) and for samplers whose distribution is not known in closed form
  (mask-free AWRS): at each drafted position the sampler draws the token it would draw without
  the draft (same distribution, same random stream, under the constraint); the draft is kept while
  a draw matches it (in a tree: matches one of the node's children). The first draw that matches
  nothing is itself a correct draw of the next token, so it is committed too: a wrong draft costs
  the width of one pass, never an extra pass. Greedy keeps the draft while it is the argmax.
* **Speculative sampling** (Leviathan et al. 2023), for a chain drafted from a known proposal
  ``q`` (a draft model sampling): draft token ``x`` is kept with probability
  ``min(1, p(x) / q(x))``, where ``p`` is the target's distribution at that position after the
  constraint, the controllers (their states advanced along the kept draft) and the warpers; at the
  first rejection the token is drawn from ``norm(max(0, p - q))``; when all are kept, one more
  token is drawn from ``p``. It keeps more of a sampled draft than sample-and-compare does.
"""

from __future__ import annotations

from typing import Any

import torch

from ..decoding.sequence import Sequence
from ..samplers.base import TokenSampler
from ..samplers.full_mask import FullMask
from ..samplers.sampling import Multinomial
from .drafters import Draft

__all__ = ["Verifier"]


class Verifier:
    """Keeps the exact part of a draft; see the module docstring."""

    def __init__(self) -> None:
        self._targets: dict[int, tuple[Any, FullMask | None]] = {}  # id(sampler) -> (sampler, its FullMask form)

    def verify(self, seq: Sequence, rows: torch.Tensor, draft: Draft, sampler: TokenSampler, *, forced: bool = False,
               ) -> list[int]:
        """Commit the kept draft tokens and the token drawn after them; return the kept draft
        indices (a path from the root: ``[0, 1, ..., k-1]`` for a chain).

        ``rows[0]`` is the distribution after the committed tokens, ``rows[j + 1]`` the one after
        draft token ``j`` (and its ancestors). ``forced``: the loop commits forced text at each
        step (the ``forced`` drafter); a draw after which the constraint fixes text then ends the
        walk, as that loop would commit the text (tokenized canonically) rather than draw the
        next token: the draw is committed and fed with that text in the next pass."""
        target = self._target(sampler) if draft.q is not None and draft.parents is None else None
        if target is not None:
            return self._speculative_sampling(seq, rows, draft, target, sampler, forced)
        return self._sample_and_compare(seq, rows, draft, sampler, forced)

    def _target(self, sampler: TokenSampler) -> FullMask | None:
        """``sampler``'s distribution in closed form (None: known only by sampling it)."""
        known = self._targets.get(id(sampler))
        if known is None or known[0] is not sampler:
            full = sampler if isinstance(sampler, FullMask) else FullMask(sampler.params) if isinstance(sampler, Multinomial) else None
            full = None if full is None or full.params.greedy else full  # greedy: compare with the argmax
            known = self._targets[id(sampler)] = (sampler, full)
        return known[1]

    def _sample_and_compare(self, seq: Sequence, rows: torch.Tensor, draft: Draft, sampler: TokenSampler,
                            forced: bool) -> list[int]:
        children = draft.children()
        path: list[int] = []
        node = -1
        while True:
            row = rows[node + 1]
            choice = sampler.choose(row, seq.matcher, seq.rng, seq.state)
            seq.commit(choice, row)
            nxt = children.get(node, {}).get(choice.token) if choice.token not in seq.eos else None
            if nxt is not None and forced and _fixes_text(seq):
                return path  # the draw stays unfed, as after a mismatch: the forced text follows it
            if nxt is not None:
                path.append(nxt)
                node = nxt
            if nxt is None or seq.finished:
                return path

    def _speculative_sampling(self, seq: Sequence, rows: torch.Tensor, draft: Draft, full: FullMask,
                              sampler: TokenSampler, forced: bool) -> list[int]:
        assert draft.q is not None
        for i, token in enumerate(draft.tokens):
            target = full.target(rows[i], seq.matcher, seq.state)
            p = target.probs.double()
            q = _widen(draft.q[i], p.numel())
            u = float(torch.rand((), generator=seq.rng, dtype=torch.float64))
            if q[token] > 0 and u * float(q[token]) <= float(p[token]):
                seq.commit(target.choice(token), rows[i])
                if token in seq.eos:
                    return list(range(i))
                if seq.finished:
                    return list(range(i + 1))
                if forced and _fixes_text(seq):
                    return list(range(i))
                continue
            residual = (p - q).clamp_(min=0)
            if float(residual.sum()) <= 0:
                residual = p  # p <= q everywhere and p(x) < q(x) at x: only where q is p exactly, never in exact arithmetic
            other = int(torch.multinomial(residual / residual.sum(), 1, generator=seq.rng))
            seq.commit(target.choice(other), rows[i])
            return list(range(i))
        n = len(draft.tokens)
        seq.commit(sampler.choose(rows[n], seq.matcher, seq.rng, seq.state), rows[n])
        return list(range(n))


def _fixes_text(seq: Sequence) -> bool:
    """The constraint fixes the next tokens: the loop's ``forced`` drafter would commit them."""
    return not seq.finished and seq.room > 0 and bool(seq.matcher.forced_tokens())


def _widen(q: Any, width: int) -> torch.Tensor:
    """A drafter's proposal as float64[width] (a draft model's head may be narrower or wider)."""
    q = torch.as_tensor(q, dtype=torch.float64).flatten()
    if q.numel() >= width:
        return q[:width]
    return torch.cat([q, torch.zeros(width - q.numel(), dtype=torch.float64)])
