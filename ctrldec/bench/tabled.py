"""A tabled model: a causal LM's next-token distributions over a finite language, looked up.

``ctrldec bench fidelity`` compares samplers' output distributions with the exact target on
constraints whose language L is small enough to enumerate. Every prefix a sampler can reach is
then a node of L's token trie, so the model's distribution at every node can be computed once
(``build_table``) and the real decoding code (``Runner``, ``KVCache``, samplers, strategies) run
against ``TabledModel``, which looks those distributions up instead of running the network:
10,000 SMC runs cost minutes instead of hours.

* ``enumerate_language(constraint, info, eos, limit)``: every token sequence (ending with an EOS
  id) the constraint's matcher allows: every tokenization, not only the canonical one.
* ``build_table(model, tokenizer, prompt_ids, sequences, top)``: the model's next-token
  log-probabilities at every trie node, from batched forward passes.
* ``TabledModel(table, vocab_size, eos_token_id)``: what ``Runner`` and ``Decoder`` accept in
  place of a Hugging Face model; its cache holds token ids per row and column.
* ``exact_distributions(table, sequences)``: log P(w), log P(L), P* and masking's distribution.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ..decoding.kv import KVCache
from ..decoding.runner import Runner
from ..engine.bitmask import unpack
from ..errors import CtrldecError

__all__ = ["NextTokenTable", "TabledModel", "TokenCache", "Exact", "enumerate_language", "build_table",
           "exact_distributions"]

# Rows per forward pass when scoring the trie: wide enough to amortize a pass, small enough that
# 64 rows x ~20 positions x 49,152 float32 logits (~250 MB) fit comfortably in memory.
SCORE_BATCH = 64
# Deepest prefix the enumeration follows: a language this small never needs more tokens.
MAX_DEPTH = 64


def enumerate_language(constraint: Any, info: Any, eos: Iterable[int], limit: int = 10_000) -> list[tuple[int, ...]]:
    """Every token sequence the constraint allows, each ending with an EOS id from ``eos``.

    A depth-first walk over the matcher's allowed tokens (its mask); EOS is allowed exactly
    where the matcher is accepting (and only the ids in ``eos`` it accepts). The matcher allows
    every tokenization of the language's strings, so all of them are listed: they are part of
    L. Raises ``CtrldecError`` past ``limit`` sequences or ``MAX_DEPTH`` tokens (an infinite or
    too large language)."""
    eos = sorted(set(eos))
    out: list[tuple[int, ...]] = []
    stack = [(constraint.compile(info).matcher(), ())]
    while stack:
        matcher, prefix = stack.pop()
        if len(prefix) >= MAX_DEPTH:
            raise CtrldecError(f"{constraint!r}: a prefix of {MAX_DEPTH} tokens ({list(prefix[:8])}...) is still open; "
                               "the language is too large (or infinite) to enumerate")
        if matcher.is_accepting():
            out += [prefix + (e,) for e in eos if matcher.accepts(e)]
        if len(out) > limit:
            raise CtrldecError(f"{constraint!r} has more than {limit} token sequences (every tokenization counts): "
                               "too many to enumerate")
        allowed = np.flatnonzero(unpack(matcher.mask(), info.vocab_size)).tolist()
        for t in reversed([t for t in allowed if t not in eos]):
            child = matcher.fork()
            child.advance(t)
            stack.append((child, prefix + (t,)))
    return sorted(out)


class NextTokenTable:
    """The model's next-token log-probabilities at every node of a language's token trie.

    A node is an output prefix (a tuple of token ids after ``prompt``). Per node it stores, for
    the union of the ``top`` most likely tokens and the node's children in the trie (the tokens
    the constraint allows there, EOS included), their exact log-probabilities, and nothing else:
    the rest of the vocabulary's mass is spread uniformly over the other ids when logits are
    produced. So every probability the target P* and masking's distribution depend on is exact
    (they only involve the trie's own tokens); only how the unallowed remainder is split is
    approximated, which changes no sampler's target (rejection samplers see the same accepted
    distribution, and AWRS's weights stay unbiased, with variance from the top ``top`` tokens exact).
    About 3 KB per node with ``top=256``.
    """

    def __init__(self, prompt: Sequence[int], vocab_size: int) -> None:
        self.prompt = tuple(prompt)
        self.vocab_size = vocab_size
        self.index: dict[tuple[int, ...], int] = {}
        self.ids: list[np.ndarray] = []  # per node: stored token ids, ascending (int32)
        self.logp: list[np.ndarray] = []  # their log-probabilities (float64)
        self.children: list[np.ndarray] = []  # per node: the tokens the trie continues with
        self.rest_logit: list[float] = []  # the logit of every id not stored

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def memory_size_bytes(self) -> int:
        return sum(a.nbytes + b.nbytes + c.nbytes for a, b, c in zip(self.ids, self.logp, self.children))

    def add(self, prefix: tuple[int, ...], logp: np.ndarray, children: Sequence[int], top: int) -> None:
        """Store node ``prefix`` from its full log-probability vector ``logp`` (float64)."""
        if prefix in self.index:
            return
        keep = np.union1d(np.argpartition(-logp, min(top, len(logp)) - 1)[:top], np.asarray(children, dtype=np.int64))
        rest = -np.expm1(np.logaddexp.reduce(logp[keep])) if len(keep) < len(logp) else 0.0
        others = len(logp) - len(keep)
        self.index[prefix] = len(self.ids)
        self.ids.append(keep.astype(np.int32))
        self.logp.append(logp[keep].astype(np.float64))
        self.children.append(np.asarray(sorted(children), dtype=np.int32))
        self.rest_logit.append(math.log(max(rest, 1e-300) / others) if others else -math.inf)

    def node(self, output: Sequence[int]) -> int:
        """The node of an output prefix; ``CtrldecError`` naming it when it is not in the table."""
        node = self.index.get(tuple(output))
        if node is None:
            raise CtrldecError(f"the output prefix {list(output)} is not in the table ({len(self)} nodes): "
                               "the tabled model only knows the prefixes of the language it was built for")
        return node

    def log_prob(self, node: int, token: int) -> float:
        """log p(token | node): exact for stored ids, the uniform remainder otherwise."""
        ids = self.ids[node]
        i = int(np.searchsorted(ids, token))
        return float(self.logp[node][i]) if i < len(ids) and ids[i] == token else self.rest_logit[node]

    def logits(self, node: int) -> np.ndarray:
        """``float32[vocab_size]`` log-probabilities of the node (the remainder spread uniformly)."""
        out = np.full(self.vocab_size, self.rest_logit[node], dtype=np.float32)
        out[self.ids[node]] = self.logp[node]
        return out


def _trie(sequences: Iterable[Sequence[int]]) -> tuple[dict[tuple[int, ...], set[int]], list[tuple[int, ...]]]:
    """The children of every node, and the maximal token paths to feed (no one a prefix of another)."""
    children: dict[tuple[int, ...], set[int]] = {}
    for s in sequences:
        s = tuple(s)
        for j in range(len(s)):
            children.setdefault(s[:j], set()).add(s[j])
    nodes = sorted(children)
    paths = [u for i, u in enumerate(nodes) if i + 1 == len(nodes) or nodes[i + 1][: len(u)] != u]
    return children, paths


def build_table(model: Any, tokenizer: Any, prompt_ids: Sequence[int], sequences: Iterable[Sequence[int]], *,
                top: int = 256, batch: int = SCORE_BATCH, progress: bool = False) -> NextTokenTable:
    """Score every node of the trie of ``sequences`` (each ending with EOS) after ``prompt_ids``.

    The prompt is run once. The trie's maximal paths are taken in sorted order, ``batch`` at a
    time: the batch's common prefix is fed once after the prompt, then its rows are copied and
    each row feeds the rest of its path, all through ctrldec's own ``Runner`` (left padding,
    attention masks, position ids), keeping the logits of every fed position. A node on several
    paths may be computed more than once; the first is kept.
    """
    prompt = list(prompt_ids)
    if not prompt:
        raise CtrldecError("build_table needs a non-empty prompt")
    runner = Runner(model, pad_token_id=getattr(tokenizer, "pad_token_id", None) or 0)
    children, paths = _trie(sequences)
    table = NextTokenTable(prompt, runner.width)

    def store(path: tuple[int, ...], start: int, rows: torch.Tensor) -> None:
        logp = torch.log_softmax(rows.double(), dim=-1).numpy()
        for j in range(len(rows)):
            node = path[: start + j]
            table.add(node, logp[j], sorted(children[node]), top)

    base = KVCache(1)
    if len(prompt) > 1:
        runner.forward(base, [prompt[:-1]], [1])
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        shared = _common_prefix(chunk[0], chunk[-1]) if len(chunk) > 1 else chunk[0]
        kv = base.fork()
        store(shared, 0, runner.forward(kv, [[prompt[-1], *shared]], [len(shared) + 1]).logits[0])
        if len(chunk) > 1:
            kv.select_rows([0] * len(chunk))
            out = runner.forward(kv, [p[len(shared):] for p in chunk], [len(p) - len(shared) for p in chunk])
            for path, rows in zip(chunk, out.logits):
                store(path, len(shared) + 1, rows)
        if progress:
            print(f"    scored {start + len(chunk)}/{len(paths)} paths, {len(table)} nodes", flush=True)
    return table


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


class TokenCache:
    """The ``TabledModel``'s stand-in for a KV cache: the token id stored at each row and column
    (a hole's column holds the padding id; the attention mask says which columns count)."""

    def __init__(self, rows: int) -> None:
        self.tokens: list[list[int]] = [[] for _ in range(rows)]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return len(self.tokens[0]) if self.tokens else 0

    def crop(self, max_length: int) -> None:
        """Keep the first ``max_length`` columns (negative: drop that many from the end)."""
        keep = max_length if max_length >= 0 else self.get_seq_length() + max_length
        self.tokens = [row[:keep] for row in self.tokens]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.tokens = [list(self.tokens[int(i)]) for i in indices]

    def append(self, rows: list[list[int]]) -> None:
        for row, new in zip(self.tokens, rows):
            row.extend(new)

    def __deepcopy__(self, memo: dict) -> TokenCache:
        other = TokenCache(0)
        other.tokens = copy.deepcopy(self.tokens, memo)
        return other


def _visible(mask: torch.Tensor | None, r: int, j: int, past: int, width: int,
             positions: torch.Tensor | None) -> list[int] | None:
    """The columns (cached, then new) that new position ``j`` of row ``r`` attends to, in order:
    its prefix; None for padding. ``mask``: none (everything before it), 2-D (1 = a stored column
    or a real new token, causal), or 4-D additive (a tree feed: 0 = visible, per position; the
    runner gives padding position id 0, which no token after a stored prefix has)."""
    if mask is None:
        return list(range(past + j + 1))
    if mask.dim() == 2:
        row = mask[r]
        return None if not row[past + j] else [c for c in range(past + j + 1) if row[c]]
    if past > 0 and positions is not None and int(positions[r, j]) == 0:
        return None
    return (mask[r, 0, j, : past + width] == 0).nonzero().flatten().tolist()


@dataclass
class TabledOutput:
    logits: torch.Tensor  # float32 [rows, kept positions, vocab]
    past_key_values: TokenCache


class TabledModel:
    """A stand-in for a causal LM whose next-token distributions come from a ``NextTokenTable``.

    ``forward`` follows a Hugging Face model's: rows left-padded, ``attention_mask`` over the
    cached and the new columns (2-D: 0 marks padding and holes; 4-D additive: a tree feed, each
    position's own columns), ``logits_to_keep`` last positions. The prefix of a position is its
    row's tokens at the columns it attends to, in column order;
    its logits are the table's for the output after the prompt. Positions still inside the
    prompt (a wide ``logits_to_keep`` at prefill) and padding get uniform logits (the runner
    discards them); a prefix after the prompt that is not in the table raises ``CtrldecError``.
    No hidden states.
    """

    def __init__(self, table: NextTokenTable, vocab_size: int, eos_token_id: int | list[int]) -> None:
        if vocab_size < table.vocab_size:
            raise CtrldecError(f"vocab_size {vocab_size} is narrower than the table's {table.vocab_size}")
        self.table = table
        self.vocab_size = vocab_size
        self.generation_config = SimpleNamespace(eos_token_id=eos_token_id)
        self._eos = set(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
        self._head = SimpleNamespace(weight=torch.empty(vocab_size, 0))

    def get_output_embeddings(self) -> Any:
        return self._head

    def __call__(self, *args: Any, **kwargs: Any) -> TabledOutput:
        return self.forward(*args, **kwargs)

    def forward(self, input_ids: torch.Tensor, past_key_values: TokenCache | None = None, use_cache: bool = True,
                logits_to_keep: int = 0, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, output_hidden_states: bool = False, **_: Any) -> TabledOutput:
        if output_hidden_states:
            raise CtrldecError("a TabledModel has no hidden states (contrastive search needs a real model)")
        ids = input_ids.tolist()
        cache = past_key_values if past_key_values is not None else TokenCache(len(ids))
        past, width = cache.get_seq_length(), len(ids[0])
        keep = width if logits_to_keep <= 0 else min(logits_to_keep, width)
        logits = torch.zeros(len(ids), keep, self.vocab_size)
        logits[..., self.table.vocab_size:] = -math.inf  # padding past the tokenizer's vocabulary
        for r, row in enumerate(ids):
            tokens = cache.tokens[r] + row
            for j in range(width - keep, width):
                columns = _visible(attention_mask, r, j, past, width, position_ids)
                if columns is None:
                    continue  # padding
                prefix = [tokens[c] for c in columns]
                if position_ids is not None and int(position_ids[r, j]) != len(prefix) - 1:
                    raise CtrldecError(f"row {r}: position id {int(position_ids[r, j])} for the token at "
                                       f"{len(prefix) - 1}: the attention mask and position ids disagree")
                logits[r, j - (width - keep), : self.table.vocab_size] = torch.from_numpy(self._lookup(prefix))
        if use_cache:
            cache.append(ids)
        return TabledOutput(logits=logits, past_key_values=cache)

    def _lookup(self, prefix: list[int]) -> np.ndarray:
        prompt = self.table.prompt
        if len(prefix) < len(prompt) and tuple(prefix) == prompt[: len(prefix)]:
            return np.zeros(self.table.vocab_size, dtype=np.float32)  # inside the prompt: never sampled from
        if tuple(prefix[: len(prompt)]) != prompt:
            raise CtrldecError(f"the tabled model was built for another prompt (got {prefix[:12]}...)")
        if self._eos.intersection(prefix[len(prompt):]):
            return np.zeros(self.table.vocab_size, dtype=np.float32)  # after the output's end (a draft past EOS): never sampled from
        return self.table.logits(self.table.node(prefix[len(prompt):]))


@dataclass
class Exact:
    """Exact quantities over a language's outputs (token sequences without their final EOS;
    sequences that differ only in which EOS id ends them are one output).

    ``log_p[i]``: log P(w_i), the model's probability of output i and then EOS;
    ``log_p_language``: log P(L); ``p_star``: P*(w) = P(w) / P(L); ``q_mask``: the distribution of
    token-by-token masking, the product over steps of p(x | prefix) / Z(prefix), Z the mass the
    constraint allows there (EOS included)."""

    outputs: list[tuple[int, ...]]
    log_p: np.ndarray
    log_p_language: float
    p_star: np.ndarray
    q_mask: np.ndarray

    def index(self) -> dict[tuple[int, ...], int]:
        return {w: i for i, w in enumerate(self.outputs)}


def exact_distributions(table: NextTokenTable, sequences: Iterable[Sequence[int]]) -> Exact:
    """``Exact`` for the language ``sequences`` (each ending with an EOS id) from ``table``."""
    log_z: dict[int, float] = {}
    by_output: dict[tuple[int, ...], list[tuple[float, float]]] = {}
    for s in sequences:
        s = tuple(s)
        lp = lq = 0.0
        for j, t in enumerate(s):
            node = table.node(s[:j])
            if node not in log_z:
                log_z[node] = float(np.logaddexp.reduce([table.log_prob(node, c) for c in table.children[node]]))
            x = table.log_prob(node, t)
            lp += x
            lq += x - log_z[node]
        by_output.setdefault(s[:-1], []).append((lp, lq))
    outputs = sorted(by_output)
    log_p = np.array([np.logaddexp.reduce([a for a, _ in by_output[w]]) for w in outputs])
    log_q = np.array([np.logaddexp.reduce([b for _, b in by_output[w]]) for w in outputs])
    total = float(np.logaddexp.reduce(log_p))
    return Exact(outputs, log_p, total, np.exp(log_p - total), np.exp(log_q))
