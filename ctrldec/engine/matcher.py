"""The ``Matcher`` protocol every layer above the engine uses, and the ``Unconstrained`` matcher.

One matcher per sequence being decoded. A grammar's matcher (``GrammarMatcher``, from
``Constraint.matcher(tokenizer)``) and ``Unconstrained`` (no constraint: every token allowed, EOS
ends the output) satisfy the same protocol, so the decoding loop, samplers and verifiers never
ask whether there is a constraint.

>>> m = Unconstrained(vocab_size=5, eos_token_ids=[4])
>>> m.accepts(3), m.validate_tokens([1, 2, 4, 0]), m.is_done()
(True, 3, False)
>>> m.advance(4); m.is_done(), m.accepts(1)
(True, False)
>>> m.rollback(1); m.is_done()
False
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidTokenError
from .bitmask import words_for

__all__ = ["Matcher", "Unconstrained"]


@runtime_checkable
class Matcher(Protocol):
    """What a sequence's constraint answers (DESIGN.md, "The Matcher protocol")."""

    @property
    def ended(self) -> bool:
        """True once EOS was advanced."""

    @property
    def num_tokens(self) -> int:
        """How many tokens were advanced (EOS included)."""

    def accepts(self, token_id: int) -> bool:
        """Would ``token_id`` keep the output viable? No state change."""

    def advance(self, token_id: int) -> None:
        """Consume one token; ``InvalidTokenError`` if it is not allowed."""

    def validate_tokens(self, token_ids: Sequence[int]) -> int:
        """How many of ``token_ids``, in order, are allowed (a draft's valid prefix). No state change."""

    def rollback(self, n: int = 1) -> None:
        """Undo the last ``n`` advanced tokens."""

    def fork(self) -> Matcher:
        """An independent copy."""

    def tokens(self, last: int | None = None) -> list[int]:
        """The advanced token ids (the last ``last`` of them)."""

    def mask(self) -> np.ndarray:
        """The allowed-token bitmask (``engine.bitmask`` layout); read-only."""

    def fill_mask(self, out: Any) -> bool:
        """Write the bitmask into ``out``; False when no token at all is allowed."""

    def forced_tokens(self) -> list[int]:
        """Tokens the constraint fixes from here, canonically tokenized."""

    def viable_prefix(self, data: bytes, *, skip: frozenset[int] | bytes = b"") -> bytes:
        """The longest prefix of ``data`` the output may continue with (bytes in ``skip`` dropped)."""

    def is_accepting(self) -> bool:
        """May the output end here?"""

    def is_done(self) -> bool:
        """Must the output end here?"""

    def check_not_dead(self) -> None:
        """Raise ``DeadEndError`` if no token (EOS included) is allowed."""


class Unconstrained:
    """Every token id below ``vocab_size`` is allowed; advancing an EOS id ends the output.

    The history is persistent (a linked tuple), so ``fork`` is O(1) like a grammar matcher's.
    """

    __slots__ = ("vocab_size", "eos_token_ids", "_trail", "_length", "_ended", "_mask")

    def __init__(self, vocab_size: int, eos_token_ids: Iterable[int] = ()) -> None:
        self.vocab_size = int(vocab_size)
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        self._trail: tuple | None = None  # (previous trail, token)
        self._length = 0
        self._ended = False
        self._mask: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Unconstrained(tokens={self._length}, ended={self._ended})"

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def num_tokens(self) -> int:
        return self._length

    def accepts(self, token_id: int) -> bool:
        return not self._ended and 0 <= token_id < self.vocab_size

    def advance(self, token_id: int) -> None:
        if not self.accepts(token_id):
            why = "the output has ended" if self._ended else f"ids run from 0 to {self.vocab_size - 1}"
            raise InvalidTokenError(f"token {token_id} is not allowed after {self._length} tokens: {why}")
        self._trail = (self._trail, token_id)
        self._length += 1
        self._ended = token_id in self.eos_token_ids

    def validate_tokens(self, token_ids: Sequence[int]) -> int:
        if self._ended:
            return 0
        for i, t in enumerate(token_ids):
            if not 0 <= t < self.vocab_size:
                return i
            if t in self.eos_token_ids:
                return i + 1
        return len(token_ids)

    def rollback(self, n: int = 1) -> None:
        if not 0 <= n <= self._length:
            raise ValueError(f"cannot roll back {n} tokens: only {self._length} were advanced")
        for _ in range(n):
            self._trail = self._trail[0]  # type: ignore[index]
        self._length -= n
        self._ended = False  # only the last token can be EOS, and nothing follows it

    def fork(self) -> Unconstrained:
        other = Unconstrained.__new__(Unconstrained)
        other.vocab_size, other.eos_token_ids, other._mask = self.vocab_size, self.eos_token_ids, self._mask
        other._trail, other._length, other._ended = self._trail, self._length, self._ended
        return other

    def tokens(self, last: int | None = None) -> list[int]:
        out = []
        trail = self._trail
        while trail is not None and (last is None or len(out) < last):
            out.append(trail[1])
            trail = trail[0]
        return out[::-1]

    def mask(self) -> np.ndarray:
        if self._ended:
            return np.zeros(words_for(self.vocab_size), dtype=np.uint32)
        if self._mask is None:
            mask = np.full(words_for(self.vocab_size), 0xFFFFFFFF, dtype=np.uint32)
            if self.vocab_size % 32:
                mask[-1] = (1 << (self.vocab_size % 32)) - 1
            mask.flags.writeable = False
            self._mask = mask
        return self._mask

    def fill_mask(self, out: Any) -> bool:
        mask = self.mask()
        target = (out.numpy() if hasattr(out, "numpy") else out).view(np.uint32)
        n = min(len(target), len(mask))
        target[:n] = mask[:n]
        target[n:] = 0
        return not self._ended

    def forced_tokens(self) -> list[int]:
        return []

    def viable_prefix(self, data: bytes, *, skip: frozenset[int] | bytes = b"") -> bytes:
        return b"" if self._ended else bytes(data)

    def is_accepting(self) -> bool:
        return not self._ended

    def is_done(self) -> bool:
        return self._ended

    def check_not_dead(self) -> None:
        return None
