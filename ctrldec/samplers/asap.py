"""ASAp, grammar-aligned sampling (Park et al., NeurIPS 2024, arXiv 2405.21047): the oracle and one step.

Token-by-token masking draws each token from ``p(x | u)`` restricted to what the constraint allows,
which is not ``P(w | w in L)``: a prefix the model likes but that can only be finished unlikely
keeps its full share. The exact next-token distribution is ``p*(x | u) ∝ p(x | u) · EFG(u x)``,
``EFG(u)`` the probability that the model, continuing ``u``, writes a string of L (ALGORITHMS.md,
"ASAp"). ASAp learns over-estimates of EFG across repeated samples for one prompt and constraint:

* ``ASApOracle`` is a trie of the output prefixes sampled so far. A node ``u`` that was sampled from
  stores what the step saw there: ``z_eos`` (the model's probability of the EOS ids allowed at
  ``u``), ``z_open`` and ``n_open`` (the probability and the number of the other allowed tokens);
  a child node stores ``p(x | u)`` and its estimate ``EFG~(u x)``. Children not in the trie count
  ``EFG~ = 1`` (a sound over-estimate), EOS counts exactly 1 (the string is complete), tokens the
  constraint forbids count 0, so
  ``EFG~(u) = z_eos + (z_open - sum of the children's p) + sum over children of p · EFG~(child)``
  (the middle term is 0 once all ``n_open`` allowed tokens have children).
* After a sample finishes, ``observe(steps)`` adds its path and recomputes ``EFG~`` bottom-up along
  it. Estimates only decrease, and converge to EFG: the sampling distribution converges to
  ``P(w | w in L)``.
* One step (``ASApStep``, or ``ASApOracle.reweighted``) draws ``x`` with probability
  ``∝ p(x | u) · EFG~(u x)``: the mask, then the few children the trie holds multiplied by their
  ``EFG~`` (one sparse indexed multiply), never a Python loop over the vocabulary.

The trie belongs to one (prompt, constraint, tokenizer): ``OracleKey``. The first use binds an
unbound oracle; another key raises ``CtrldecError`` (one oracle per prompt and constraint). The
model is not part of the key: an oracle learned with one model is wrong for another.

**Memory.** A node costs ``NODE_BYTES`` (~60 bytes: columns of ``p``, ``EFG~``, ``z_eos``,
``z_open``, ``n_open``, parent and token) plus, for a node with children, two small arrays
(token ids and child ids, ~``INNER_NODE_BYTES`` + 12 bytes per child); ``memory_size_bytes``
adds it up. Past ``max_nodes`` (default ``DEFAULT_MAX_NODES``) no node is added: a path is
recorded down to its first new node and the rest stays unexplored (``EFG~ = 1``), which keeps
the estimates sound over-estimates; learning then slows, nothing breaks. ``dropped`` counts the
paths cut that way.

**Threads.** Every read and update takes the oracle's lock, so one oracle may serve several
threads; updates from concurrent calls interleave at sample granularity.

**File format** (``save``/``load``): a NumPy ``.npz`` (no pickles) with ``meta``, a JSON string
``{"format": "ctrldec-asap-oracle", "version": 1, "key": {...}, "max_nodes": N}``, and one array
per node column: ``parent`` (int32, -1 for the root), ``token`` (int32), ``p``, ``efg``,
``z_eos``, ``z_open`` (float64), ``n_open`` (int32, -1: never sampled from).

>>> import torch, ctrldec
>>> from ctrldec.samplers.asap import ASApOracle, Step
>>> oracle = ASApOracle()
>>> # root: tokens 1 (p .6) and 2 (p .4) allowed; after 1, only EOS, with p .1; 2 unexplored
>>> oracle.observe([Step(1, -0.51, 0.0, 1.0, 2), Step(0, -2.30, 0.1, 0.0, 0, eos=True)])
1
>>> round(oracle.efg(oracle.child(0, 1)), 3), round(oracle.efg(0), 3)   # .1, and .6 * .1 + .4 * 1
(0.1, 0.46)
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..controllers.base import Controls
from ..engine.matcher import Matcher
from ..errors import CtrldecError
from .base import Choice, allowed_tokens

__all__ = ["ASApOracle", "ASApStep", "OracleKey", "Step", "DEFAULT_MAX_NODES", "NODE_BYTES", "ROOT"]

ROOT = 0
FORMAT = "ctrldec-asap-oracle"
VERSION = 1
# 1M nodes is 10,000 samples of 100 distinct tokens each; at ~60 B a node (plus ~250 B for each
# node with children) that is at most ~300 MB, and usually far less (samples share prefixes).
DEFAULT_MAX_NODES = 1_000_000
NODE_BYTES = 4 * 8 + 3 * 4  # p, efg, z_eos, z_open (float64); n_open, parent, token (int32)
INNER_NODE_BYTES = 2 * 112 + 2 * 8  # two numpy array headers and their two list slots
_COLUMNS = (("parent", np.int32), ("token", np.int32), ("p", np.float64), ("efg", np.float64),
            ("z_eos", np.float64), ("z_open", np.float64), ("n_open", np.int32))


@dataclass(frozen=True)
class OracleKey:
    """What an oracle's estimates are about: the prompt's token ids, the constraint
    (``Constraint.fingerprint``) and the tokenizer (``TokenizerInfo.hash``). ``about`` names the
    constraint in messages and is not compared."""

    prompt: tuple[int, ...]
    constraint: str
    tokenizer: str
    about: str = ""

    def mismatch(self, other: OracleKey) -> str | None:
        """What differs from ``other``, in words; None when they are the same key."""
        if self.constraint != other.constraint:
            return f"it learned constraint {self.about or self.constraint}, not {other.about or other.constraint}"
        if self.tokenizer != other.tokenizer:
            return f"it learned with tokenizer {self.tokenizer}, not {other.tokenizer}"
        if self.prompt != other.prompt:
            at = next((i for i, (a, b) in enumerate(zip(self.prompt, other.prompt)) if a != b),
                      min(len(self.prompt), len(other.prompt)))
            return (f"it learned a prompt of {len(self.prompt)} tokens, not this one of {len(other.prompt)} "
                    f"(they differ from token {at} on)")
        return None


class Step(NamedTuple):
    """What one committed token tells the trie about its node ``u`` (the output prefix before it).

    ``token``: the token; ``log_p``: ``log p(token | u)`` under the model; ``z_eos``: the model's
    probability of the EOS ids allowed at ``u``; ``z_open``, ``n_open``: the probability and the
    number of the other allowed tokens; ``eos``: the token is an EOS (the output ended)."""

    token: int
    log_p: float
    z_eos: float
    z_open: float
    n_open: int
    eos: bool = False


class ASApOracle:
    """The trie of EFG over-estimates for one prompt and constraint (see the module docstring).

    Args:
        max_nodes: most nodes kept; past it, paths are cut (sound, see the module docstring).
        key: bind to this ``OracleKey`` now (otherwise the first sampler or processor using it does).
    """

    def __init__(self, max_nodes: int = DEFAULT_MAX_NODES, *, key: OracleKey | None = None) -> None:
        if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
            raise CtrldecError(f"max_nodes must be a positive integer, got {max_nodes!r}")
        self.max_nodes = max_nodes
        self.key = key
        self.dropped = 0  # paths cut at max_nodes
        self.samples = 0  # paths observed
        self._lock = threading.RLock()
        self._size = 0
        self._cols = {name: np.zeros(16, dtype=dtype) for name, dtype in _COLUMNS}
        self._kid_tokens: list[np.ndarray | None] = []  # per node: its children's tokens, ascending
        self._kid_nodes: list[np.ndarray | None] = []  # their node ids, in the same order
        self._add(-1, -1, 1.0)  # the root: the empty output

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        about = f", {self.key.about}" if self.key is not None and self.key.about else ""
        return f"ASApOracle({self._size} nodes, {self.samples} samples{about})"

    # -- binding ------------------------------------------------------------------------------------

    def bind(self, key: OracleKey) -> None:
        """Bind to ``key`` (an unbound oracle), or check that it is this oracle's key."""
        with self._lock:
            if self.key is None:
                self.key = key
                return
            problem = self.key.mismatch(key)
        if problem:
            raise CtrldecError(f"this ASAp oracle cannot be used here: {problem}. An oracle learns P(output | constraint) "
                               "for one prompt and constraint: use a new ASApOracle() (or another file) for this one")

    # -- reading ------------------------------------------------------------------------------------

    def child(self, node: int, token: int) -> int:
        """The node of ``node``'s child by ``token``, or -1 (not in the trie; ``node`` -1 too)."""
        if node < 0:
            return -1
        with self._lock:
            kids = self._kid_tokens[node]
            if kids is None:
                return -1
            i = int(np.searchsorted(kids, token))
            return int(self._kid_nodes[node][i]) if i < len(kids) and kids[i] == token else -1  # type: ignore[index]

    def efg(self, node: int) -> float:
        """``EFG~`` of a node (1 for -1: a prefix the trie has not seen)."""
        if node < 0:
            return 1.0
        with self._lock:
            return float(self._cols["efg"][node])

    @property
    def log_p_language_bound(self) -> float:
        """``log EFG~(root)``: an upper bound on ``log P(L)`` that tightens as samples come in."""
        return math.log(max(self.efg(ROOT), 1e-300))

    def correction(self, node: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The children of ``node`` in the trie, as (token ids int64, ``EFG~`` float64), or None."""
        if node < 0:
            return None
        with self._lock:
            kids = self._kid_tokens[node]
            if kids is None:
                return None
            efg = self._cols["efg"][self._kid_nodes[node]]  # type: ignore[index]
            return torch.from_numpy(kids.astype(np.int64)), torch.from_numpy(efg)

    def reweighted(self, logp: torch.Tensor, node: int) -> torch.Tensor:
        """``logp`` (1-D float64 log-probabilities, ``-inf`` where the constraint forbids) plus
        ``log EFG~`` of ``node``'s children: ASAp's unnormalised log-distribution at ``node``
        (what the logits processor returns). Where every allowed token's estimate underflowed to
        0, ``logp`` unchanged (masking there)."""
        if self.correction(node) is None:
            return logp
        weights = self.weights(torch.exp(logp), node)
        return logp if weights is None else torch.log(weights)

    def weights(self, probs: torch.Tensor, node: int) -> torch.Tensor | None:
        """``probs`` (1-D, 0 where the constraint forbids) times ``EFG~`` of ``node``'s children, in
        place (a sparse multiply: only the children the trie holds change); unnormalised. None
        (``probs`` untouched) when every allowed token's estimate underflowed to 0."""
        fix = self.correction(node)
        if fix is None:
            return probs
        tokens, efg = fix
        keep = tokens < probs.numel()
        tokens, efg = tokens[keep], efg[keep].to(probs.dtype)
        before = probs[tokens]
        total = float(probs.sum()) if bool((efg == 0).any()) else None
        if total is not None and total - float(before.sum()) + float((before * efg).sum()) <= 0:
            return None
        probs[tokens] = before * efg
        return probs

    @staticmethod
    def step_stats(logp: torch.Tensor, eos: Sequence[int]) -> tuple[float, float, int]:
        """``(z_eos, z_open, n_open)`` of a step from its masked log-probabilities (1-D, float64)."""
        return _stats(torch.exp(logp), torch.isfinite(logp), eos)

    # -- learning -----------------------------------------------------------------------------------

    def observe(self, steps: Iterable[Step | tuple]) -> int:
        """Add one finished sample's path (its committed tokens, in order) and update ``EFG~``
        bottom-up along it; returns how many nodes were added. A node keeps what its first visit
        saw (``p`` is the model's, the same each time). Observing a path twice changes nothing."""
        with self._lock:
            path, added = [ROOT], 0
            node = ROOT
            for step in (Step(*s) for s in steps):
                self._visit(node, step)
                if step.eos:
                    break
                child = self.child(node, step.token)
                if child < 0:
                    if self._size >= self.max_nodes:
                        self.dropped += 1
                        break
                    child = self._add(node, step.token, math.exp(step.log_p))
                    added += 1
                node = child
                path.append(node)
            for node in reversed(path):
                self._refresh(node)
            self.samples += 1
            return added

    def _visit(self, node: int, step: Step) -> None:
        c = self._cols
        if c["n_open"][node] < 0:
            c["z_eos"][node], c["z_open"][node], c["n_open"][node] = step.z_eos, step.z_open, step.n_open

    def _refresh(self, node: int) -> None:
        c = self._cols
        if c["n_open"][node] < 0:
            return  # never sampled from: unexplored, EFG~ stays 1
        kids = self._kid_nodes[node]
        explored = efg = 0.0
        if kids is not None:
            explored = float(c["p"][kids].sum())
            efg = float(c["p"][kids] @ c["efg"][kids])
        count = 0 if kids is None else len(kids)
        unexplored = 0.0 if count >= c["n_open"][node] else max(float(c["z_open"][node]) - explored, 0.0)
        c["efg"][node] = min(1.0, float(c["z_eos"][node]) + unexplored + efg)

    def _add(self, parent: int, token: int, p: float) -> int:
        node = self._size
        if node == len(self._cols["p"]):
            for name, col in self._cols.items():
                grown = np.zeros(2 * len(col), dtype=col.dtype)
                grown[:node] = col
                self._cols[name] = grown
        for name, value in (("parent", parent), ("token", token), ("p", p), ("efg", 1.0), ("z_eos", 0.0),
                            ("z_open", 0.0), ("n_open", -1)):
            self._cols[name][node] = value
        self._kid_tokens.append(None)
        self._kid_nodes.append(None)
        self._size += 1
        if parent >= 0:
            self._link(parent, token, node)
        return node

    def _link(self, parent: int, token: int, node: int) -> None:
        tokens, nodes = self._kid_tokens[parent], self._kid_nodes[parent]
        if tokens is None or nodes is None:
            self._kid_tokens[parent] = np.array([token], dtype=np.int32)
            self._kid_nodes[parent] = np.array([node], dtype=np.int32)
            return
        i = int(np.searchsorted(tokens, token))
        self._kid_tokens[parent] = np.insert(tokens, i, token)
        self._kid_nodes[parent] = np.insert(nodes, i, node)

    # -- size, files ------------------------------------------------------------------------------------

    @property
    def memory_size_bytes(self) -> int:
        """Estimated bytes the trie holds (see the module docstring)."""
        with self._lock:
            inner = [(t, n) for t, n in zip(self._kid_tokens, self._kid_nodes) if t is not None]
            return (sum(col.nbytes for col in self._cols.values()) + 16 * self._size
                    + sum(INNER_NODE_BYTES + t.nbytes + n.nbytes for t, n in inner))  # type: ignore[union-attr]

    def save(self, path: str | Path) -> None:
        """Write the trie and its key to ``path`` (the ``.npz`` format of the module docstring)."""
        with self._lock:
            meta = {"format": FORMAT, "version": VERSION, "max_nodes": self.max_nodes, "samples": self.samples,
                    "dropped": self.dropped, "key": None if self.key is None else
                    {**asdict(self.key), "prompt": list(self.key.prompt)}}
            columns = {name: col[: self._size].copy() for name, col in self._cols.items()}
        with open(path, "wb") as f:
            np.savez_compressed(f, meta=np.array(json.dumps(meta)), **columns)

    @classmethod
    def load(cls, path: str | Path, *, key: OracleKey | None = None) -> ASApOracle:
        """An oracle from a file written by ``save``; with ``key``, one for another key is refused.
        A missing, corrupt or foreign file raises ``CtrldecError`` naming it."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                columns = {name: np.asarray(data[name], dtype=dtype) for name, dtype in _COLUMNS}
        except OSError as e:
            raise CtrldecError(f"cannot read ASAp oracle file {path}: {e.strerror or e}") from None
        except (ValueError, KeyError, EOFError, json.JSONDecodeError) as e:
            raise CtrldecError(f"{path} is not an ASAp oracle file (or it is corrupt): {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CtrldecError(f"{path} is not an ASAp oracle file (its meta names no {FORMAT!r} format)")
        if meta.get("version") != VERSION:
            raise CtrldecError(f"{path} is an ASAp oracle file of version {meta.get('version')!r}; "
                               f"this ctrldec reads version {VERSION}")
        oracle = cls(int(meta.get("max_nodes", DEFAULT_MAX_NODES)), key=_key(meta.get("key"), path))
        oracle.samples, oracle.dropped = int(meta.get("samples", 0)), int(meta.get("dropped", 0))
        oracle._restore(columns, path)
        if key is not None:
            oracle.bind(key)
        return oracle

    def _restore(self, columns: dict[str, np.ndarray], path: Any) -> None:
        n = len(columns["parent"])
        if n < 1 or any(len(col) != n for col in columns.values()) or columns["parent"][0] != -1:
            raise CtrldecError(f"{path} is corrupt: its node columns disagree in length or lack the root")
        parents = columns["parent"][1:]
        if (parents < 0).any() or (parents >= np.arange(1, n)).any():
            raise CtrldecError(f"{path} is corrupt: a node's parent is not an earlier node")
        if not (np.isfinite(columns["efg"]).all() and ((columns["efg"] >= 0) & (columns["efg"] <= 1)).all()):
            raise CtrldecError(f"{path} is corrupt: an EFG estimate outside [0, 1]")
        self._cols = {name: col.copy() for name, col in columns.items()}
        self._size = n
        self._kid_tokens, self._kid_nodes = [None] * n, [None] * n
        order = np.lexsort((columns["token"][1:], parents)) + 1  # children grouped by parent, tokens ascending
        for parent, group in _groups(columns["parent"][order], order):
            self._kid_tokens[parent] = columns["token"][group].astype(np.int32)
            self._kid_nodes[parent] = group.astype(np.int32)
            if len(np.unique(self._kid_tokens[parent])) != len(group):  # type: ignore[arg-type]
                raise CtrldecError(f"{path} is corrupt: node {parent} has two children for one token")

    def logits_processor(self, constraint: Any, tokenizer: Any, **kwargs: Any):
        """ASAp as a ``transformers`` logits processor over this oracle (``ASApLogitsProcessor``)."""
        from ..processors.asap import ASApLogitsProcessor

        return ASApLogitsProcessor(self, constraint, tokenizer, **kwargs)


def _key(raw: Any, path: Any) -> OracleKey | None:
    if raw is None:
        return None
    try:
        return OracleKey(tuple(int(t) for t in raw["prompt"]), str(raw["constraint"]), str(raw["tokenizer"]),
                         str(raw.get("about", "")))
    except (TypeError, KeyError, ValueError):
        raise CtrldecError(f"{path} is corrupt: its key is not a prompt, constraint and tokenizer") from None


def _stats(probs: torch.Tensor, allowed: torch.Tensor, eos: Sequence[int]) -> tuple[float, float, int]:
    """``(z_eos, z_open, n_open)`` from the masked probabilities and the allowed tokens."""
    ids = torch.tensor([t for t in eos if t < probs.numel()], dtype=torch.int64)
    z_all, n_all = float(probs.sum()), int(allowed.sum())
    if not len(ids):
        return 0.0, z_all, n_all
    z_eos = float(probs[ids].sum())
    return z_eos, max(z_all - z_eos, 0.0), n_all - int(allowed[ids].sum())


def _groups(keys: np.ndarray, values: np.ndarray):
    """(key, values with that key) for runs of equal ``keys``."""
    if not len(keys):
        return
    cuts = np.flatnonzero(np.diff(keys)) + 1
    for chunk_keys, chunk in zip(np.split(keys, cuts), np.split(values, cuts)):
        yield int(chunk_keys[0]), chunk


class ASApStep:
    """ASAp's draws for one sequence: a ``TokenSampler`` at a moving node of the oracle's trie.

    ``choose`` masks the logits (temperature 1), adds ``log EFG~`` of the node's children, draws,
    and records the ``Step``; ``forced`` records a token the constraint fixed (its only allowed
    token in the language the loop samples; ``log_p`` from its scoring pass) and ``end`` the EOS
    step where only EOS is allowed. ``steps`` is the path ``ASApOracle.observe`` takes.
    One instance per sequence (it holds the node); never shared between sequences.
    """

    controls = Controls()

    def __init__(self, oracle: ASApOracle, eos: Iterable[int]) -> None:
        self.oracle = oracle
        self.eos = sorted(eos)
        self.node = ROOT
        self.steps: list[Step] = []

    def __repr__(self) -> str:
        return f"ASApStep(node={self.node}, steps={len(self.steps)})"

    def choose(self, logits: torch.Tensor, matcher: Matcher, rng: torch.Generator | None = None, state: tuple = ()) -> Choice:
        allowed = allowed_tokens(matcher, logits.numel())
        logp = torch.log_softmax(logits, dim=-1, dtype=torch.float64)
        probs = torch.exp(logp).masked_fill_(~allowed, 0.0)
        z_eos, z_open, n_open = _stats(probs, allowed, self.eos)  # before the reweighting, which is in place
        weights = self.oracle.weights(probs, self.node)
        if weights is None:  # every estimate underflowed: masking at this node
            weights = torch.exp(logp).masked_fill_(~allowed, 0.0)
        token = int(torch.multinomial(weights, 1, generator=rng))
        self._record(Step(token, float(logp[token]), z_eos, z_open, n_open, token in self.eos))
        return Choice(token, 0, True, log_q=math.log(float(weights[token]) / float(weights.sum())))

    def forced(self, token: int, log_p: float) -> None:
        """A token committed without a draw, with its model log-probability."""
        self._record(Step(token, log_p, 0.0, math.exp(log_p), 1))

    def end(self, logits: torch.Tensor, matcher: Matcher) -> None:
        """The EOS step at a node where the constraint allows only EOS."""
        logp = torch.log_softmax(logits.double(), dim=-1)
        ids = [t for t in self.eos if t < logp.numel() and matcher.accepts(t)]
        z_eos = float(torch.exp(logp[ids]).sum()) if ids else 0.0
        self._record(Step(ids[0] if ids else -1, math.log(max(z_eos, 1e-300)), z_eos, 0.0, 0, True))

    def _record(self, step: Step) -> None:
        self.steps.append(step)
        self.node = -1 if step.eos else self.oracle.child(self.node, step.token)
