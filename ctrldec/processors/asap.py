"""``ASApLogitsProcessor``: ASAp's reweighting inside ``model.generate`` (samplers/asap.py).

>>> import ctrldec
>>> model, tok = ctrldec.models.load()                                                # doctest: +SKIP
>>> oracle = ctrldec.ASApOracle()
>>> proc = oracle.logits_processor(ctrldec.Regex("cat|car|dog"), tok)                 # doctest: +SKIP
>>> for _ in range(10):                                                               # doctest: +SKIP
...     out = model.generate(ids, logits_processor=[proc], do_sample=True, num_return_sequences=8,
...                          max_new_tokens=8, pad_token_id=tok.eos_token_id)
...     proc.observe(out)                      # the round's samples teach the oracle

The scores it returns are the model's log-probabilities with the constraint's mask and
``log EFG~`` of the node's children added (``-inf`` where the constraint forbids): with
``do_sample=True`` and no other warper, the next token is ASAp's. Keep the temperature at 1 (the
oracle learns the model's own distribution); greedy decoding or beams are meaningless with it.

**When the oracle learns.** Only from ``observe(sequences)``: call it with what ``generate``
returned (the rows, prompt included, or the ``GenerateOutput``). During one ``generate`` call the
oracle does not change, so the processor's output is a pure function of the prefix it is given
(DESIGN.md), and a call is one round (every row sampled with the estimates as they were when it
began, like ``generate_batch`` in ctrldec's loop). ``model.generate`` never shows a processor the
last token it samples, so the processor could not learn from finished rows by itself anyway.

State per prefix, like every ctrldec processor: the matcher (a ``GrammarLogitsProcessor`` inside),
the trie node and the path of steps so far (``limits.processor_cache_entries`` prefixes, LRU), and
the model's log-probabilities of the last ``max_rows`` rows scored (float32, 4 bytes per vocabulary
entry: 192 KB a row for 49,152 tokens), from which ``observe`` reads the probability of the token
each row took. A row whose prefixes were evicted is sampled correctly but not learned from
(``observe`` returns how many rows it used). Thread-safe: one lock around the caches.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..limits import DEFAULT_LIMITS, Limits
from .grammar import GrammarLogitsProcessor

if TYPE_CHECKING:  # annotations only: the processor uses the oracle's public methods
    from ..constraints.grammar import Constraint
    from ..samplers.asap import ASApOracle

__all__ = ["ASApLogitsProcessor", "DEFAULT_ROWS"]

# Rows of log-probabilities kept for observe(): the rows of one generate call's last step must all
# fit (num_return_sequences x batch). 256 rows of SmolLM2's 49,152 tokens is 48 MB.
DEFAULT_ROWS = 256
ROOT = 0  # the oracle's root node (samplers.asap.ROOT; not imported: processors sit below samplers)


@dataclass
class _Entry:
    """A prefix's trie node, its steps so far (a persistent list: (previous, step)), whether that
    path is whole, and the step statistics once the prefix was scored."""

    node: int
    path: tuple | None
    whole: bool
    stats: tuple[float, float, int] | None = None


class ASApLogitsProcessor:
    """ASAp as a ``transformers`` logits processor (module docstring).

    Args:
        oracle: the ``ASApOracle`` to read (and, through ``observe``, to teach).
        constraint: a ``Grammar``, ``Regex`` or ``JSONSchema``.
        tokenizer: the Hugging Face tokenizer (or a ``TokenizerInfo``).
        vocab_size, eos_token_id, limits: as for ``GrammarLogitsProcessor``.
        max_rows: rows of log-probabilities kept for ``observe`` (``DEFAULT_ROWS``).
    """

    def __init__(self, oracle: ASApOracle, constraint: Constraint, tokenizer: Any, *, vocab_size: int | None = None,
                 eos_token_id: int | list[int] | None = None, limits: Limits = DEFAULT_LIMITS,
                 max_rows: int = DEFAULT_ROWS) -> None:
        from ..errors import CtrldecError

        if constraint is None:
            raise CtrldecError("ASAp needs a constraint: it samples from P(output | output in the constraint's language)")
        self.oracle = oracle
        self.constraint = constraint
        self.limits = limits
        self.max_rows = max_rows
        self.masker = GrammarLogitsProcessor(constraint, tokenizer, vocab_size=vocab_size, eos_token_id=eos_token_id,
                                             limits=limits)
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._rows: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._eos: tuple[int, ...] = ()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        width = scores.shape[-1]
        info = self.masker.compiled(width).info
        self._eos = tuple(info.eos_token_ids)
        masked = self.masker(input_ids, scores)
        logp = torch.log_softmax(scores.double().cpu(), dim=-1)
        allowed_logp = logp.masked_fill(~torch.isfinite(masked.cpu()), -torch.inf)
        out = masked.clone()
        for i, row in enumerate(input_ids.cpu().numpy().astype(np.int64)):
            m = self.masker.matcher_for(row)
            if m.ended:
                continue  # a finished row, padded: the masker left it as it was
            key = row.tobytes()
            entry = self._entry(row, m.num_tokens, info.hash)
            out[i] = self.oracle.reweighted(allowed_logp[i], entry.node).to(out.dtype).to(out.device)
            with self._lock:
                entry.stats = self.oracle.step_stats(allowed_logp[i], self._eos)
                self._remember(self._rows, key, logp[i].float(), self.max_rows)
        return out

    def _entry(self, ids: np.ndarray, produced: int, tokenizer_hash: str) -> _Entry:
        """The entry of a prefix whose last ``produced`` tokens are output (the rest is the prompt)."""
        key = ids.tobytes()
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
            if produced == 0:
                from ..samplers.asap import OracleKey  # lazily: processors sit below samplers

                self.oracle.bind(OracleKey(tuple(ids.tolist()), self.constraint.fingerprint, tokenizer_hash,
                                           repr(self.constraint)))
                entry = _Entry(ROOT, None, True)
            else:
                entry = self._child(ids, produced)
            self._remember(self._entries, key, entry, self.limits.processor_cache_entries)
            return entry

    def _child(self, ids: np.ndarray, produced: int) -> _Entry:
        """A new prefix's entry from its parent's; without the parent, the node from a walk down
        the trie and no path (the row is not learned from). Holds: the caller has the lock."""
        parent_key = ids[:-1].tobytes()
        parent, row = self._entries.get(parent_key), self._rows.get(parent_key)
        token = int(ids[-1])
        if parent is not None and parent.stats is not None and row is not None:
            from ..samplers.asap import Step

            step = Step(token, float(row[token]), *parent.stats)
            return _Entry(self.oracle.child(parent.node, token), (parent.path, step), parent.whole)
        node = ROOT
        for t in ids[len(ids) - produced:].tolist():
            node = self.oracle.child(node, t)
        return _Entry(node, None, False)

    @staticmethod
    def _remember(cache: OrderedDict, key: bytes, value: Any, limit: int) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > limit:
            cache.popitem(last=False)

    def observe(self, sequences: Any) -> int:
        """Teach the oracle the rows ``generate`` returned (``GenerateOutput`` or ``[rows, length]``
        token ids, prompt included, finished rows padded). Returns how many rows were learned
        from (rows whose prefixes the caches still hold)."""
        from ..samplers.asap import Step

        rows = getattr(sequences, "sequences", sequences)
        rows = rows.cpu().numpy() if torch.is_tensor(rows) else np.asarray(rows)
        used = 0
        for ids in rows.astype(np.int64):
            with self._lock:
                found = self._last_scored(ids)
                if found is None:
                    continue
                k, entry = found
                token = int(ids[k])
                steps = _unroll(entry.path) + [Step(token, float(self._rows[ids[:k].tobytes()][token]), *entry.stats,
                                                    eos=token in self._eos)]  # type: ignore[misc]
            self.oracle.observe(steps)
            used += 1
        return used

    def _last_scored(self, ids: np.ndarray) -> tuple[int, _Entry] | None:
        """The longest prefix ``ids[:k]`` (k < len) that was scored, with a whole path, and its entry."""
        for k in range(len(ids) - 1, 0, -1):
            key = ids[:k].tobytes()
            entry = self._entries.get(key)
            if entry is not None:
                ok = entry.whole and entry.stats is not None and key in self._rows
                return (k, entry) if ok else None
        return None

    def reset(self) -> None:
        """Forget cached prefixes (the oracle keeps what it learned)."""
        with self._lock:
            self._entries.clear()
            self._rows.clear()
        self.masker.reset()


def _unroll(path: tuple | None) -> list:
    out = []
    while path is not None:
        path, step = path
        out.append(step)
    return out[::-1]
