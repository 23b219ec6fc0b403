"""Token Recycling (Luo et al., ACL 2025, arXiv 2408.08696): drafts from the model's own past
top-k predictions, no second model, no training.

A table ``A[V, k]`` holds, for each token, the ``k`` most likely successors the model gave the
last time that token was fed (every row of every forward pass, rejected draft branches included,
is "recycled" into it). A draft is a tree of a fixed shape grown breadth-first from the last
committed token: the root's children are ``A[root][:b0]``, theirs ``A[child][:b1]`` and so on; the
verifier scores the whole tree in one pass under a tree attention mask and walks it by
sample-and-compare. The table lives as long as the drafter, so it keeps what it learned from one
generation to the next (the paper's "hot start").

The shape is a list of paths of child ranks: ``(0, 1)`` is the second-best successor of the
best successor of the root. The default is small (16 nodes, 5 deep) and listed in the order its
nodes are most often kept, not breadth-first, so that each prefix of it is a good smaller tree:
the adaptive sizer (``DraftSizer``) scores only a prefix where wide passes cost (a CPU); on a GPU
the whole tree, or the paper's 80 nodes, pays off.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence as Seq

import numpy as np
import torch

from ..decoding.sequence import Sequence
from ..errors import CtrldecError
from .drafters import NO_DRAFT, Draft

__all__ = ["TokenRecycling", "SMALL_TREE"]

SMALL_TREE: tuple[tuple[int, ...], ...] = (  # ordered by how often each node is kept, parents first
    (0,), (0, 0), (1,), (0, 0, 0), (0, 1), (2,), (1, 0), (0, 0, 0, 0),
    (0, 0, 1), (0, 2), (3,), (0, 1, 0), (1, 0, 0), (2, 0), (0, 0, 0, 0, 0), (0, 0, 0, 1),
)


class TokenRecycling:
    """See the module docstring. ``tree``: the draft shape (paths of child ranks, each path's
    parent listed before it); ``k``: successors kept per token (at least the widest branching)."""

    name = "recycling"

    def __init__(self, tree: Seq[Seq[int]] = SMALL_TREE, k: int = 8) -> None:
        paths = [tuple(p) for p in tree]
        index = {p: i for i, p in enumerate(paths)}
        if not paths or any(not p or min(p) < 0 for p in paths):
            raise CtrldecError("a Token Recycling tree is a non-empty list of non-empty paths of child ranks >= 0")
        for p in paths:
            if len(p) > 1 and index.get(p[:-1], len(paths)) >= index[p]:
                raise CtrldecError(f"tree path {p}: its parent {p[:-1]} must come before it")
        if max(max(p) for p in paths) >= k:
            raise CtrldecError(f"the tree uses child rank {max(max(p) for p in paths)}, but only k={k} successors are kept")
        self.paths = paths
        self.parents = [index[p[:-1]] if len(p) > 1 else -1 for p in paths]
        self.ranks = [p[-1] for p in paths]
        self.k = k
        self.table: np.ndarray | None = None  # [V, k] successor ids, -1 unknown
        self._lock = threading.Lock()  # readers go without: a half-written row still holds token ids, and drafts are verified

    def __repr__(self) -> str:
        return f"TokenRecycling({len(self.paths)} nodes, depth {max(len(p) for p in self.paths)})"

    def learn(self, seq: Sequence, tokens: Seq[int], rows: torch.Tensor) -> None:
        """The rows of one forward pass: ``rows[i]`` is what the model predicts after ``tokens[i]``."""
        if not len(tokens):
            return
        width = rows.shape[-1]
        top = torch.topk(rows, self.k, dim=-1).indices.numpy()
        with self._lock:  # one drafter serves every thread of a Decoder: a table grown twice would lose rows
            if self.table is None or self.table.shape[0] < width:
                table = np.full((width, self.k), -1, dtype=np.int64)
                if self.table is not None:
                    table[: self.table.shape[0]] = self.table
                self.table = table
            self.table[np.asarray(tokens, dtype=np.int64)] = top

    def propose(self, seq: Sequence, k: int) -> Draft:
        if k <= 0 or self.table is None or not seq.tokens:
            return NO_DRAFT
        root = seq.tokens[-1]
        if root >= len(self.table) or self.table[root, 0] < 0:
            return NO_DRAFT
        kept: dict[int, int] = {-1: -1}
        node_token = {-1: root}
        tokens: list[int] = []
        parents: list[int] = []
        for j, (parent, rank) in enumerate(zip(self.parents, self.ranks)):
            if parent not in kept:
                continue
            source = node_token[parent]
            if source >= len(self.table):
                continue
            token = int(self.table[source, rank])
            if token < 0 or len(self.paths[j]) > k:
                continue
            kept[j] = len(tokens)
            node_token[j] = token
            tokens.append(token)
            parents.append(kept[parent])
        return Draft(tokens, parents=parents) if tokens else NO_DRAFT

    def observe(self, seq: Sequence, draft: Draft, accepted: int) -> None:
        return None
