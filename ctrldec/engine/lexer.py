"""The lexer automaton: all terminal DFAs of a grammar run in parallel, over bytes.

A lexer state is the set of (terminal, DFA state) pairs still alive in the current lexeme. The
contextual lexer of LALR parser state ``q`` starts a lexeme with the terminals ``q`` has actions
for, plus the ``%ignore`` terminals (as Lark's contextual lexer does). States are shared between
contexts: once inside a lexeme, behaviour depends only on the alive set.

Lexing is greedy with one byte of lookahead: a lexeme ends exactly when the next byte cannot
extend any alive terminal (or at the end of the text). Where several terminals accept the same
lexeme, the higher priority wins, then a string literal over a regex (Lark's "unless" rule), then
Lark's terminal order. A lexeme that no byte can extend ends at once ("eager" states), which keeps
matcher states canonical and mask caches small.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..limits import DEFAULT_LIMITS
from .bytedfa import (
    SAFE_ASCII, ByteDFA, LazyDFA, MinusParts, check_budget, finite_rests, fold_classes, read_only, safe_multibyte_sequences, successor_lists, uniform_successor,
    unique, unique_inverse,
)

__all__ = ["Terminal", "LexerAutomaton", "VIRTUAL"]

_BUILD_LEVELS = 8  # characters of a lazy terminal built with the grammar; the rest on demand
VIRTUAL = 1 << 62  # lexer states from here on are folded counters (``LexerAutomaton.arrive``)
_STRIDE = 1 << 32  # a folded state is VIRTUAL + levels * _STRIDE + its base state
FOLD_AHEAD = 256  # bytes of look-ahead a folded state's base stands for (see ``arrive``)
_safe_ascii = operator.itemgetter(*SAFE_ASCII.tolist())  # a row's entries for the safe ASCII bytes
_UNBUILT: tuple[int, ...] = (-1,) * 256  # the row of a state not built yet (shared, immutable)
_FLAG_BYTES = 100  # a dict entry of ``runs``, or of ``run_chain`` beside its arrays, estimated
_STATE_BYTES = 200  # a state's members tuple, index entry and per-state list slots (estimated)
_ROW_BYTES = 256 * 8 + 40  # a built state's row as a Python tuple (``trans_list``), small ints shared


_GATHER_ROWS = 4096  # rows ``_build_literal_tree`` gathers at once (4 MB)
_FEW_BYTES = 24  # live bytes up to which a state's combinations of next states are grouped in Python
_LISTED_RESTS = 64  # strings an automaton's member may have left for ``literal_rests`` to list them
_SHARE_STATES = 64  # reachable DFA states up to which a lexer state's key is its reachable part
_DENSE_SUCCESSORS = 256  # automata up to this size list every state's successors at once
_FOLD_AFTER = 4  # states of an automaton named by identity asked for before its states are folded (``_folded``)
_CONTENT_STATES = 127  # automata up to this size share their keys by content across grammars
_LOOP_BYTES = 8  # ASCII bytes leading to one state, from which masks settle tokens by a subset test (``runs``)
_RUN_BYTES = 32  # ... leading on to another state: fewer (hex digits, say) and most tokens fail the test, to be walked one by one
_ALL_BITS = (1 << 64) - 1
_CLOSED_STATES = 512  # states ``safe_closed`` searches before it answers False (an unanchored
# ``[0-9a-f]{40}`` tracks 40 run lengths and their multi-byte states; each walked whole cost 7-12 ms)
_KEYS_BY_CONTENT: dict[tuple[bytes, int], tuple | None] = {}  # thread-safe: a dict, values fixed
_MISSING = object()


def _reachable_key(dfa: ByteDFA, state: int) -> tuple | None:
    """``LexerAutomaton._automaton_key`` of a dense automaton: its part reachable from ``state``
    by content (states numbered breadth-first, successors in the order of the first byte that
    reaches them), None past ``_SHARE_STATES`` states (hashing a large automaton costs more than
    a classification).

    Grammars build their small automata (punctuation, keywords, property names) afresh, so the
    answer for a small automaton is also kept by the automaton's whole content, for every
    grammar of the process (``_KEYS_BY_CONTENT``). A literal's part from ``state`` on is the
    rest of its bytes: that is its key, with no search."""
    text = dfa.__dict__.get("_literal")
    if text is not None:
        return ("literal", text[state:])
    minus = dfa.__dict__.get("_minus")
    if minus is not None:
        return _minus_key(minus, state)
    length = dfa.__dict__.get("_length")
    if length is not None:  # a tabulated string of bounded length: its layout is fixed by the bounds
        return ("length", *length, state)
    if len(dfa.trans) > _CONTENT_STATES:
        return _reachable(dfa, state)
    content = dfa.__dict__.get("_content")
    if content is None:
        table = dfa.trans.astype(np.int8).tobytes()  # ids < _CONTENT_STATES < 128, -1 kept
        content = hashlib.blake2b(table + np.asarray(dfa.accepting).tobytes(), digest_size=16).digest()
        object.__setattr__(dfa, "_content", content)
    key = _KEYS_BY_CONTENT.get((content, state), _MISSING)
    if key is _MISSING:
        key = _reachable(dfa, state)
        if len(_KEYS_BY_CONTENT) >= DEFAULT_LIMITS.max_cached_automaton_keys:
            _KEYS_BY_CONTENT.clear()  # a fresh start costs each key one more search
        _KEYS_BY_CONTENT[(content, state)] = key
    return key


def _minus_key(parts: MinusParts, state: int) -> tuple | None:
    """``_reachable_key`` of a state of ``minus_strings``'s result, from how it was made: its
    language is its base's from a state, less some suffixes, so the base's key and the
    suffixes name it (an object's other keys: its trie had cost a search per state, and past
    ``_SHARE_STATES`` states had no key to share)."""
    q, suffixes = parts.residual(state)
    base = _reachable_key(parts.base, q)
    if base is None or not suffixes:
        return base
    digest = hashlib.blake2b(digest_size=16)
    for suffix in suffixes:
        digest.update(len(suffix).to_bytes(4, "little"))
        digest.update(suffix)
    return ("minus", base, len(suffixes), digest.digest())


def _reachable(dfa: ByteDFA, state: int) -> tuple | None:
    """``_reachable_key`` itself, worked out."""
    successors = dfa.__dict__.get("_successors")
    if successors is None:  # per automaton object, which memoised patterns share across grammars
        successors = _successor_lists(dfa.trans) if len(dfa.trans) <= _DENSE_SUCCESSORS else {}
        object.__setattr__(dfa, "_successors", successors)
    dense = isinstance(successors, list)
    order = [state]
    number = {state: 0}
    for s in order:  # breadth-first; ``order`` grows as it is read
        if dense:
            nxt = successors[s]
        else:
            nxt = successors.get(s)
            if nxt is None:
                nxt = successors[s] = [x for x in dict.fromkeys(dfa.trans[s].tolist()) if x >= 0]
        for x in nxt:
            if x not in number:
                number[x] = len(order)
                order.append(x)
                if len(order) > _SHARE_STATES:
                    return None
    renum = np.full(len(dfa.trans) + 1, -1, dtype=np.int8)  # _SHARE_STATES < 128
    renum[order] = np.arange(len(order))
    table = renum[dfa.trans[order]]  # -1 stays -1 (renum[-1] is the spare last slot)
    digest = hashlib.blake2b(table.tobytes() + np.asarray(dfa.accepting)[order].tobytes(), digest_size=16)
    return ("reachable", len(order), digest.digest())


def _all_successors(dfa: ByteDFA) -> tuple[tuple[int, ...], ...]:
    """Each state's distinct successors (dead dropped), ascending; kept on the automaton object."""
    succ = dfa.__dict__.get("_all_successors")
    if succ is None:
        text = dfa.__dict__.get("_literal")
        if text is not None:  # ``literal``'s chain: state i leads to i + 1 (property names, made per compile)
            succ = tuple([(i + 1,) for i in range(len(text))]) + ((),)
        else:
            succ = successor_lists(dfa.trans)
        object.__setattr__(dfa, "_all_successors", succ)
    return succ


