"""``KVCache``: the model's key/value cache for a batch of rows, each row one sequence.

Rows grow by different amounts each step (one row fast-forwards twenty forced tokens while
another samples one) and drop rejected drafts independently. A Hugging Face cache is one
rectangle ``[rows, heads, columns, dim]``, so the handle keeps, per row and column, the position
of the token stored there, or -1 for a *hole* (padding, a rejected draft). The runner turns that
into the attention mask and position ids of the next forward pass. With one row and no holes it
passes neither, which is exactly a plain ``model(input_ids, past_key_values=...)`` call.

Operations: ``length(row)``, ``crop(row, n)`` (forget positions ``>= n``), ``forget(row, columns)``
(holes where a draft tree's rejected branches were), ``compact()`` (drop the holes), ``select_rows(indices)``
(keep, reorder or duplicate rows: finished sequences leave, SMC resamples, beams fork),
``place_rows(indices)`` (the same where the order does not matter: kept rows stay put and only
duplicates are copied, in place), ``fork()`` (an independent copy).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["KVCache", "fork_cache", "crop_cache"]


def fork_cache(cache: Any) -> Any:
    """An independent copy of a Hugging Face KV cache."""
    return copy.deepcopy(cache)


def crop_cache(cache: Any, length: int) -> Any:
    """Drop a Hugging Face cache's columns past ``length``."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)  # transformers 5 counts from the end
    return cache


