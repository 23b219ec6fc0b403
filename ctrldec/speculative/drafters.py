"""Drafters: cheap guesses at the next tokens, for the verifier to check in one forward pass.

A drafter implements ``propose(seq, k) -> Draft`` (at most ``k`` tokens after the sequence's
committed tokens) and may implement ``observe(seq, draft, accepted)`` to learn from the outcome
(``Drafter`` below). Two ship with the loop:

* ``ForcedText``: the tokens the constraint fixes from here (``Matcher.forced_tokens``, tokenized
  canonically after the committed tokens). They are *certain*: the constraint allows nothing
  else, so they are committed without a check, do not feed controllers, and cost no sampling.
* ``PromptLookup``: what followed the output's latest stretch of text where it appeared earlier in
  the prompt or output, whitespace ignored, cut to what the constraint allows.

A new drafter is a class with ``name``, ``propose`` and ``observe``; a toy one is in tests/test_decoding.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..decoding.sequence import Sequence

__all__ = ["Draft", "Drafter", "ForcedText", "PromptLookup"]


@dataclass(frozen=True)
class Draft:
    """Proposed tokens. ``q[i]``: the distribution the drafter sampled token ``i`` from (None for a
    deterministic drafter, whose draft is checked by sample-and-compare); ``certain``: the
    constraint allows nothing else, so the tokens are committed without a check; ``parents``: a
    draft *tree* (``parents[j]`` is the index of token ``j``'s parent, -1 for the committed
    tokens; parents come first), None for a chain."""

    tokens: list[int]
    q: list[Any] | None = None
    certain: bool = False
    parents: list[int] | None = None

    def children(self) -> dict[int, dict[int, int]]:
        """``children[node][token]``: the index of ``node``'s child that drafts ``token`` (-1: the root)."""
        out: dict[int, dict[int, int]] = {}
        for j, token in enumerate(self.tokens):
            out.setdefault(self.parents[j] if self.parents is not None else j - 1, {}).setdefault(token, j)
        return out

    def prefix(self, m: int) -> Draft:
        """The first ``m`` tokens (a tree's parents come first, so this is a tree too)."""
        return Draft(self.tokens[:m], self.q[:m] if self.q is not None else None, self.certain,
                     self.parents[:m] if self.parents is not None else None)

    def _ancestry(self, node: int) -> list[int]:
        """The indices from the root's child down to ``node`` ([] for the root)."""
        chain = []
        while node >= 0:
            chain.append(node)
            node = self.parents[node]  # type: ignore[index]
        return chain[::-1]

    def valid(self, matcher: Any, room: int) -> Draft:
        """The draft cut to what ``matcher`` allows and to paths of at most ``room`` tokens (a
        chain: its valid prefix; a tree: every node whose path is valid). ``matcher`` is forked,
        never changed."""
        if self.parents is None:
            n = matcher.validate_tokens(self.tokens[:room])
            return self if n == len(self.tokens) else Draft(self.tokens[:n], self.q and self.q[:n], self.certain)
        fork = matcher.fork()
        kept: dict[int, int] = {-1: -1}  # old index -> new index
        tokens: list[int] = []
        parents: list[int] = []
        path: list[int] = []  # old indices advanced in ``fork``, root first
        for j, (token, parent) in enumerate(zip(self.tokens, self.parents)):
            if parent not in kept:
                continue  # under a rejected node
            chain = self._ancestry(parent)
            if len(chain) >= room:
                continue
            while path != chain[: len(path)]:
                fork.rollback(1)
                path.pop()
            for node in chain[len(path):]:
                fork.advance(self.tokens[node])
                path.append(node)
            if fork.accepts(token):
                kept[j] = len(tokens)
                tokens.append(token)
                parents.append(kept[parent])
        return Draft(tokens, None, self.certain, parents)


NO_DRAFT = Draft([])


@runtime_checkable
class Drafter(Protocol):
    name: str

    def propose(self, seq: Sequence, k: int) -> Draft:
        """At most ``k`` tokens that may follow ``seq``'s committed tokens."""

    def observe(self, seq: Sequence, draft: Draft, accepted: int) -> None:
        """``accepted`` of ``draft``'s tokens were kept (to adapt, e.g., the draft length)."""


class ForcedText:
    """The tokens the constraint fixes (fast-forward)."""

    name = "forced"

    def propose(self, seq: Sequence, k: int) -> Draft:
        return Draft(seq.matcher.forced_tokens()[:k], certain=True) if k > 0 else NO_DRAFT

    def observe(self, seq: Sequence, draft: Draft, accepted: int) -> None:
        return None