def _successor_lists(trans: np.ndarray) -> list[list[int]]:
    """Each state's successors (dead dropped), in the order of the first byte leading to each:
    ``dict.fromkeys(row)`` for every row at once."""
    n = len(trans)
    order = np.argsort(trans, axis=1, kind="stable")
    values = np.take_along_axis(trans, order, axis=1)
    first = np.empty(values.shape, dtype=bool)  # the first of each run of equal targets
    first[:, 0] = True
    np.not_equal(values[:, 1:], values[:, :-1], out=first[:, 1:])
    first &= values >= 0
    rows, cols = np.nonzero(first)
    by_byte = np.lexsort((order[rows, cols], rows))
    targets = values[rows, cols][by_byte].tolist()
    bounds = np.searchsorted(rows[by_byte], np.arange(n + 1)).tolist()
    return [targets[bounds[i] : bounds[i + 1]] for i in range(n)]


@dataclass(frozen=True)
class Terminal:
    name: str
    dfa: ByteDFA
    priority: int
    is_literal: bool
    ignore: bool
    order: tuple  # Lark's lexer order, used to break ties


def _locked(method):
    """Run a method that grows the shared tables under the automaton's lock (cold paths: the
    vectorised mask walks; the scalar path only reads, see the class docstring)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return locked


def _grown(old: np.ndarray | None, shape: tuple, fill, dtype) -> np.ndarray:
    out = np.empty(shape, dtype=dtype)  # each entry written once: the old ones, then the fill
    m = 0 if old is None else len(old)
    if old is not None:
        out[:m] = old
    out[m:] = fill
    return out


class _RowTuples(dict):
    """``LexerAutomaton.trans_list``: state -> its row as a tuple, for the scalar path, made from
    the table of the first build when first read (most rows of a large lexer never are); states
    added or built later are set explicitly. A state past the table raises IndexError, as a
    list would. Rows are tuples: a tuple of ints leaves the cyclic GC's lists after one
    collection, while a list stays tracked (200,000 rows after 300 schemas made each full
    collection 0.5 s)."""

    __slots__ = ("table",)

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = table

    def __missing__(self, state: int) -> tuple[int, ...]:
        if not 0 <= state < len(self.table):
            raise IndexError(state)
        row = self[state] = tuple(self.table[state].tolist())
        return row


def _intern_key(members: tuple, start: bool) -> tuple[int, ...]:
    """A lexer state's key in the intern table: flat ints, (start, t0, s0, t1, s1, ...). The cyclic
    GC stops tracking a tuple of ints at its first look; a tuple of tuples stays tracked until
    a look finds its parts untracked first, which after a compile (the collector paused, then
    objects reordered by a collection) took two or three collections, so each state's key was
    carried into the oldest generation and counted towards the next full collection."""
    return (start, *[x for pair in members for x in pair])


class LexerAutomaton:
    """Lexer states over the terminals of one grammar.

    Tables (index = lexer state): ``trans`` (int32[n, 256], -1 dead, also as tuples for
    scalar stepping), ``accepts`` (the terminals the lexeme is if it ends here: one, or for an
    ambiguous grammar every match; ``accept`` is the first or -1), ``eager`` (accepting and no byte extends it), ``completable`` (bitset of the terminals
    the lexeme can still end as; bit ``ignore_bit`` stands for any ``%ignore`` terminal, and
    ``end_bit``, set on lexeme start states, for the text ending there), and
    ``start[q]`` (the state that starts a lexeme in parser state q; ``is_start`` marks such states).

    Threads: one automaton serves every matcher of its grammar. The per-state lists the scalar
    path reads (``trans_list``, ``accept``, ``accepts``, ``eager``, ``built``, ``completable``,
    ``start``) are read without a lock: they only grow, a state's entries are all in place
    before its id appears in any row, and a lazily built row is written before ``built`` says
    so. Everything that grows the automaton runs under ``lock`` (re-entrant, shared with the
    grammar's other caches): ``build`` (re-checking), and the numpy side of the mask walks.
    """

    def __init__(self, terminals: list[Terminal], contexts: Sequence[Sequence[int]], *, ambiguous: bool = False) -> None:
        self.lock = threading.RLock()
        self.terminals = terminals
        self.ambiguous = ambiguous
        self.ignore_bit = len(terminals)
        self.end_bit = len(terminals) + 1
        self._lazy_terms = [isinstance(t.dfa, LazyDFA) for t in terminals]
        self._literals = [t.dfa.__dict__.get("_literal") for t in terminals]  # bytes of a literal's DFA, else None
        self.lazy = any(self._lazy_terms)  # some states are built on demand (see ``build_many``)
        ignored = [i for i, t in enumerate(terminals) if t.ignore]
        self._ready = False  # True once built: states added later are registered one by one
        self._index: dict[tuple, int] = {}
        self._members: list[tuple] = []
        self._level: list[int] = []  # how deep into a lazy terminal a state is (0: not lazy)
        self.built: list[bool] = []
        self._rows: list[np.ndarray | None] = []
        self.is_start: list[bool] = []
        self._single_ids: dict[int, np.ndarray] = {}  # ``_ids_alone``
        self.start = self._intern_starts(contexts, ignored)
        self._build_first()
        table = self._tabulate()
        self._capacity = 0
        self._synced = 0
        self._dirty: list[int] = []
        self._closed: dict[int, bool] = {}
        self._ready = True
        self._shift: np.ndarray | None = None
        self._shift_buf: np.ndarray | None = None  # ``_shift`` is its first n entries
        self._chains: dict[int, np.ndarray] = {}  # ``chain_take``
        self._chain_bytes = 0
        self._runs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # ``run_chain``
        self._run_flags: dict[int, bool] = {}  # ``runs``
        self._run_bytes = 0
        self._sync(table)
        self.shift()  # part of compiling: no mask should pay for it
        if not self.lazy:
            self._freeze()

    def _intern_starts(self, contexts: Sequence[Sequence[int]], ignored: list[int]) -> list[int]:
        """Each parser context's lexeme start state (parser states share a few distinct sets of
        terminals: one state per set)."""
        starts: dict[tuple, int] = {}
        out = []
        for ctx in contexts:
            key = tuple(ctx)  # (already a tuple from ``build_tables``)
            state = starts.get(key)
            if state is None:
                members = tuple((t, 0) for t in sorted(set(ctx) | set(ignored)) if not self.terminals[t].dfa.empty)
                state = starts[key] = self._intern(members, start=True)
            out.append(state)
        return out

    def _build_first(self) -> None:
        """Build every state reachable from the starts but the deferred ones (``_is_deferred``):
        a terminal alone by its whole automaton at once, a trie of literals at once, the rest
        state by state."""
        done = 0
        while done < len(self._members):
            if done % 64 == 0:
                check_budget(len(self._members))
            members = self._members[done]
            if self.built[done] or self._is_deferred(done):
                pass
            elif len(members) == 1 and not self._lazy_terms[members[0][0]] and not self.is_start[done]:
                self._build_single(*members[0])
            elif not self.is_start[done] and self._literal_shaped(members):
                self._build_literal_tree(done)
            else:
                self._rows[done] = self._successors(members)
                self.built[done] = True
            done += 1
        self._single_ids.clear()  # only the first build uses them

    def _tabulate(self) -> np.ndarray:
        """The first build's rows as one table, and the per-state lists read from it (accepting
        terminals, eager ends, completable bits); returns the table."""
        n = len(self._members)
        self.accepts = [() if first else self._choose(m) for first, m in zip(self.is_start, self._members)]
        self.accept = [a[0] if a else -1 for a in self.accepts]
        table = np.full((n, 256), -1, dtype=np.int32)
        for state, row in enumerate(self._rows):
            if row is not None:
                table[state] = row
        self._rows = [None] * n  # staged only: the table holds them now
        self.trans_list = _RowTuples(table)
        self.trans_list.update((s, _UNBUILT) for s in np.flatnonzero(~np.array(self.built, dtype=bool)).tolist())
        ends = (np.array(self.accept, dtype=np.int64) >= 0) & np.array(self.built, dtype=bool) & ~(table >= 0).any(axis=1)
        self.eager = ends.tolist()
        self.completable = self._completable(table)
        self.completable_values = sorted(set(self.completable))  # distinct completable bitsets
        self._value_ids = {v: i for i, v in enumerate(self.completable_values)}
        return table

    def _freeze(self) -> None:
        """An automaton with no lazy terminal is complete once built: its per-state lists become
        tuples, which the cyclic GC stops scanning after one collection (a list of n states costs
        every full collection n visits; a process's 256 cached grammars held 1,000,000 of them)."""
        for name in ("start", "_members", "_level", "built", "is_start", "accepts", "accept", "eager", "completable"):
            setattr(self, name, tuple(getattr(self, name)))
        self._rows = ()  # staged rows only serve states built later
        self.completable_values = tuple(self.completable_values)

    @property
    def n_states(self) -> int:
        return len(self._members)

    def _intern(self, members: tuple, start: bool = False) -> int:
        # A lexeme's start state is kept apart from a state with the same alive set reached after
        # some bytes (a DFA can loop back to its start): only the former may end with no lexeme.
        key = _intern_key(members, start)
        state = self._index.get(key)
        if state is None:
            state = self._index[key] = len(self._members)
            self._members.append(members)
            level = max((self.terminals[t].dfa.depth(s) for t, s in members if self._lazy_terms[t]), default=0) if self.lazy else 0
            self._level.append(level)
            self.built.append(False)
            self._rows.append(None)
            if self._ready:  # a state added on demand: its entries in the per-state lists
                self._register(members)
            else:
                self.is_start.append(start)
        return state

    def _register(self, members: tuple) -> None:
        self.is_start.append(False)
        self.accepts.append(self._choose(members))
        self.accept.append(self.accepts[-1][0] if self.accepts[-1] else -1)
        self.trans_list[len(self._members) - 1] = _UNBUILT
        self.eager.append(False)
        bits = self._lazy_bits(members)
        self.completable.append(bits)
        if bits not in self._value_ids:
            self._value_ids[bits] = len(self.completable_values)
            self.completable_values.append(bits)

    def _is_deferred(self, state: int) -> bool:
        """Left for later: one lazy terminal alive, past the first characters. (With several alive,
        which of them the lexeme can still end as is decided over the whole automaton, so such
        states are always built.)"""
        return self._single_lazy(state) and self._level[state] > _BUILD_LEVELS

    def _build_single(self, t: int, s: int) -> None:
        """Build state ((t, s),) and every state of terminal ``t`` alone that it leads to, at once
        (while the automaton is built; ``t`` not lazy): with one terminal alive, the lexer state
        follows its DFA state, so the rows are the DFA's rows renumbered."""
        dfa = self.terminals[t].dfa
        succ = _all_successors(dfa)
        ids = self._ids_alone(t)
        todo: list[int] = []  # DFA states whose lexer state is built here
        stack = [s]
        seen = {s}  # states met may already be interned (by ``_alone``) but not built
        ids[s] = self._intern(((t, s),))
        built = self.built
        while stack:
            x = stack.pop()
            todo.append(x)
            for y in succ[x]:
                if y not in seen:
                    seen.add(y)
                    if ids[y] < 0:
                        ids[y] = self._intern(((t, y),))
                    if not built[ids[y]]:
                        stack.append(y)
        rows = ids[dfa.trans[todo]]
        for x, row in zip(todo, rows):
            state = int(ids[x])
            self._rows[state] = row
            self.built[state] = True
        check_budget(len(self._members))

    def _literal_shaped(self, members: tuple) -> bool:
        """Literals (property names, keywords) beside at most one dense automaton: the shape
        ``_build_literal_tree`` builds."""
        others = [t for t, _ in members if self._literals[t] is None]
        return len(others) == 0 or len(others) == 1 and not self._lazy_terms[others[0]]

    def _build_literal_tree(self, state: int) -> None:
        """Build ``state`` (``_literal_shaped``, while the automaton is first built) and every
        state of that shape its bytes lead to, at once. Such states follow the trie of the
        literals' remaining bytes (an object's property names, beside the automaton of its
        other keys), thousands in a schema with large objects: their rows are the other
        automaton's rows, read in one gather, with the literals' bytes leading down the trie.
        The same rows ``_successors`` gives each state (tests/engine), in fewer steps."""
        literals = self._literals
        nodes: list[int] = []  # the states built here
        other_at: list[int] = []  # each one's other member's DFA state (-1: none; always terminal ``t_o``)
        down: list[tuple[int, int, int]] = []  # (node, byte, state) along the literals
        todo = [state]
        queued = {state}
        t_o = -1
        while todo:
            x = todo.pop()
            members = self._members[x]
            on: dict[int, list[int]] = {}  # byte -> the members (indexes) continuing on it
            s_o = -1
            for i, (t, s) in enumerate(members):
                data = literals[t]
                if data is None:
                    t_o, s_o = t, s
                elif s < len(data):
                    on.setdefault(data[s], []).append(i)
            o_row = self.terminals[t_o].dfa.trans[s_o] if s_o >= 0 else None
            k = len(nodes)
            if k % 256 == 255:  # a schema of 40,000 properties makes a trie of millions of states
                check_budget(len(self._members))
            nodes.append(x)
            other_at.append(s_o)
            for b, continuing in on.items():
                x_o = -1 if o_row is None else int(o_row[b])
                if x_o < 0 and len(continuing) == 1:  # one literal alone goes on
                    t, s = members[continuing[0]]
                    down.append((k, b, self._alone_one(t, s + 1)))
                    continue
                child = tuple((t, s + 1) if i in continuing else (t, x_o) for i, (t, s) in enumerate(members) if i in continuing or literals[t] is None and x_o >= 0)
                y = self._intern(child)
                down.append((k, b, y))
                if not self.built[y] and y not in queued:
                    queued.add(y)
                    todo.append(y)
        k, b, y = np.array(down, dtype=np.int64).reshape(-1, 3).T
        rows = np.full((len(nodes), 256), -1, dtype=np.int32)
        at = np.array(other_at)
        for lo in range(0, len(nodes) if (at >= 0).any() else 0, _GATHER_ROWS):
            # the other automaton's bytes, but those that go down the trie (a slice at a time:
            # no table-sized temporaries beside the rows kept)
            hi = lo + _GATHER_ROWS
            targets = self.terminals[t_o].dfa.trans[np.maximum(at[lo:hi], 0)]
            targets[at[lo:hi] < 0] = -1
            here = (k >= lo) & (k < hi)
            targets[k[here] - lo, b[here]] = -1
            rows[lo:hi] = self._alone(t_o, targets)
        rows[k, b] = y
        for x, row in zip(nodes, rows):
            self._rows[x] = row
            self.built[x] = True
        check_budget(len(self._members))

    # -- building on demand ------------------------------------------------------------------------

    @_locked
    def build_many(self, states: np.ndarray) -> bool:
        """Build the states among ``states`` (-1 allowed) that are not built yet, and bring the
        numpy tables up to date; True if the tables changed in any way (re-read them then: a
        state built elsewhere, by ``build`` or ``safe_closed``, may have grown them)."""
        if not self.lazy:
            return False
        changed = self._synced < len(self._members) or bool(self._dirty)
        self.sync()
        states = states[states >= 0]
        missing = states[~self.built_np[states]]
        if not len(missing):
            return changed
        for s in unique(missing).tolist():
            self._build(s)
        self._sync()
        return True

    def build(self, state: int) -> None:
        """Build one state now (the scalar stepping path meets it; ``sync`` before using numpy)."""
        if not self.built[state]:
            with self.lock:
                if not self.built[state]:
                    self._build(state)

    @_locked
    def sync(self) -> None:
        """Make the numpy tables cover every state (cheap when they do)."""
        if self._synced < len(self._members) or self._dirty:
            self._sync()

    def _build(self, state: int) -> None:
        row = self._successors(self._members[state])
        self._rows[state] = row
        self._dirty.append(state)
        self.trans_list[state] = tuple(row.tolist())
        self.eager[state] = self.accept[state] >= 0 and not (row >= 0).any()
        if self._shift is not None and state < len(self._shift) and self._single_lazy(state):
            self._shift_buf[state] = self._lazy_shift(state)  # left unknown while unbuilt (``shift``)
        self.built[state] = True  # last: lock-free readers trust the row once this is set

    def _lazy_bits(self, members: tuple) -> int:
        """``completable`` of a deferred state: its one terminal (every lazy state is live)."""
        ((t, _),) = members
        return 1 << (self.ignore_bit if self.terminals[t].ignore else t)

    def _sync(self, table: np.ndarray | None = None) -> None:
        """Bring the numpy tables up to date with the states added or built since the last call
        (capacity doubles, so a long lexeme costs amortised constant time per state). ``table``:
        the whole transition table, when the automaton is first built (taken as it is)."""
        n = len(self._members)
        if table is not None:
            self._capacity = n
            self._trans_buf = table
            self._accept_buf = np.array(self.accept, dtype=np.int32)
            self._multi_buf = np.array([len(a) > 1 for a in self.accepts], dtype=bool)
            self._eager_buf = np.array(self.eager, dtype=bool)
            self._built_buf = np.array(self.built, dtype=bool)
            self._cid_buf = np.array([self._value_ids[c] for c in self.completable], dtype=np.int32)
            self._synced = n
        if n > self._capacity:
            cap = max(n, 2 * self._capacity) if self.lazy else n
            self._trans_buf = _grown(getattr(self, "_trans_buf", None), (cap, 256), -1, np.int32)
            self._accept_buf = _grown(getattr(self, "_accept_buf", None), (cap,), -1, np.int32)
            self._multi_buf = _grown(getattr(self, "_multi_buf", None), (cap,), False, bool)
            self._eager_buf = _grown(getattr(self, "_eager_buf", None), (cap,), False, bool)
            self._built_buf = _grown(getattr(self, "_built_buf", None), (cap,), False, bool)
            self._cid_buf = _grown(getattr(self, "_cid_buf", None), (cap,), 0, np.int32)
            self._capacity = cap
            if self._ready:  # the old table holds nothing the new one lacks: let it go
                self.trans_list.table = self._trans_buf
        for s in [*range(self._synced, n), *self._dirty]:
            row = self._rows[s]
            if row is not None:
                self._trans_buf[s] = row
                self._rows[s] = None  # staged only: the table holds it now
            self._accept_buf[s] = self.accept[s]
            self._multi_buf[s] = len(self.accepts[s]) > 1
            self._eager_buf[s] = self.eager[s]
            self._built_buf[s] = self.built[s]
            self._cid_buf[s] = self._value_ids[self.completable[s]]
        self._dirty = []
        self._synced = n
        # read-only views: only ``_sync`` writes, into the buffers, under the grammar's lock
        self.trans = read_only(self._trans_buf[:n])
        self.accept_np = read_only(self._accept_buf[:n])
        self.multi_np = read_only(self._multi_buf[:n])
        self.eager_np = read_only(self._eager_buf[:n])
        self.built_np = read_only(self._built_buf[:n])
        self.completable_id = read_only(self._cid_buf[:n])

    def memory_size_bytes(self) -> int:
        """Estimated bytes, in O(1): the numpy tables (exact, spare capacity included), and per
        state ``_ROW_BYTES`` for its row list (an upper bound: states not built yet share one)
        and ``_STATE_BYTES`` for the rest."""
        names = ("_trans_buf", "_accept_buf", "_multi_buf", "_eager_buf", "_built_buf", "_cid_buf", "_shift_buf")
        arrays = [getattr(self, name, None) for name in names]
        runs = self._run_bytes + len(self._run_flags) * _FLAG_BYTES
        return sum(a.nbytes for a in arrays if a is not None) + self._chain_bytes + runs + self.n_states * (_ROW_BYTES + _STATE_BYTES)

    def _successors(self, members: tuple) -> np.ndarray:
        if not members:
            return np.full(256, -1, dtype=np.int32)
        if len(members) == 1:  # one terminal alive: no combinations to sort out
            t, s = members[0]
            return self._alone(t, self.terminals[t].dfa.trans[s])
        literals = self._literals
        others = [i for i, (t, _) in enumerate(members) if literals[t] is None]
        if len(others) <= 1:
            return self._successors_literals(members, others[0] if others else -1)
        nxt = np.stack([self.terminals[t].dfa.trans[s] for t, s in members])  # [k, 256]
        alive = nxt >= 0
        count = alive.sum(axis=0)
        # a byte that extends one terminal leads to that terminal alone (most bytes: a literal key
        # beside a name automaton continues on one byte), read from its DFA row
        row = np.full(256, -1, dtype=np.int32)
        for i, (t, _) in enumerate(members):
            only = alive[i] & (count == 1)
            if only.any():
                row[only] = self._alone(t, nxt[i, only])
        live = np.flatnonzero(count > 1)  # bytes that extend several terminals: their combinations
        if len(live) <= _FEW_BYTES:
            by_combo: dict[tuple, list[int]] = {}
            for b, combo in zip(live.tolist(), nxt[:, live].T.tolist()):
                by_combo.setdefault(tuple(combo), []).append(b)
            for combo in sorted(by_combo):
                row[by_combo[combo]] = self._intern(tuple((t, s2) for (t, _), s2 in zip(members, combo) if s2 >= 0))
            return row
        cols = nxt[:, live].astype(np.int64)
        # each byte's combination of next states as one number (mixed radix, renumbered densely
        # before it could overflow), then one state per distinct combination
        code = cols[0] + 1
        size = int(code.max()) + 1
        for i in range(1, len(members)):
            radix = int(cols[i].max()) + 2
            if size * radix >= 1 << 62:
                code = unique_inverse(code)[2]
                size = int(code.max()) + 1
            code = code * radix + cols[i] + 1
            size *= radix
        _, first, inverse = unique_inverse(code)
        combos = [tuple(c) for c in cols[:, first].T.tolist()]
        ids = np.empty(len(combos), dtype=np.int32)
        for j in sorted(range(len(combos)), key=combos.__getitem__):
            ids[j] = self._intern(tuple((t, s2) for (t, _), s2 in zip(members, combos[j]) if s2 >= 0))
        row[live] = ids[inverse.ravel()]
        return row

    def _successors_literals(self, members: tuple, other: int) -> np.ndarray:
        """``_successors`` of a state whose members are literals (property names, keywords) and at
        most one other automaton, at index ``other`` (-1: none), without stacking rows: a literal
        continues on one byte, so only those few bytes can extend several members. States are
        interned in the same order as the general case (each member's lone bytes in member
        order, then the combinations sorted), so the automaton is numbered identically."""
        literals = self._literals
        on: dict[int, list[int]] = {}  # byte -> the literal members (indexes) that continue on it
        for i, (t, s) in enumerate(members):
            if i != other:
                data = literals[t]
                if s < len(data):
                    on.setdefault(data[s], []).append(i)
        if other >= 0:
            t_o, s_o = members[other]
            o_row = self.terminals[t_o].dfa.trans[s_o]
            o_next = o_row[list(on)].tolist() if on else []
        else:
            o_next = [-1] * len(on)
        shared = {b: x for b, x in zip(on, o_next) if x >= 0 or len(on[b]) > 1}  # byte -> other's next
        row = None
        for i, (t, s) in enumerate(members):
            if i == other:
                alone = o_row.copy()
                alone[list(shared)] = -1
                live = alone >= 0
                if live.any():
                    ids = self._alone(t, alone)
                    if row is None:
                        row = ids
                    else:  # a literal before it in member order set its byte
                        row[live] = ids[live]
            elif s < len(literals[t]) and literals[t][s] not in shared:
                if row is None:
                    row = np.full(256, -1, dtype=np.int32)
                row[literals[t][s]] = self._alone_one(t, s + 1)
        if row is None:
            row = np.full(256, -1, dtype=np.int32)
        combos = []
        for b, x in shared.items():
            combo = [-1] * len(members)
            for i in on[b]:
                combo[i] = members[i][1] + 1
            if other >= 0:
                combo[other] = x
            combos.append((tuple(combo), b))
        for combo, b in sorted(combos):
            row[b] = self._intern(tuple((t, s2) for (t, _), s2 in zip(members, combo) if s2 >= 0))
        return row

    def _alone_one(self, t: int, target: int) -> int:
        """``_alone`` of one live target (a scalar)."""
        if self._ready or self._lazy_terms[t]:
            return self._intern(((t, target),))
        known = self._ids_alone(t)
        if known[target] < 0:
            known[target] = self._intern(((t, target),))
        return int(known[target])

    def _ids_alone(self, t: int) -> np.ndarray:
        """DFA state of terminal ``t`` -> lexer state ((t, s),), as far as interned (-1: not yet;
        the last entry stands for the dead target and stays -1). First build only."""
        ids = self._single_ids.get(t)
        if ids is None:
            ids = self._single_ids[t] = np.full(self.terminals[t].dfa.n_states + 1, -1, dtype=np.int32)
        return ids

    def _alone(self, t: int, targets: np.ndarray) -> np.ndarray:
        """int32[k]: the lexer state ((t, s2),) of each target ``s2`` in ``targets`` (DFA states
        of terminal ``t``; -1 stays dead). While the automaton is first built, a dense
        terminal's states are numbered through ``_single_ids`` (one gather); otherwise each
        distinct target is interned."""
        if self._ready or self._lazy_terms[t]:
            distinct, _, inverse = unique_inverse(targets)
            ids = np.array([self._intern(((t, s2),)) if s2 >= 0 else -1 for s2 in distinct.tolist()], dtype=np.int32)
            return ids[inverse.ravel()]
        known = self._ids_alone(t)
        out = known[targets]  # a dead target reads the last entry, which stays -1
        new = targets[(out < 0) & (targets >= 0)]
        if len(new):
            for s2 in unique(new).tolist():
                known[s2] = self._intern(((t, s2),))
            out = known[targets]
        return out

    def _choose(self, members: tuple) -> tuple[int, ...]:
        """The terminals a lexeme ending here is: the one Lark's rules pick, or (ambiguous) all."""
        done = sorted((t for t, s in members if self.terminals[t].dfa.accepting[s]), key=lambda t: self.terminals[t].order)
        return tuple(done) if self.ambiguous else tuple(done[:1])

    def _completable(self, table: np.ndarray) -> list[int]:
        """Each state's ``completable`` bits. A state where one terminal is alive (not a lexeme's
        start) has that terminal's bit: every state of a terminal's automaton can still reach
        acceptance, and its successors keep the terminal alone. The other states (several
        terminals alive, or a start) take the union over what they reach, to a fixed point over
        those states only."""
        term_bit = [1 << (self.ignore_bit if t.ignore else i) for i, t in enumerate(self.terminals)]
        bits = []
        mixed = []  # states whose bits depend on their successors'
        for s, (first, members) in enumerate(zip(self.is_start, self._members)):
            if len(members) == 1 and not first:  # a deferred state is one of these
                bits.append(term_bit[members[0][0]])
                continue
            b = (1 << self.end_bit) if first else 0
            for t in self.accepts[s]:
                b |= term_bit[t]
            bits.append(b)
            mixed.append(s)
        succ = successor_lists(table[mixed], len(table))
        changed = True
        while changed:
            changed = False
            for i in range(len(mixed) - 1, -1, -1):
                s = mixed[i]
                b = bits[s]
                for x in succ[i]:
                    b |= bits[x]
                if b != bits[s]:
                    bits[s] = b
                    changed = True
        return bits

    @_locked
    def shift(self) -> np.ndarray:
        """int[state]: the one state every JSON-string-safe character (any UTF-8 character but
        controls, quote and backslash) leads to, -1 if every such character is rejected, -2 if
        they do not all agree (or it is not known yet). A string interior shifts to itself, a
        character counter to the next count: a token of n safe characters from state s ends in
        shift^n(s), which lets masks settle such tokens without walking their bytes."""
        self.sync()
        n = self.n_states
        if self._shift is None or len(self._shift) < n:
            old = self._shift
            m = 0 if old is None else len(old)
            out = self._shift_buf if old is not None and self._shift_buf is not None and len(self._shift_buf) >= n else None
            if out is None:  # capacity doubles: a lazy lexer grows a few states per first visit
                out = np.full(max(n, 2 * m) if self.lazy else n, -2, dtype=np.int32)
                if old is not None:
                    out[:m] = old
                self._shift_buf = out
            new = np.arange(m, n)
            lazy = np.array([self._single_lazy(s) for s in range(m, n)], dtype=bool)
            if (~lazy).any():
                out[new[~lazy]] = self._shift_of(new[~lazy])
            built = self.built
            for s in new[lazy].tolist():  # an unbuilt one gets its shift when built (``_build``)
                out[s] = self._lazy_shift(s) if built[s] else -2
            self._shift = read_only(out[:n])  # a view: only this method and ``_build`` write the buffer, under the lock
        return self._shift

    def running(self, states: np.ndarray) -> np.ndarray:
        """Per state of ``states``: ``runs``. Asked mostly of one or two states at a time."""
        if len(states) <= 16:
            return np.array([self.runs(x) for x in states.tolist()], dtype=bool)
        distinct, _, inverse = unique_inverse(states)
        return np.array([self.runs(x) for x in distinct.tolist()], dtype=bool)[inverse.ravel()]

    def runs(self, state: int) -> bool:
        """Does ``state`` begin a run: do at least ``_LOOP_BYTES`` ASCII bytes lead back to it,
        or ``_RUN_BYTES`` on to one other state (``_run_step``)? A token whose later bytes all lie
        in the run's sets (``run_chain``) ends where the run leads, which masks find by a subset
        test instead of a walk: the loop of ``[A-Za-z0-9_]*`` keeps every word-like token in
        place, and the counted groups of an identifier pattern (``[0-9a-zA-Z]{8}-...``) move it
        one count per byte. An unbuilt state has none, and is asked again once built."""
        known = self._run_flags.get(state)
        if known is None:
            if not self.built[state]:
                return False
            known = self._run_flags[state] = self._run_step(state) is not None
        return known

    def _run_step(self, x: int) -> tuple[int, int, int] | None:
        """A run's step from built state ``x``: (the state, the bytes leading there as bit sets for
        0-63 and 64-127), or None where fewer than ``_LOOP_BYTES`` agree (``_RUN_BYTES`` where
        they lead to another state than ``x``), or they lead into a
        state that ends the lexeme or that ``shift`` settles (a string interior: a property
        name's next letter leads out of the name into it, and the walk hands such tokens over)."""
        ascii_row = self.trans_list[x][:128]
        live = set(ascii_row)
        live.discard(-1)
        y = max(live, key=ascii_row.count, default=-1)
        if y < 0 or ascii_row.count(y) < (_LOOP_BYTES if y == x else _RUN_BYTES):
            return None
        self.build(y)
        if self.eager[y] or self.shift()[y] != -2:  # (a state that shifts is settled by ``shift``: its run is no help)
            return None
        low, high = np.packbits(np.array(ascii_row) == y, bitorder="little").view("<u8").tolist()
        return y, low, high

    @_locked
    def run_chain(self, state: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The run from ``state`` (``runs``), ``length`` + 1 entries: ``states[k]`` is where ``k``
        bytes of the run lead, and ``low[k]``, ``high[k]`` the ASCII bytes (bit sets, as in
        ``TokenizerInfo.tail_sets``) that lead on at each of those ``k`` steps; -1 and empty sets
        past the run's end (where ``_run_step`` finds no step, or the sets' intersection is
        empty). A token of ``k`` more bytes, all in ``low[k]``/``high[k]``, ends in
        ``states[k]``. Builds the states it passes (a walk of those tokens would): ask for as
        many steps as the tokens need. Kept per state, and made longer on a longer ask."""
        known = self._runs.get(state)
        if known is not None and len(known[0]) > length:
            return known
        states, low, high = [state], [_ALL_BITS], [_ALL_BITS]
        x, lo, hi = state, _ALL_BITS, _ALL_BITS
        while len(states) <= length:
            self.build(x)
            step = self._run_step(x)
            if step is None:
                break
            y, step_lo, step_hi = step
            lo, hi = lo & step_lo, hi & step_hi
            if not (lo or hi):
                break
            if y == x:  # a loop: every later step is the same
                states += [x] * (length + 1 - len(states))
                low += [lo] * (length + 1 - len(low))
                high += [hi] * (length + 1 - len(high))
                break
            states.append(y)
            low.append(lo)
            high.append(hi)
            x = y
        pad = length + 1 - len(states)
        found = (read_only(np.array(states + [-1] * pad, dtype=np.int32)), read_only(np.array(low + [0] * pad, dtype=np.uint64)),
                 read_only(np.array(high + [0] * pad, dtype=np.uint64)))
        self._runs[state] = found
        self._run_bytes += sum(a.nbytes for a in found) + _FLAG_BYTES
        return found

    def _single_lazy(self, state: int) -> bool:
        members = self._members[state]
        return len(members) == 1 and self._lazy_terms[members[0][0]]

    def _lazy_shift(self, state: int) -> int:
        """shift of a state where one lazy terminal is alive, asked of its automaton."""
        ((t, s),) = self._members[state]
        target = self.terminals[t].dfa.shift(s)
        return target if target < 0 else self._intern(((t, target),))

    def _shift_of(self, idx: np.ndarray) -> np.ndarray:
        """shift of the states ``idx`` through the table (-2 where a state on the way is not built)."""
        return uniform_successor(self.trans, idx, self.built_np)

    @_locked
    def chain_take(self, states: np.ndarray, steps: np.ndarray, length: int) -> np.ndarray:
        """shift applied ``steps[i]`` times to ``states[i]`` (each step <= ``length``).

        Follows the few distinct states only, asking lazy automata past the table; each state's
        chain is kept (-2, "not known", is always a safe answer, so it may stay). A chain stops
        at a dead or unknown step, or where a state shifts to itself (a string interior), so
        most are a few steps long; a table of every state's chain had cost 0.3 ms on a grammar's
        first visit of a property name."""
        chains = self._chains
        if len(states) and (states == states[0]).all():  # the common case: one state (skip the sort)
            distinct, inverse = states[:1], np.zeros(len(states), dtype=np.int64)
        else:
            distinct, _, inverse = unique_inverse(states)
        rows = np.empty((len(distinct), length + 1), dtype=np.int32)
        for i, x in enumerate(distinct.tolist()):
            known = chains.get(x)
            if known is None or len(known) <= length:
                known = chains[x] = read_only(np.array(self._chain_of(x, length), dtype=np.int32))
                self._chain_bytes += known.nbytes
            rows[i] = known[: length + 1]
        return rows[0].take(steps) if len(distinct) == 1 else rows[inverse.ravel(), steps]

    def _chain_of(self, x: int, length: int) -> list[int]:
        """``x`` and shift applied to it 1..``length`` times (``chain_take``)."""
        shift = self.shift()
        chain = [x]
        while len(chain) <= length:
            if x < 0:
                break
            y = int(shift[x]) if x < len(shift) else -2
            if y == -2 and self._single_lazy(x):  # past the table, or not built yet: ask the automaton
                y = self._lazy_shift(x)
            if y == x:  # a fixed point: the rest of the chain is x
                break
            chain.append(y)
            x = y
        return chain + [x] * (length + 1 - len(chain))

    @_locked
    def safe_closed(self, state: int) -> bool:
        """Does every JSON-string-safe character, from ``state`` and from every state such
        characters lead to, keep the lexeme alive (never ending it) with the same ``completable``
        bits? Then a token of safe characters stays in the lexeme and can end it exactly as a
        lexeme at ``state`` can, wherever it lands (an unanchored pattern before its match, say),
        so masks settle such tokens without walking them.

        Cached. False is always a safe answer (the tokens are walked), so a search that fails,
        or passes ``_CLOSED_STATES`` states (64 where a lazy automaton is alive: counted levels
        would be searched one by one), marks every state it saw False: each state is searched
        once."""
        known = self._closed.get(state)
        if known is not None:
            return known
        limit = 64 if any(self._lazy_terms[t] for t, _ in self._members[state]) else _CLOSED_STATES
        bits = self.completable[state]
        seen, queue, ok = {state}, [state], True
        while queue and ok:
            u = queue.pop()
            self.build(u)
            ascii_next = _safe_ascii(self.trans_list[u])
            if min(ascii_next) < 0:
                ok = False
                break
            targets = set(ascii_next)
            for t in targets:
                self.build(t)  # the loop below builds them anyway; built, they can settle it here
            if any(self._closed.get(t) is False or self.eager[t] or self.completable[t] != bits for t in targets):
                ok = False  # settled by the ASCII characters alone (a name's prefix leaving its name)
                break
            if not self._add_wide_targets(u, targets):
                ok = False
                break
            for t in targets:
                self.build(t)
                if self._closed.get(t) is False or self.eager[t] or self.completable[t] != bits:
                    ok = False
                    break
                if t not in seen:
                    seen.add(t)
                    queue.append(t)
            if len(seen) > limit:
                ok = False
        for u in seen:  # True: each one's characters lead only inside this set
            self._closed[u] = ok
        return ok

    def _add_wide_targets(self, u: int, targets: set[int]) -> bool:
        """Add to ``targets`` the states every multi-byte character leads to from ``u``
        (``safe_closed``); False if one dies on the way."""
        for seq in safe_multibyte_sequences():
            cur = {u}
            for lo, hi in seq:
                nxt: set[int] = set()
                for c in cur:
                    self.build(c)
                    part = self.trans_list[c][lo : hi + 1]
                    if min(part) < 0:
                        return False
                    nxt.update(part)
                cur = nxt
            targets |= cur
        return True

    @_locked
    def canonical(self, state: int, ahead: int) -> int:
        """A state that every text of up to ``ahead`` bytes treats like ``state`` (for masks):
        deep inside a counted lexeme, far from both of its bounds, the count does not matter.
        Always a table state, also for a folded one."""
        if state >= VIRTUAL:
            levels, base = divmod(state - VIRTUAL, _STRIDE)
            ((t, s),) = self._members[base]
            dfa = self.terminals[t].dfa
            return self._intern(((t, dfa.canonical(dfa.unfold(s, levels), ahead)),))
        if not self.lazy or not self._single_lazy(state):
            return state
        ((t, s),) = self._members[state]
        c = self.terminals[t].dfa.canonical(s, ahead)
        return state if c == s else self._intern(((t, c),))

    # -- folded counters ---------------------------------------------------------------------------
    #
    # A string under ``maxLength: 100000`` would need a table state per character and a few of
    # its neighbours (~12 KB each). Far from both bounds the count only matters for the bound, so
    # such a state is *folded*: its id is ``VIRTUAL + levels * _STRIDE + base``, where ``base`` is
    # the table state ``FOLD_AHEAD`` bytes of text cannot tell apart from it (``canonical``) and
    # ``levels`` how many characters deeper it is. Nothing is stored per folded state: stepping
    # reads the base's row and shifts the target by the same number of levels, and every question
    # other than stepping (viability, completions, masks) is asked of the base (``rep``) or of
    # ``canonical`` for a longer look-ahead. Only the matchers' stepping paths (``_Run.step``,
    # ``_byte``, ``_settle``) ever hold a folded id; no table row contains one.

    def _fold(self, state: int) -> int:
        """``state``'s folded id, or ``state`` where it does not fold (a table state)."""
        members = self._members[state]
        if len(members) != 1 or not self._lazy_terms[members[0][0]]:
            return state
        ((t, s),) = members
        if not self.terminals[t].dfa.foldable or s < 2:
            return state
        folded = self._fold_member(t, s)
        return state if folded is None else folded

    def _intern_locked(self, members: tuple) -> int:
        found = self._index.get(_intern_key(members, False))
        if found is not None:
            return found
        with self.lock:
            return self._intern(members)

    def arrive(self, state: int) -> int:
        """A table state the scalar path steps into and that is not built: its folded id where it
        folds, else the state, built."""
        if not self.built[state]:
            folded = self._fold(state)
            if folded != state:
                return folded
            self.build(state)
        return state

    def virtual_next(self, state: int, b: int) -> int:
        """The state after byte ``b`` from the folded ``state`` (-1 if rejected): the base's row,
        shifted by the folded levels, folded again (or a table state near the upper bound)."""
        levels, base = divmod(state - VIRTUAL, _STRIDE)
        if not self.built[base]:
            self.build(base)
        x = self.trans_list[base][b]
        if x < 0:
            return -1
        ((t, s),) = self._members[x]
        if s < 2:  # the lexeme ended (a counted string's closing quote)
            return self.arrive(x)
        real = self.terminals[t].dfa.unfold(s, levels)
        folded = self._fold_member(t, real)
        if folded is not None:
            return folded
        return self.arrive(self._intern_locked(((t, real),)))

    def _fold_member(self, t: int, s: int) -> int | None:
        """The folded id of terminal ``t``'s (foldable) state ``s``, None where it does not fold."""
        dfa = self.terminals[t].dfa
        c = dfa.canonical(s, FOLD_AHEAD)
        if c == s:
            return None
        return VIRTUAL + (dfa.depth(s) - dfa.depth(c)) * _STRIDE + self._intern_locked(((t, c),))

    def automata_key(self, state: int, ahead: int | None = None) -> tuple[tuple, list[int], tuple]:
        """What a token classification from table state ``state`` depends on, the same in every
        grammar whose lexer has such a state: its alive terminals' automata and DFA states
        (``_automaton_key``), which of them are ``%ignore`` and their order
        (which wins a tie), and whether it starts a lexeme. Returns (key, the terminals in the
        key's order, the automata the key names by identity, to be kept alive with it). Kept
        per state: a state's members never change.

        ``ahead``: the classification reads at most this many bytes past the state (a token's,
        and a few more), so an automaton named by identity is named with the class of its state
        that no such text tells apart (``fold_classes``): the states of a pattern counting
        words, far from its bound, share one classification."""
        keys = self.__dict__.setdefault("_state_keys", {})
        found = keys.get((state, ahead))
        if found is None:
            found = keys[(state, ahead)] = self._state_key(state, ahead)
        return found

    def _state_key(self, state: int, ahead: int | None) -> tuple[tuple, list[int], tuple]:
        members = self._members[state]
        terms = [t for t, _ in members]
        by_order = sorted(range(len(terms)), key=lambda i: self.terminals[terms[i]].order)
        rank = [0] * len(terms)
        for r, i in enumerate(by_order):
            rank[i] = r
        parts = tuple((*self._folded(t, s, ahead), self.terminals[t].ignore, r) for (t, s), r in zip(members, rank))
        named = tuple(self.terminals[t].dfa for (t, _), part in zip(members, parts) if part[0] == "object")
        return (self.is_start[state], self.ambiguous, parts), terms, named

    def _folded(self, t: int, s: int, ahead: int | None) -> tuple:
        """``_automaton_key(t, s)``, an automaton named by identity named with ``s``'s class
        for texts of ``ahead`` bytes (``automata_key``), once ``_FOLD_AFTER`` of its states
        have been asked for (folding costs ~1-50 ms once per automaton; most automata are read
        at a state or two, a word counter at one per word). A state keyed before that keeps
        its own key: it is only shared less."""
        key = self._automaton_key(t, s)
        if ahead is None or key[0] != "object" or self._lazy_terms[t]:
            return key
        dfa = self.terminals[t].dfa
        asked = dfa.__dict__.get("_fold_asks", 0) + 1
        object.__setattr__(dfa, "_fold_asks", asked)  # a race loses a count: folding comes a state later
        if asked < _FOLD_AFTER:
            return key
        folds = fold_classes(dfa, ahead)
        return key if folds is None else ("object", key[1], int(folds[s]))

    def _automaton_key(self, t: int, s: int) -> tuple:
        """Terminal ``t``'s automaton from its state ``s`` on: the part reachable from ``s``,
        numbered breadth-first, by content (so that the interior of a JSON string is the same
        key in every grammar, whatever names or patterns the rest of its automaton tracks); past
        ``_SHARE_STATES`` reachable states, or for a lazy automaton whose states are numbered as
        they are met, the automaton object and ``s`` (compiled patterns are memoised, so the same
        object serves every grammar that uses the pattern). A counted string or pattern numbers
        its states by formula, so its key is its content's digest and ``s``: every string of
        ``maxLength`` 64, in one grammar or another, shares its classifications."""
        keys = self.__dict__.setdefault("_automaton_keys", {})
        key = keys.get((t, s))
        if key is None:
            dfa = self.terminals[t].dfa
            if self._lazy_terms[t]:
                content = dfa.content_key()
                key = ("content", content, s) if content is not None else None
            else:
                key = _reachable_key(dfa, s)
            key = keys[(t, s)] = key if key is not None else ("object", id(dfa), s)
        return key

    @staticmethod
    def rep(state: int) -> int:
        """The table state that stands for ``state`` in everything but stepping and masks: the
        base of a folded state (see above), else the state itself."""
        return state if state < VIRTUAL else (state - VIRTUAL) % _STRIDE

    def literal_rests(self, state: int) -> list[bytes] | None:
        """The bytes each member of ``state`` may still need, where every member has a few: a
        literal (an object's closed set of property names, keywords, punctuation), or an
        automaton with at most ``_LISTED_RESTS`` strings left (an enum's values,
        ``finite_rests``); None otherwise."""
        rests = []
        for t, s in self._members[state]:
            text = self._literals[t]
            if text is not None:
                rests.append(text[s:])
                continue
            listed = None if self._lazy_terms[t] else finite_rests(self.terminals[t].dfa, s, _LISTED_RESTS)
            if listed is None:
                return None
            rests += listed
        return rests

    def members(self, state: int) -> tuple[tuple[int, int], ...]:
        """The (terminal, state of its automaton) pairs alive in table state ``state``."""
        return tuple(self._members[state])

    def describe(self, state: int) -> str:
        """The terminals alive in a lexer state, for error messages."""
        names = sorted({self.terminals[t].name for t, _ in self._members[self.rep(state)]})
        return ", ".join(names) or "nothing"