def _copy_rows(cache: Any, dst: Sequence[int], src: Sequence[int], start: Sequence[int]) -> bool:
    """Overwrite rows ``dst`` of every layer of a Hugging Face cache with rows ``src``, in place,
    from column ``start[i]`` on (the columns before it already hold the same values); False
    (nothing done) for a cache whose layers are not plain ``keys``/``values`` tensors."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(isinstance(getattr(layer, name, None), torch.Tensor) and getattr(layer, name).dim() == 4
                             for layer in layers for name in ("keys", "values")):
        return False
    triples = list(zip(dst, src, start))  # dst rows are never src rows (place_rows): any order
    for layer in layers:
        for name in ("keys", "values"):
            t = getattr(layer, name)
            for d, s, a in triples:
                t[d, :, a:].copy_(t[s, :, a:])  # row by row: no gathered copy in between
    return True


_ALL = np.iinfo(np.int64).max


def _unshared(rows: int) -> np.ndarray:
    shared = np.zeros((rows, rows), dtype=np.int64)
    np.fill_diagonal(shared, _ALL)
    return shared


class KVCache:
    """See the module docstring. ``cache`` is None until the first forward pass."""

    def __init__(self, rows: int) -> None:
        self.cache: Any = None
        self.positions = np.zeros((rows, 0), dtype=np.int64)  # [row, column] -> position, -1 = hole
        self.lengths = np.zeros(rows, dtype=np.int64)  # tokens stored per row
        # [a, b] -> how many leading columns rows a and b hold the same keys and values in (a row
        # copied from another, and not cut back since): a copy skips them. The diagonal is _ALL.
        self.shared = _unshared(rows)

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def columns(self) -> int:
        return self.positions.shape[1]

    @property
    def plain(self) -> bool:
        """One row without holes: the model needs no attention mask or position ids."""
        return self.rows == 1 and self.columns == int(self.lengths[0])

    def length(self, row: int) -> int:
        return int(self.lengths[row])

    def step_layout(self, counts: Sequence[int], parents: Sequence[Sequence[int] | None] | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """For a forward that appends ``counts[r]`` tokens to row ``r``, left-padded to the longest:
        the attention mask, the new tokens' position ids, and the new columns' positions (for
        ``appended``).

        Without ``parents`` each row's tokens form a chain and the mask is 2-D (``[rows,
        columns]``, the model makes it causal). With ``parents`` (a *tree*: ``parents[r][j]`` is
        the index in row ``r``'s feed of token ``j``'s parent, -1 for the row's last stored
        token; None for a chain), token ``j`` sits at position ``length + depth(j)`` and sees the
        stored columns, its ancestors and itself only: a 4-D additive mask ``[rows, 1, width,
        columns + width]``. Sibling branches (contrastive search's candidates, a draft tree) are
        scored in one row without seeing each other."""
        width = max(counts)
        new = np.full((self.rows, width), -1, dtype=np.int64)
        trees = parents is not None and any(p is not None for p in parents)
        sees = np.zeros((self.rows, width, width), dtype=bool) if trees else None
        for r, n in enumerate(counts):
            tree = parents[r] if trees else None  # type: ignore[index]
            if tree is None:
                new[r, width - n:] = self.lengths[r] + np.arange(n)
                if sees is not None:
                    sees[r, width - n:, width - n:] = np.tril(np.ones((n, n), dtype=bool))
                continue
            depth = np.zeros(n, dtype=np.int64)
            for j, parent in enumerate(tree):
                if not -1 <= parent < j:
                    raise ValueError(f"token {j} of row {r} has parent {parent}: parents come before their children")
                at = width - n + j
                depth[j] = 0 if parent < 0 else depth[parent] + 1
                sees[r, at, at] = True  # type: ignore[index]
                if parent >= 0:
                    sees[r, at] |= sees[r, width - n + parent]  # type: ignore[index]
            new[r, width - n:] = self.lengths[r] + depth
        stored = self.positions >= 0
        if sees is None:
            mask = np.concatenate([stored, new >= 0], axis=1)
            return torch.from_numpy(mask.astype(np.int64)), torch.from_numpy(np.maximum(new, 0)), new
        diagonal = np.eye(width, dtype=bool)[None] & (new < 0)[:, :, None]  # padding sees itself (no empty rows)
        full = np.concatenate([np.broadcast_to(stored[:, None, :], (self.rows, width, self.columns)), sees | diagonal], axis=2)
        mask = torch.zeros(full.shape, dtype=torch.float32)
        mask.masked_fill_(torch.from_numpy(~full), torch.finfo(torch.float32).min)
        return mask[:, None], torch.from_numpy(np.maximum(new, 0)), new

    def appended(self, new: np.ndarray, cache: Any) -> None:
        """Record a forward pass that stored the columns ``new`` (from ``step_layout``)."""
        self.positions = np.concatenate([self.positions, new], axis=1)
        self.lengths += (new >= 0).sum(axis=1)
        self.cache = cache

    def crop(self, row: int, length: int) -> None:
        """Forget row ``row``'s positions from ``length`` on (rejected drafts)."""
        if length >= self.lengths[row]:
            return
        self.positions[row][self.positions[row] >= length] = -1
        self.lengths[row] = length
        self._trim()

    def forget(self, row: int, columns: Sequence[int]) -> None:
        """Turn ``columns`` of row ``row`` into holes (the rejected branches of a draft tree; negative
        columns count from the end, as in Python). The caller keeps the row's stored positions
        consecutive (a tree's kept path is)."""
        cols = np.asarray(columns, dtype=np.int64)
        if not len(cols):
            return
        self.lengths[row] -= int((self.positions[row, cols] >= 0).sum())
        self.positions[row, cols] = -1
        self._trim()

    def compact_if_sparse(self) -> None:
        """``compact()`` when holes are most of a long cache (at the end of a step: compacting
        renumbers the columns)."""
        if self.rows and self.columns > self._COMPACT_AFTER and 2 * int(self.lengths.max()) < self.columns:
            self.compact()

    _COMPACT_AFTER = 256  # columns: below this, holes cost less than moving the cache

    def compact(self) -> None:
        """Move every row's stored columns to the front, in order, and drop the columns no row
        needs any more: attention no longer pays for the holes of rejected drafts."""
        layers = getattr(self.cache, "layers", None)
        if self.cache is None or not layers or not all(isinstance(getattr(layer, "keys", None), torch.Tensor) for layer in layers):
            return  # a cache whose storage is not plain tensors keeps its holes
        width = int(self.lengths.max()) if self.rows else 0
        gather = np.zeros((self.rows, width), dtype=np.int64)
        positions = np.full((self.rows, width), -1, dtype=np.int64)
        for r in range(self.rows):
            stored = np.flatnonzero(self.positions[r] >= 0)
            gather[r, : len(stored)] = stored
            positions[r, : len(stored)] = self.positions[r, stored]
        index = torch.from_numpy(gather)
        for layer in layers:
            for name in ("keys", "values"):
                t = getattr(layer, name)
                idx = index[:, None, :, None].expand(t.shape[0], t.shape[1], width, t.shape[3])
                setattr(layer, name, t.gather(2, idx).contiguous())
        self.positions = positions
        self.shared = _unshared(self.rows)

    def select_rows(self, indices: Sequence[int]) -> None:
        """Keep rows ``indices``, in that order (an index may repeat: a row is duplicated)."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) == self.rows and (idx == np.arange(self.rows)).all():
            return
        self.positions = self.positions[idx]
        self.lengths = self.lengths[idx]
        self.shared = np.minimum(self.shared[idx][:, idx], self.columns)  # duplicates: every column so far
        np.fill_diagonal(self.shared, _ALL)
        if self.cache is not None:
            if len(idx):
                self.cache.batch_select_indices(torch.from_numpy(idx))
            else:
                self.cache = None
        self._trim()

    def place_rows(self, indices: Sequence[int]) -> np.ndarray:
        """``select_rows(indices)`` for a caller that does not mind the order: returns ``slots``,
        where ``slots[i]`` is the row that now holds what row ``indices[i]`` held.

        When as many rows come out as went in (a beam search step: each beam's children replace
        the beams that had none), the first use of a row leaves it where it is and each further
        use is copied, in place, into a row nobody kept: a step copies the rows of its forks,
        not the whole cache. Otherwise (rows leave) this is ``select_rows`` in the given order."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) != self.rows or self.cache is None:
            self.select_rows(idx)
            return np.arange(len(idx))
        slots = np.full(len(idx), -1, dtype=np.int64)
        taken = np.zeros(self.rows, dtype=bool)
        for i, row in enumerate(idx):
            if not taken[row]:
                slots[i], taken[row] = row, True
        free = np.flatnonzero(~taken)
        copies = np.flatnonzero(slots < 0)
        slots[copies] = free[: len(copies)]
        if len(copies):
            dst, src = slots[copies], idx[copies]
            start = np.minimum(self.shared[dst, src], self.columns)
            if not _copy_rows(self.cache, dst.tolist(), src.tolist(), start.tolist()):
                order = np.arange(self.rows)
                order[dst] = src
                self.cache.batch_select_indices(torch.from_numpy(order))
            self.positions[dst] = self.positions[src]
            self.lengths[dst] = self.lengths[src]
            for d, s in zip(dst, src):  # d now holds what s holds, so it shares what s shares
                self.shared[d, :] = self.shared[s, :]
                self.shared[:, d] = self.shared[:, s]
                self.shared[d, s] = self.shared[s, d] = self.columns
                self.shared[d, d] = _ALL
            self._trim()
        return slots

    def fork(self) -> KVCache:
        other = KVCache.__new__(KVCache)
        other.cache = fork_cache(self.cache)
        other.positions = self.positions.copy()
        other.lengths = self.lengths.copy()
        other.shared = self.shared.copy()
        return other

    def _trim(self) -> None:
        """Drop trailing columns that are holes in every row (the model never needs them)."""
        if not self.rows:
            self.positions = self.positions[:, :0]
            return
        used = (self.positions >= 0).any(axis=0)
        keep = int(np.flatnonzero(used)[-1]) + 1 if used.any() else 0
        if keep < self.columns:
            self.positions = self.positions[:, :keep]
            np.minimum(self.shared, keep, out=self.shared)  # the columns past keep are written anew
            np.fill_diagonal(self.shared, _ALL)
            if self.cache is not None and keep == 0:
                self.cache = None  # nothing left; an empty HF cache also ignores batch_select_indices
            elif self.cache is not None:
                crop_cache(self.cache, keep)
