"""Budget-aware completion: a matcher whose outputs are complete within ``max_tokens`` tokens.

ALGORITHMS.md, "Budget-aware completion". ``BudgetMatcher`` wraps a grammar's matcher and allows
a token only if a complete output still fits in the tokens left after it: the bound
``GrammarMatcher.completion_bound_after`` (a shortest completion's tokens, counted one per byte or
by its own tokenization where fewer; ``compiled._Run.distance``) plus one token for EOS. The
language is the constraint's, narrowed to outputs that end in time; it is never empty once
generation starts, because from every state some token lowers the bound by at least one:

* at the start, ``budgeted`` checks that the shortest output fits (else ``BudgetError``);
* if the output fits before a step (bound + EOS <= tokens left), some allowed token keeps it
  fitting; so every step has a choice and the output is complete (EOS, or a state the
  constraint ends by itself) when the budget runs out.

>>> import ctrldec                                                                 # doctest: +SKIP
>>> m = budgeted(ctrldec.JSONSchema(schema).compile(info).matcher(), 128)         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import BudgetError, DeadEndError, InvalidTokenError
from .bitmask import write_words
from .compiled import UNBOUNDED, GrammarMatcher

__all__ = ["BudgetMatcher", "budgeted"]


def budgeted(matcher: Any, max_tokens: int) -> BudgetMatcher:
    """``matcher`` (a fresh grammar matcher) limited to outputs complete within ``max_tokens``
    tokens, EOS included; ``BudgetError`` when even the shortest output does not fit."""
    if not isinstance(matcher, GrammarMatcher):
        raise BudgetError("budget-aware completion needs a constraint (a grammar, regex or JSON Schema): "
                          "without one every output is complete")
    if max_tokens < 1:
        raise BudgetError(f"max_new_tokens must be at least 1, got {max_tokens}")
    out = BudgetMatcher(matcher, max_tokens)
    need = matcher.completion_bound()
    if need >= UNBOUNDED:
        raise BudgetError("budget-aware completion found no complete output of this constraint to bound its length")
    if need + 1 > out.remaining:
        witness = matcher.shortest_completion()
        shown = "" if witness is None else f" ({witness.decode('utf-8', 'replace')[:80]!r})"
        raise BudgetError(
            f"max_new_tokens={max_tokens} cannot hold a complete output: the shortest one{shown} takes {need} "
            f"tokens plus EOS, so budget-aware completion needs max_new_tokens >= {need + 1}"
        )
    return out


class BudgetMatcher:
    """A ``Matcher`` (``engine/matcher.py``) that allows only tokens after which a complete output
    still fits in the budget (see the module docstring). ``remaining`` is the budget less the
    tokens advanced since it began; a fork has the same budget and counts on from where it was."""

    __slots__ = ("inner", "max_tokens", "_offset")

    def __init__(self, inner: GrammarMatcher, max_tokens: int, *, offset: int | None = None) -> None:
        self.inner = inner
        self.max_tokens = int(max_tokens)
        self._offset = inner.num_tokens if offset is None else offset  # tokens advanced before the budget began

    def __repr__(self) -> str:
        return f"BudgetMatcher({self.inner!r}, remaining={self.remaining})"

    @property
    def remaining(self) -> int:
        """Tokens left in the budget (EOS counts as one)."""
        return self.max_tokens - (self.inner.num_tokens - self._offset)

    @property
    def ended(self) -> bool:
        return self.inner.ended

    @property
    def num_tokens(self) -> int:
        return self.inner.num_tokens

    def _eos(self, token_id: int) -> bool:
        return token_id in self.inner.grammar.info.eos_token_ids

    def accepts(self, token_id: int) -> bool:
        left = self.remaining
        if self._eos(token_id):
            return left >= 1 and self.inner.accepts(token_id)
        # the bound after a token the constraint refuses is UNBOUNDED: one walk answers both
        return left >= 2 and self.inner.completion_bound_after(token_id) <= left - 2

    def advance(self, token_id: int) -> None:
        if not self.accepts(token_id):
            if self.inner.accepts(token_id):
                raise InvalidTokenError(f"token {token_id} does not leave room for a complete output in the "
                                        f"{self.remaining} tokens left of max_new_tokens={self.max_tokens}")
            self.inner.advance(token_id)  # raises, saying why the constraint refuses it
        self.inner.advance(token_id)

    def validate_tokens(self, token_ids: Sequence[int]) -> int:
        probe = self.fork()
        for i, t in enumerate(token_ids):
            if not probe.accepts(t):
                return i
            probe.inner.advance(t)
            if probe.ended:
                return i + 1
        return len(token_ids)

    def rollback(self, n: int = 1) -> None:
        self.inner.rollback(n)

    def fork(self) -> BudgetMatcher:
        return BudgetMatcher(self.inner.fork(), self.max_tokens, offset=self._offset)

    def tokens(self, last: int | None = None) -> list[int]:
        return self.inner.tokens(last)

    def mask(self) -> np.ndarray:
        left = self.remaining
        g = self.inner.grammar
        if left < 1 or self.inner.ended:
            return np.zeros(g.words, dtype=np.uint32)
        return self.inner.budget_mask(left - 2)  # EOS (when the output may end) needs no room after it

    def fill_mask(self, out: Any) -> bool:
        return write_words(self.mask(), out)

    def forced_tokens(self) -> list[int]:
        # Forced bytes lie on every completion, the shortest included, and cost at most one
        # token per byte: they always fit. (The caller still advances them through ``advance``.)
        return self.inner.forced_tokens()

    def viable_prefix(self, data: bytes, *, skip: frozenset[int] | bytes = b"") -> bytes:
        return self.inner.viable_prefix(data, skip=skip)  # a draft's text: its tokens are checked by validate_tokens

    def is_accepting(self) -> bool:
        return self.remaining >= 1 and self.inner.is_accepting()

    def is_done(self) -> bool:
        return self.inner.is_done() or (self.inner.is_accepting() and self.remaining <= 1)

    def check_not_dead(self) -> None:
        if not self.inner.ended and not self.mask().any():
            raise DeadEndError(f"no token fits the {self.remaining} tokens left of max_new_tokens={self.max_tokens} "
                               "(a budget-aware matcher should never get here: please report it)")

    def completion_bound(self) -> int:
        return self.inner.completion_bound()