@dataclass
class _LookupState:
    """One sequence's text index: the prompt and output bytes, and the same without whitespace."""

    owner: Any
    synced: int  # output bytes indexed
    text: bytearray
    norm: bytearray  # text without whitespace
    where: list[int]  # position in text of each byte of norm
    length: int  # the draft length, adapted to what is accepted


class PromptLookup:
    """Prompt lookup decoding on text: find the longest recent stretch of the output (24, 12, 6
    or 3 bytes, whitespace ignored) earlier in the prompt or the output, and draft what followed it.

    Matching ignores whitespace, so a compact JSON output still finds the pretty-printed schema
    it copies from; under a constraint the drafted bytes are cut to the longest prefix the
    grammar allows (skipping whitespace it rejects), then tokenized canonically after the
    output's last tokens. Drafts cost nothing to make (~0.1-1 ms) and are checked by the model.
    The draft length adapts per sequence: doubled (up to ``max_draft``) after a fully kept
    draft, cut to what was kept (at least 2) otherwise.
    """

    name = "prompt_lookup"
    _WS = frozenset(b" \t\n\r")
    _MAX_BYTES = 64  # bytes copied per draft: more than 8 tokens of most text
    _NGRAMS = (24, 12, 6, 3)  # non-whitespace bytes matched, longest first
    _ENOUGH = 24  # bytes of continuation that make an occurrence good enough (else an older one is tried)
    _TRIES = 8  # occurrences of an n-gram looked at, newest first

    def __init__(self, max_draft: int = 8, *, adaptive: bool = True) -> None:
        if max_draft < 1:
            raise ValueError(f"max_draft must be at least 1, got {max_draft}")
        self.max_draft = max_draft
        self.adaptive = adaptive

    def __repr__(self) -> str:
        return f"PromptLookup(max_draft={self.max_draft})"

    def propose(self, seq: Sequence, k: int) -> Draft:
        state = self._state(seq)
        k = min(k, state.length)
        if k <= 0:
            return NO_DRAFT
        data = self._continuation(state)
        if data:
            data = seq.matcher.viable_prefix(data, skip=self._WS)
        tokens = seq.info.encode_after(seq.ids, data) if data else None
        # The last token may be cut short by the byte limit or by the grammar: leave it out.
        return Draft(tokens[:-1][:k]) if tokens else NO_DRAFT

    def observe(self, seq: Sequence, draft: Draft, accepted: int) -> None:
        state = self._state(seq)
        n = len(draft.tokens)
        if self.adaptive:
            state.length = min(self.max_draft, state.length * 2) if accepted == n else max(2, accepted + 1)

    def _continuation(self, state: _LookupState) -> bytes:
        """What followed the newest earlier occurrence of the longest matching n-gram; an
        occurrence close to the end (a short period of repeated text) has little after it, so
        older ones are tried until one has ``_ENOUGH`` bytes after it (else the longest is kept)."""
        norm = state.norm
        for n in self._NGRAMS:
            if len(norm) <= n:
                continue
            best = b""
            end = len(norm) - 1
            for _ in range(self._TRIES):
                pos = norm.rfind(norm[-n:], 0, end)  # an earlier occurrence
                if pos < 0:
                    break
                start = state.where[pos + n - 1] + 1
                found = bytes(state.text[start : start + self._MAX_BYTES])
                if len(found) > len(best):
                    best = found
                if len(found) >= self._ENOUGH:
                    break
                end = pos + n - 1
            if best:
                return best
        return b""

    def _state(self, seq: Sequence) -> _LookupState:
        """The sequence's index, brought up to date (rebuilt after a rollback or a fork)."""
        state = seq.extras.get(self)
        data = seq.data
        if state is None or state.owner is not seq or state.synced > len(data):
            length = state.length if state is not None else self.max_draft
            state = _LookupState(seq, 0, bytearray(), bytearray(), [], length)
            self._extend(state, seq.info.decode_bytes(seq.prompt))
            seq.extras[self] = state
        if state.synced < len(data):
            self._extend(state, data[state.synced:])
            state.synced = len(data)
        return state

    def _extend(self, state: _LookupState, data: bytes) -> None:
        base = len(state.text)
        state.text += data
        for i, b in enumerate(data):
            if b not in self._WS:
                state.norm.append(b)
                state.where.append(base + i)
