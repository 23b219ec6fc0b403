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

from typing import Any

import numpy as np
import torch

from ..constraints.grammar import Constraint
from ..engine.compiled import Matcher
from ..errors import DeadEndError

__all__ = ["GrammarLogitsProcessor", "masks_to_bool"]

# How far back (in tokens) a row may be from a cached prefix: covers assisted generation drafts.
_MAX_CATCH_UP = 32


def masks_to_bool(words: np.ndarray, width: int) -> torch.Tensor:
    """``uint32[rows, words]`` bitmasks -> ``bool[rows, width]`` (padding columns False)."""
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")
    if bits.shape[-1] < width:
        bits = np.pad(bits, ((0, 0), (0, width - bits.shape[-1])))
    return torch.from_numpy(bits[:, :width].astype(bool))


class GrammarLogitsProcessor:
    """Set the logits of tokens the constraint does not allow to ``-inf``.

    Args:
        constraint: a ``Grammar``, ``Regex`` (or any ``Constraint``).
        tokenizer: the Hugging Face tokenizer (or a ``TokenizerInfo``).
        vocab_size: the model's logits width if it differs from ``len(tokenizer)`` (taken from
            the scores at the first call otherwise).
        eos_token_id: id(s) that end the output (default: the tokenizer's EOS); allowed exactly
            when the output may end, and the only choice once it must end.

    Rows whose output has ended (EOS, then padding) are left untouched. If scores arrive as
    log-probabilities (beam search), allowed rows are renormalized so beam scores stay comparable.
    A row with no allowed token raises ``DeadEndError`` rather than emitting an invalid token.
    """

    def __init__(
        self,
        constraint: Constraint,
        tokenizer: Any,
        *,
        vocab_size: int | None = None,
        eos_token_id: int | list[int] | None = None,
    ) -> None:
        self.constraint = constraint
        self.tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos = [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
        self._compiled = None
        # prefix (tuple of ids) -> Matcher, bucketed by length so stale lengths can be dropped.
        self._by_len: dict[int, dict[tuple, Matcher]] = {}

    def _grammar(self, width: int):
        if self._compiled is None:
            from ..constraints.grammar import tokenizer_info
            from ..vocab import TokenizerInfo

            info = tokenizer_info(self.tokenizer, self._vocab_size or width)
            if self._eos is not None and tuple(self._eos) != info.eos_token_ids:
                info = TokenizerInfo(info.token_bytes, special_ids=info.special_ids, eos_token_ids=self._eos,
                                     kind=info.kind, encode=info._encode)
            self._compiled = self.constraint.compile(info)
        return self._compiled

    def reset(self) -> None:
        """Forget cached prefixes (never needed for correctness; frees memory)."""
        self._by_len.clear()

    def matcher_for(self, row: list[int]) -> Matcher:
        """The matcher after the generated part of ``row``, reusing the longest cached prefix."""
        key = tuple(row)
        n = len(key)
        found = self._by_len.get(n, {}).get(key)
        if found is not None:
            return found
        for back in range(1, min(_MAX_CATCH_UP, n) + 1):
            parent = self._by_len.get(n - back, {}).get(key[: n - back])
            if parent is None:
                continue
            m = parent.fork()
            for t in key[n - back :]:
                if m.ended:
                    break  # a finished row of a batch is padded after its EOS: nothing to check
                m.advance(t)
            self._by_len.setdefault(n, {})[key] = m
            return m
        m = self._compiled.matcher()  # a new prompt
        self._by_len.setdefault(n, {})[key] = m
        return m

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows, width = scores.shape
        self._grammar(width)
        n = input_ids.shape[1]
        for length in [k for k in self._by_len if not n - _MAX_CATCH_UP <= k <= n]:
            del self._by_len[length]
        words = np.zeros((rows, (width + 31) // 32), dtype=np.uint32)
        untouched = np.zeros(rows, dtype=bool)
        for i, row in enumerate(input_ids.tolist()):
            m = self.matcher_for(row)
            if m.ended:
                untouched[i] = True
                continue
            if not m.fill_mask(words[i]):
                m.check_not_dead()
                raise DeadEndError("no token is allowed and the output may not end")  # pragma: no cover
        allowed = masks_to_bool(words, width).to(scores.device)
        if untouched.any():
            allowed[torch.from_numpy(untouched).to(scores.device)] = True
        is_logprob = bool((scores <= 0).all()) and bool(
            torch.allclose(torch.logsumexp(scores.float(), dim=-1), torch.zeros(rows, device=scores.device), atol=1e-3)
        )
        out = scores.masked_fill(~allowed, float("-inf"))
        if is_logprob:
            out = torch.log_softmax(out.float(), dim=-1).to(scores.dtype)
        return out

