"""``GrammarLogitsProcessor``: a constraint as a ``transformers`` logits processor.

>>> import ctrldec                                                                 # doctest: +SKIP
>>> model, tok = ctrldec.models.load()                                             # doctest: +SKIP
>>> proc = ctrldec.GrammarLogitsProcessor(ctrldec.Regex(r"(yes|no)\\."), tok)      # doctest: +SKIP
>>> out = model.generate(ids, logits_processor=[proc], max_new_tokens=5)          # doctest: +SKIP

The processor's output is a pure function of the ``input_ids`` prefix it is given (DESIGN.md):
matchers are cached by the token prefix, not by call count, so it is correct under beam search
(rows reordered every step), batches (rows independent), assisted generation (draft prefixes) and
across several ``generate`` calls.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..engine.bitmask import allocate, to_bool_tensor
from ..engine.budget import budgeted
from ..engine.matcher import Matcher
from ..errors import BudgetError, DeadEndError, ModelError
from ..limits import DEFAULT_LIMITS, Limits
from ..vocab import tokenizer_info

if TYPE_CHECKING:  # only for the annotation: the processor uses the constraint's public methods
    from ..constraints.grammar import Constraint

__all__ = ["GrammarLogitsProcessor"]


class GrammarLogitsProcessor:
    """Set the logits of tokens the constraint does not allow to ``-inf``.

    Args:
        constraint: a ``Grammar``, ``Regex``, ``JSONSchema`` (anything with ``compile(info)``
            returning a grammar whose ``matcher()`` is a ``Matcher``).
        tokenizer: the Hugging Face tokenizer (or a ``TokenizerInfo``).
        vocab_size: the model's logits width if it differs from ``len(tokenizer)`` (taken from
            the scores at the first call otherwise).
        eos_token_id: id(s) that end the output (default: the tokenizer's EOS); allowed exactly
            when the output may end, and the only choice once it must end.
        limits: ``max_catch_up`` and ``processor_cache_entries`` (see ``ctrldec.limits``).
        max_new_tokens: budget-aware completion (``ctrldec.engine.budget``): give the same
            ``max_new_tokens`` as ``generate`` and only tokens after which a complete output still
            fits are allowed, so every row is complete and valid when the budget runs out;
            ``BudgetError`` at the first call if the shortest output cannot fit. Off by default
            (it costs a table per new parser state: see the README).

    Rows whose output has ended (EOS, then padding) are left untouched. If scores arrive as
    log-probabilities (beam search), allowed rows are renormalized so beam scores stay comparable.
    A row with no allowed token raises ``DeadEndError`` rather than emitting an invalid token.

    One instance may serve several ``generate`` calls at once, in different threads: matchers
    are cached by prefix in one LRU (``limits.processor_cache_entries`` prefixes) behind a lock,
    and a cached matcher is never changed (a longer prefix gets a fork).
    """

    def __init__(
        self,
        constraint: Constraint,
        tokenizer: Any,
        *,
        vocab_size: int | None = None,
        eos_token_id: int | list[int] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        max_new_tokens: int | None = None,
    ) -> None:
        if max_new_tokens is not None and max_new_tokens < 1:
            raise BudgetError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        self.constraint = constraint
        self.tokenizer = tokenizer
        self.limits = limits
        self._vocab_size = vocab_size
        self._eos = [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
        self._compiled = None
        self._lock = threading.Lock()
        # prefix (int64 token ids as bytes) -> its matcher, least recently used first
        self._prefixes: OrderedDict[bytes, Matcher] = OrderedDict()

    def _grammar(self, width: int):
        with self._lock:
            if self._compiled is None:
                info = tokenizer_info(self.tokenizer, self._vocab_size or width)
                if self._eos is not None and tuple(self._eos) != info.eos_token_ids:
                    info = info.with_eos(self._eos)
                self._compiled = self.constraint.compile(info)
        return self._compiled

    def compiled(self, width: int):
        """The constraint compiled for this tokenizer and a logits width of ``width`` (once)."""
        return self._grammar(width)

    def reset(self) -> None:
        """Forget cached prefixes (never needed for correctness; frees memory)."""
        with self._lock:
            self._prefixes.clear()

    def matcher_for(self, row: Any) -> Matcher:
        """The matcher after the generated part of ``row`` (token ids), reusing the longest cached
        prefix at most ``limits.max_catch_up`` tokens back; with none, ``row`` is a new prompt."""
        ids = np.asarray(row, dtype=np.int64)
        key = ids.tobytes()
        with self._lock:
            found = self._lookup(key)
            if found is None:
                found = self._continue(key, ids)
                self._prefixes[key] = found
                if len(self._prefixes) > self.limits.processor_cache_entries:
                    self._prefixes.popitem(last=False)
        return found

    def _lookup(self, key: bytes) -> Matcher | None:
        found = self._prefixes.get(key)
        if found is not None:
            self._prefixes.move_to_end(key)
        return found

    def _continue(self, key: bytes, ids: np.ndarray) -> Matcher:
        """A new matcher for ``ids``: a cached parent's fork advanced over the rest, else a new
        prompt's. Holds: the caller has the lock."""
        n = len(ids)
        for back in range(1, min(self.limits.max_catch_up, n) + 1):
            parent = self._lookup(key[: 8 * (n - back)])
            if parent is None:
                continue
            m = parent.fork()
            for t in ids[n - back :].tolist():
                if m.ended:
                    break  # a finished row of a batch is padded after its EOS: nothing to check
                m.advance(t)
            return m
        fresh = self._compiled.matcher()  # type: ignore[union-attr]
        return fresh if self.max_new_tokens is None else budgeted(fresh, self.max_new_tokens)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows, width = scores.shape
        broken = torch.isnan(scores) | torch.isposinf(scores)
        if bool(broken.any()):
            row, token = (int(i) for i in broken.nonzero()[0])
            raise ModelError(f"the scores passed to the processor hold a NaN or inf (row {row}, token {token}): "
                             "no distribution to constrain (check the model's weights and dtype)")
        self.compiled(width)
        words = allocate(rows, width)
        untouched = np.zeros(rows, dtype=bool)
        for i, row in enumerate(input_ids.cpu().numpy()):
            m = self.matcher_for(row)
            if m.ended:
                untouched[i] = True
                continue
            if not m.fill_mask(words[i]):
                m.check_not_dead()
                raise DeadEndError("no token is allowed and the output may not end")  # pragma: no cover
        allowed = to_bool_tensor(words, width).to(scores.device)
        if untouched.any():
            allowed[torch.from_numpy(untouched).to(scores.device)] = True
        is_logprob = bool((scores <= 0).all()) and bool(
            torch.allclose(torch.logsumexp(scores.float(), dim=-1), torch.zeros(rows, device=scores.device), atol=1e-3)
        )
        out = scores.masked_fill(~allowed, float("-inf"))
        if is_logprob:
            out = torch.log_softmax(out.float(), dim=-1).to(scores.dtype)
        return out

