"""Regular expressions as DFAs over bytes.

``interegular`` compiles a regex into an FSM over *characters* (character classes plus
``anything_else``), but byte-level BPE tokens can end in the middle of a multi-byte UTF-8
character. This module expands every character transition into its UTF-8 byte paths, so that a
token's bytes can be fed one at a time. The result is a trimmed DFA (every live state can still
reach an accepting state) stored as a ``int32[n_states, 256]`` numpy table, -1 meaning dead.

>>> dfa = compile_regex("é|ab")
>>> dfa.matches("é".encode()), dfa.matches(b"ab"), dfa.matches(b"a")
(True, True, False)
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import gc
import hashlib
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import interegular
import interegular.fsm
import numpy as np

from ..limits import DEFAULT_LIMITS

try:  # Python >= 3.11
    from re import _constants as _sre
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

__all__ = [
    "ByteDFA", "compile_regex", "without_empty", "RegexCompileError", "BudgetExceeded", "compile_budget", "check_budget",
    "LazyDFA", "CountedString", "CountedPattern", "UnboundedProduct", "SAFE_ASCII", "uniform_successor", "successor_lists", "read_only",
]  # fmt: skip

_MAX_CODEPOINT = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)


_LISTED_STATES = 4096  # automata up to this size may list a state's finite language (``finite_rests``)
_LISTED_DEPTH = 256  # bytes a listed string may have
_FOLD_STATES = 1 << 16  # automata up to this size fold their states for masks (``fold_classes``)
_ROW_WEIGHTS = np.zeros(0, dtype=np.int64)  # ``_unique_rows``'s hash, grown as needed (a swap of arrays: thread-safe)


class RegexCompileError(ValueError):
    """interegular could not compile the pattern (lookaround, backreference, bad syntax, ...)."""


class BudgetExceeded(RuntimeError):
    """A compile went past its time or size budget (see ``compile_budget``)."""


_BUDGET: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("ctrldec_budget", default=None)
_RSS_EVERY = 0.01  # seconds between two reads of the resident set (a read costs ~10 us)


def resident_bytes() -> int | None:
    """The process's resident set now (Linux ``/proc/self/statm``), else its peak so far
    (``getrusage``), else None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@contextlib.contextmanager
def compile_budget(seconds: float, max_states: int, max_memory: int | None = None):
    """Bound the compiles inside the block: past ``seconds``, with an automaton of more than
    ``max_states`` states, or once the process's resident set has grown by more than
    ``max_memory`` bytes, ``BudgetExceeded`` is raised (instead of a hang or running out of memory).

    The budget is fuel, not a signal: it rides in a context variable (so it follows the thread,
    or the task, that compiles, and works in any thread), and every loop that can grow without
    bound calls ``check_budget``: automaton products and lazily counted patterns here, the lexer
    automaton, SLR item sets, JSON Schema rule expansion, and interegular's own state exploration
    (``_metered``). Lark's grammar analysis cannot be metered from inside; its input is
    bounded instead (``Limits.max_grammar_rules``) and the deadline checked right after it. The
    memory bound is the whole process's growth (other threads' allocations count too), read at
    most every 10 ms.

    The cyclic garbage collector is off inside the block (``_collector_paused``).
    """
    start = resident_bytes() if max_memory is not None else None
    cap = start + max_memory if start is not None and max_memory is not None else None
    token = _BUDGET.set((time.monotonic() + seconds, max_states, cap, [0.0]))
    try:
        with _collector_paused():
            yield
    finally:
        _BUDGET.reset(token)


_PAUSE_LOCK = threading.Lock()
_PAUSED = [0, False]  # compiles running inside a pause; whether the collector was on before the first


@contextlib.contextmanager
def _collector_paused():
    """The cyclic garbage collector off for the block, on again after the last such block in
    any thread if it was on before the first.

    A compile makes no cyclic garbage (its objects are freed by reference counts: a
    ``gc.collect()`` after any compile of the 1,000-schema sample finds nothing), but it
    allocates hundreds of thousands of lists, sets and tuples that live through the young
    collections it triggers. Each one that does is promoted to the oldest generation and
    counts towards the next full collection, which scans every object of the process (with
    torch and transformers loaded, 0.2-0.4 s each). Paused, the compile's temporaries die
    before any collection sees them: over the sample, 21 -> 10 full collections and 9.8 ->
    6.1 s of pauses in all (docs/engine.md, "Compile time"). Other threads' cyclic garbage
    waits for the end of the compile (at most ``Limits.max_seconds``)."""
    with _PAUSE_LOCK:
        if _PAUSED[0] == 0:
            _PAUSED[1] = gc.isenabled()
            gc.disable()
        _PAUSED[0] += 1
    try:
        yield
    finally:
        with _PAUSE_LOCK:
            _PAUSED[0] -= 1
            if _PAUSED[0] == 0 and _PAUSED[1]:
                gc.enable()


def check_budget(states: int = 0) -> None:
    """Raise ``BudgetExceeded`` past the deadline, ``states`` past the bound, or the process past
    the memory bound of the budget in force (a no-op outside ``compile_budget``). Cheap: call it
    every few dozen steps of a loop."""
    budget = _BUDGET.get()
    if budget is None:
        return
    deadline, max_states, cap, last = budget
    if states > max_states:
        raise BudgetExceeded(f"an automaton grew past {max_states} states")
    now = time.monotonic()
    if now > deadline:
        raise BudgetExceeded("the compile took longer than its time budget")
    if cap is not None and now - last[0] > _RSS_EVERY:
        last[0] = now
        used = resident_bytes()
        if used is not None and used > cap:
            raise BudgetExceeded("the compile grew the process past its memory budget")


def _state_key(state: object) -> object:
    """A hashable stand-in for an interegular crawl state, equal exactly when the states are
    equal: its meta-states are sets, frozensets, dicts or tuples of hashable sub-states."""
    if isinstance(state, (set, frozenset)):
        return frozenset(state)
    if isinstance(state, dict):
        return ("dict", frozenset(state.items()))
    return ("other", state)


def _indexed_crawl(alphabet, initial, final, follow):  # type: ignore[no-untyped-def]
    """interegular's ``crawl`` (explore a new FSM's states from ``initial`` through ``follow``,
    numbered in the order met), with each state found by its hash instead of a linear search of
    the list so far (quadratic: 0.25 s of a 0.56 s compile on the sample's o60981), and with fuel:
    ``check_budget`` every 64 states. Behind every FSM operation interegular performs, and
    exponential for patterns like ``(a|b)*a(a|b){20}``."""
    states = [initial]
    index = {_state_key(initial): 0}
    finals = set()
    transitions: dict[int, dict] = {}
    i = 0
    while i < len(states):
        if i % 64 == 63:
            check_budget(len(states))
        state = states[i]
        if final(state):
            finals.add(i)
        row = transitions[i] = {}
        for transition in alphabet.by_transition:
            try:
                nxt = follow(state, transition)
            except interegular.fsm.OblivionError:
                continue
            key = _state_key(nxt)
            j = index.get(key)
            if j is None:
                j = index[key] = len(states)
                states.append(nxt)
            row[transition] = j
        i += 1
    return interegular.fsm.FSM(alphabet=alphabet, states=range(len(states)), initial=0, finals=finals, map=transitions, __no_validation__=True)


def _metered(crawl):
    """interegular's state exploration without a result (``crawl_hash_no_result``, an emptiness
    test) with fuel: ``check_budget`` every 64 new states, counted as the distinct states
    ``follow`` is asked about. Without a budget in force, interegular runs untouched."""

    def metered_crawl(alphabet, initial, final, follow):
        if _BUDGET.get() is None:
            return crawl(alphabet, initial, final, follow)
        seen = [None, 0]  # the state being expanded, how many states so far

        def metered(state, transition):
            if state is not seen[0]:
                seen[0] = state
                seen[1] += 1
                if seen[1] % 64 == 0:
                    check_budget(seen[1])
            return follow(state, transition)

        return crawl(alphabet, initial, final, metered)

    return metered_crawl


# interegular's FSM operations look these up in their module at call time, so replacing them
# speeds up and meters all of its work (interegular is pinned to 0.3.x in pyproject.toml).
interegular.fsm.crawl = _indexed_crawl
interegular.fsm.crawl_hash_no_result = _metered(interegular.fsm.crawl_hash_no_result)


def read_only(array: np.ndarray) -> np.ndarray:
    """Mark a table shared by grammars and threads read-only (a stray in-place write then fails)."""
    array.flags.writeable = False
    return array


# ``np.unique`` (numpy 2.3+) goes through a hash table and then sorts what it found: 2-4x slower
# than one sort for the int arrays of a compile (300,000 codes: 63 ms against 15 ms; 2,000: 0.08
# against 0.04 ms), and it had been the largest cost of the slowest compiles. These two give the
# same results by sorting.


def unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` of a 1-D array, by one sort."""
    s = np.sort(values)
    if len(s) < 2:
        return s
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenate the integer ranges ``[lo[i], hi[i])``."""
    lens = hi - lo
    return np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(lo, lens)


def unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(values, return_index=True, return_inverse=True)`` of an array, flattened, by
    one stable sort: (distinct values ascending, where each first occurs, which each value is)."""
    flat = values.ravel()
    order = np.argsort(flat, kind="stable")
    s = flat[order]
    keep = np.empty(len(s), dtype=bool)
    keep[:1] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    inverse = np.empty(len(s), dtype=np.intp)
    inverse[order] = np.cumsum(keep) - 1
    return s[keep], order[keep], inverse


@dataclass(frozen=True)
class ByteDFA:
    """A trimmed DFA over bytes: ``trans[state, byte]`` is the next state or -1; start is state 0."""

    trans: np.ndarray  # int32[n, 256]
    accepting: np.ndarray  # bool[n]

    def __post_init__(self) -> None:
        read_only(self.trans)  # memoised per process (``compile_regex``): shared by every grammar
        read_only(self.accepting)

    @property
    def n_states(self) -> int:
        return len(self.accepting)

    @property
    def empty(self) -> bool:
        """True when the language is empty (the start state is dead)."""
        return self.n_states == 0

    def matches(self, data: bytes) -> bool:
        state = 0
        if self.empty:
            return False
        for b in data:
            state = int(self.trans[state, b])
            if state < 0:
                return False
        return bool(self.accepting[state])


def _ranges(codepoints: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for cp in sorted(codepoints):
        if out and out[-1][1] + 1 == cp:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    lo = 0
    for a, b in ranges:
        if a > lo:
            out.append((lo, a - 1))
        lo = b + 1
    if lo <= _MAX_CODEPOINT:
        out.append((lo, _MAX_CODEPOINT))
    return out


def _without_surrogates(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    s0, s1 = _SURROGATES
    out = []
    for a, b in ranges:
        if b < s0 or a > s1:
            out.append((a, b))
            continue
        if a < s0:
            out.append((a, s0 - 1))
        if b > s1:
            out.append((s1 + 1, b))
    return out


def _utf8_sequences(lo: int, hi: int) -> list[tuple[tuple[int, int], ...]]:
    """Split a code point range into byte-range sequences, each a cartesian product of byte ranges.

    The classic construction (as in RE2 and Rust's regex-syntax): split at the UTF-8 length
    boundaries, then wherever the continuation bytes of ``lo`` and ``hi`` do not span full ranges.
    """
    for boundary in (0x7F, 0x7FF, 0xFFFF):
        if lo <= boundary < hi:
            return _utf8_sequences(lo, boundary) + _utf8_sequences(boundary + 1, hi)
    if hi <= 0x7F:
        return [((lo, hi),)]
    n = 2 if hi <= 0x7FF else 3 if hi <= 0xFFFF else 4
    for i in range(1, n):
        mask = (1 << (6 * i)) - 1
        if lo & ~mask != hi & ~mask:
            if lo & mask:
                return _utf8_sequences(lo, lo | mask) + _utf8_sequences((lo | mask) + 1, hi)
            if hi & mask != mask:
                return _utf8_sequences(lo, (hi & ~mask) - 1) + _utf8_sequences(hi & ~mask, hi)
    a, b = chr(lo).encode("utf-8"), chr(hi).encode("utf-8")
    return [tuple(zip(a, b))]


def class_ranges(fsm: interegular.FSM) -> dict[int, list[tuple[int, int]]]:
    """Code point ranges of every symbol class of an interegular FSM (``anything_else`` included)."""
    by_class: dict[int, list[int]] = {}
    explicit: list[int] = []
    other_class = None
    for symbol, cls in fsm.alphabet.items():
        if symbol is interegular.fsm.anything_else:
            other_class = cls
            continue
        by_class.setdefault(cls, []).append(ord(symbol))
        explicit.append(ord(symbol))
    ranges = {cls: _ranges(cps) for cls, cps in by_class.items()}
    if other_class is not None:
        ranges[other_class] = _complement(_ranges(explicit))
    return {cls: _without_surrogates(rs) for cls, rs in ranges.items()}


def utf8_sequences(ranges: list[tuple[int, int]]) -> list[tuple[tuple[int, int], ...]]:
    """Byte-range sequences whose concatenations are exactly the UTF-8 encodings of ``ranges``."""
    return [seq for a, b in _without_surrogates(ranges) for seq in _utf8_sequences(a, b)]


class _Builder:
    """Builds the byte DFA: FSM states keep their numbers, intermediate UTF-8 states are added."""

    def __init__(self, n_fsm_states: int) -> None:
        self.rows: list[np.ndarray] = [np.full(256, -1, dtype=np.int32) for _ in range(n_fsm_states)]
        # an intermediate state is named by its (rest of a sequence, target) entries, each rest
        # by a small int (hashing the rests' nested tuples for every key had been most of the cost)
        self.memo: dict[frozenset[tuple[int, int]], int] = {}
        self.rests: dict[tuple, int] = {}

    def new_state(self) -> int:
        self.rows.append(np.full(256, -1, dtype=np.int32))
        return len(self.rows) - 1

    def rest_id(self, rest: tuple) -> int:
        return self.rests.setdefault(rest, len(self.rests))

    def fill(self, row: np.ndarray, entries: list[tuple[tuple[tuple[int, int], ...], int]]) -> None:
        """Set ``row`` so that each (byte-range sequence, target) entry leads to its target."""
        # sweep the first byte: between two consecutive cuts an entry's first range either
        # covers the whole interval or misses it
        opens: dict[int, list[int]] = {}
        closes: dict[int, list[int]] = {}
        for i, (seq, _) in enumerate(entries):
            opens.setdefault(seq[0][0], []).append(i)
            closes.setdefault(seq[0][1] + 1, []).append(i)
        cuts = sorted(opens.keys() | closes.keys())
        active: set[int] = set()
        for lo, hi in zip(cuts, cuts[1:]):
            active.difference_update(closes.get(lo, ()))
            active.update(opens.get(lo, ()))
            if not active:
                continue
            here = [entries[i] for i in sorted(active)]
            if len(here[0][0]) == 1:
                row[lo:hi] = here[0][1]
            else:
                row[lo:hi] = self.intermediate(list(dict.fromkeys((seq[1:], t) for seq, t in here)))

    def intermediate(self, entries: list[tuple[tuple, int]]) -> int:
        key = frozenset([(self.rest_id(rest), t) for rest, t in entries])
        state = self.memo.get(key)
        if state is None:
            state = self.memo[key] = self.new_state()
            self.fill(self.rows[state], entries)
        return state


class _Template:
    """``_Builder.fill``'s work for every FSM state whose classes fall into the same groups by
    target (its "shape"), done once with placeholder targets and stamped per state.

    A pattern with a counted repetition (``(?:\\S+\\s+){0,199}``) has hundreds of states of one
    shape, each of which had swept the classes' UTF-8 sequences afresh (about 60% of such a
    schema's compile, in a profile). Placeholders stand for distinct targets, so a template's
    intermediate states map one to one onto a stamped state's, and they are looked up in the
    builder's memo by their real content and created in the template's order: the table is the
    one ``fill`` builds, state for state (tests/engine/test_bytedfa.py compares them)."""

    _BASE = 1 << 30  # placeholder k is _BASE + k in the template's rows

    def __init__(self, shape: tuple[tuple, ...], sequences: dict, builder: _Builder) -> None:
        inner = _Builder(1)
        inner.fill(inner.rows[0], [(seq, self._BASE + k) for k, classes in enumerate(shape) for cls in classes for seq in sequences[cls]])
        m = len(inner.rows) - 1
        rows = np.stack(inner.rows)
        # codes into a stamp's lookup: 0 dead, 1..m the intermediate states, m + 1 + k placeholder k
        self.codes = np.where(rows < 0, 0, np.where(rows >= self._BASE, rows - self._BASE + m + 1, rows)).astype(np.intp)
        rests = {i: rest for rest, i in inner.rests.items()}
        self.keys: list[list[tuple[int, int]]] = [[] for _ in range(m)]  # (``builder``'s rest id, placeholder)
        for entries, state in inner.memo.items():
            self.keys[state - 1] = [(builder.rest_id(rests[r]), t - self._BASE) for r, t in entries]
        self.size = m + 1 + len(shape)

    def stamp(self, builder: _Builder, row: int, targets: list[int]) -> None:
        """Fill ``builder.rows[row]``, whose groups of classes lead to ``targets``."""
        m = len(self.keys)
        look = np.empty(self.size, dtype=np.int32)
        look[0] = -1
        look[m + 1 :] = targets
        memo, rows = builder.memo, builder.rows
        new = []
        for j, entries in enumerate(self.keys, 1):
            key = frozenset([(rest, targets[k]) for rest, k in entries])
            state = memo.get(key)
            if state is None:
                state = memo[key] = len(rows)
                rows.append(look)  # a stand-in until the loop below
                new.append((j, state))
            look[j] = state
        codes = self.codes
        for j, state in new:
            rows[state] = look.take(codes[j])
        rows[row] = look.take(codes[0])


def _edges(trans: np.ndarray, n_states: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The distinct transitions of a table, dead ones left out: (sources, targets), sorted by
    source then target. A row's targets come in runs of equal bytes, so only run starts are
    sorted, not all 256 entries of every row. ``n_states``: how many states targets range over,
    for some rows of a larger table (its rows by default)."""
    n = max(len(trans), n_states or 0)
    starts = np.empty(trans.shape, dtype=bool)
    starts[:, 0] = True
    np.not_equal(trans[:, 1:], trans[:, :-1], out=starts[:, 1:])
    starts &= trans >= 0
    rows, cols = np.nonzero(starts)
    codes = unique(rows.astype(np.int64) * n + trans[rows, cols])
    return codes // n, codes % n


def successor_lists(trans: np.ndarray, n_states: int | None = None) -> tuple[tuple[int, ...], ...]:
    """Each row's distinct targets through ``trans`` (dead dropped), ascending; ``n_states`` as
    for ``_edges``. Tuples of ints: kept on a cached automaton, they leave the cyclic GC's
    lists after one collection (lists would be traversed by every full collection)."""
    sources, targets = _edges(trans, n_states)
    bounds = np.searchsorted(sources, np.arange(len(trans) + 1)).tolist()
    flat = tuple(targets.tolist())
    return tuple([flat[bounds[i] : bounds[i + 1]] for i in range(len(trans))])


def _closure(sources: np.ndarray, targets: np.ndarray, seeds: list[int], n: int) -> np.ndarray:
    """bool[n]: the states reachable from ``seeds`` along edges sorted by source (a depth-first
    walk in Python: an automaton's depth can be its size, so a walk level by level would cost a
    numpy pass per level)."""
    bounds = np.searchsorted(sources, np.arange(n + 1)).tolist()
    succ = targets.tolist()
    seen = bytearray(n)
    for s in seeds:
        seen[s] = 1
    stack = list(seeds)
    while stack:
        s = stack.pop()
        for x in succ[bounds[s] : bounds[s + 1]]:
            if not seen[x]:
                seen[x] = 1
                stack.append(x)
    return np.frombuffer(bytes(seen), dtype=bool)


def trim_states(trans: np.ndarray, accepting: np.ndarray, start: int, *, reachable: bool = False) -> np.ndarray:
    """bool[n]: the states reachable from ``start`` that can reach an accepting state (``_trim``'s
    keep set; ``reachable`` as there)."""
    n = len(accepting)
    sources, targets = _edges(trans)
    reach = np.ones(n, dtype=bool) if reachable else _closure(sources, targets, [start], n)
    back = np.argsort(targets, kind="stable")
    return reach & _closure(targets[back], sources[back], np.flatnonzero(accepting & reach).tolist(), n)


def _trim(trans: np.ndarray, accepting: np.ndarray, start: int, *, reachable: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Keep the states reachable from ``start`` that can reach an accepting state; renumber from 0
    (the start first, the others in their order). ``reachable``: every state is known to be
    reachable from ``start`` (a product built breadth-first), so only liveness is worked out."""
    n = len(accepting)
    keep = trim_states(trans, accepting, start, reachable=reachable)
    if not keep[start]:
        return np.zeros((0, 256), dtype=np.int32), np.zeros(0, dtype=bool)
    if start == 0 and keep.all():  # already trim: nothing to renumber
        return trans.astype(np.int32, copy=False), accepting
    order = [start] + [s for s in np.flatnonzero(keep).tolist() if s != start]
    renumber = np.full(n + 1, -1, dtype=np.int32)
    renumber[order] = np.arange(len(order), dtype=np.int32)
    new = renumber[np.where(trans[order] >= 0, trans[order], n)]
    return new.astype(np.int32), accepting[order]


_UNSUPPORTED = {
    _sre.ASSERT: "a lookaround",
    _sre.ASSERT_NOT: "a negative lookaround",
    _sre.GROUPREF: "a backreference",
    _sre.GROUPREF_EXISTS: "a conditional backreference",
    _sre.AT: "an anchor or word boundary (^, $, \\b, \\A, \\Z)",
}


def _unsupported_feature(pattern: str) -> str | None:
    """Name a feature a DFA cannot express, found with Python's own regex parser (or None)."""

    def walk(node) -> str | None:
        if isinstance(node, _sre_parse.SubPattern):
            node = list(node)
        if isinstance(node, (list, tuple)):
            for item in node:
                if isinstance(item, tuple) and len(item) == 2 and item[0] in _UNSUPPORTED:
                    return _UNSUPPORTED[item[0]]
                found = walk(item)
                if found:
                    return found
        return None

    return walk(_sre_parse.parse(pattern))


@lru_cache(maxsize=DEFAULT_LIMITS.max_cached_regexes)
def compile_regex(pattern: str) -> ByteDFA:
    """Compile a regex (no lookarounds, backreferences or anchors) to a byte DFA.

    The DFA matches whole strings (the pattern is implicitly anchored). Results are memoised per
    pattern, so terminals shared by many grammars are compiled once per process.
    """
    try:
        feature = _unsupported_feature(pattern)
    except Exception as e:  # Python's parser rejects it: report its message
        raise RegexCompileError(str(e)) from None
    if feature:
        raise RegexCompileError(f"{feature} cannot be compiled to an automaton")
    return fsm_to_dfa(parse_fsm(pattern))


def parse_fsm(pattern: str) -> interegular.FSM:
    """interegular's character-level FSM of a pattern (RegexCompileError if it cannot)."""
    try:
        return interegular.parse_pattern(pattern).to_fsm()
    except BudgetExceeded:
        raise
    except Exception as e:  # interegular raises several types, none of them documented
        raise RegexCompileError(str(e) or type(e).__name__) from None


def fsm_to_dfa(fsm: interegular.FSM, encode=None) -> ByteDFA:
    """A character FSM as a byte DFA.

    ``encode(ranges)`` may replace how a class of code points is written: it returns byte-range
    sequences (default: UTF-8). The JSON Schema compiler uses it to write characters the way they
    appear inside a JSON string (escaped quotes, backslashes and controls).
    """
    states = sorted(fsm.states)
    index = {s: i for i, s in enumerate(states)}
    ranges = class_ranges(fsm)
    sequences = {cls: (encode or utf8_sequences)(rs) for cls, rs in ranges.items()}
    builder = _Builder(len(states))
    shapes = []  # per state: its groups of classes by target, and the targets (see ``_Template``)
    for s in states:
        by_target: dict[int, list] = {}
        for cls, t in fsm.map.get(s, {}).items():
            if sequences.get(cls):
                by_target.setdefault(index[t], []).append(cls)
        shape = sorted((tuple(sorted(classes)), t) for t, classes in by_target.items())
        shapes.append((tuple(c for c, _ in shape), [t for _, t in shape]))
    count = Counter(shape for shape, _ in shapes)
    templates: dict[tuple, _Template] = {}
    for s, (shape, targets) in zip(states, shapes):
        if count[shape] == 1:  # a template would cost what it saves
            builder.fill(builder.rows[index[s]], [(seq, t) for classes, t in zip(shape, targets) for cls in classes for seq in sequences[cls]])
            continue
        template = templates.get(shape)
        if template is None:
            template = templates[shape] = _Template(shape, sequences, builder)
        template.stamp(builder, index[s], targets)
    trans = np.stack(builder.rows)
    accepting = np.zeros(len(trans), dtype=bool)
    accepting[[index[s] for s in fsm.finals]] = True
    trans, accepting = _trim(trans, accepting, index[fsm.initial])
    return ByteDFA(trans, accepting)


def without_empty(dfa: ByteDFA) -> ByteDFA:
    """The same language minus the empty string (a lexeme cannot be empty)."""
    if dfa.empty or not dfa.accepting[0]:
        return dfa
    # A fresh, non-accepting start state with the old start's transitions.
    trans = np.vstack([dfa.trans[0:1], dfa.trans])
    trans = np.where(trans >= 0, trans + 1, -1).astype(np.int32)
    trans, accepting = _trim(trans, np.concatenate([[False], dfa.accepting]), 0)
    return ByteDFA(trans, accepting)


def _sinked(dfa: ByteDFA) -> tuple[np.ndarray, np.ndarray]:
    """Tables with an explicit dead state (index n) instead of -1, for complement-style products."""
    n = dfa.n_states
    trans = np.vstack([np.where(dfa.trans >= 0, dfa.trans, n), np.full((1, 256), n, dtype=np.int32)]) if n else np.zeros((1, 256), np.int32)
    accepting = np.concatenate([dfa.accepting, [False]])
    return trans.astype(np.int64), accepting


_PRODUCT_BATCH = 256  # pairs whose rows a product computes at once (a 512 KB table of codes)
_DENSE_PAIRS = 1 << 20  # pairs of states up to which a product numbers them in one table (4 MB)


def product(a: ByteDFA, b: ByteDFA, op: str) -> ByteDFA:
    """The intersection (``"and"``), union (``"or"``) or difference (``"diff"``, a minus b).

    A breadth-first product over reachable state pairs, the rows of a batch of pairs computed
    at once; the result is trimmed. With a lazy automaton only a union is built (lazily), or an
    operation the first byte settles; anything else raises ``UnboundedProduct``.
    """
    if isinstance(a, LazyDFA) or isinstance(b, LazyDFA):
        return _lazy_product(a, b, op)
    ta, fa = _sinked(a)
    tb, fb = _sinked(b)
    stride = len(fb)
    start = (0 if a.n_states else len(fa) - 1) * stride + (0 if b.n_states else len(fb) - 1)
    if len(fa) * stride <= _DENSE_PAIRS:
        rows, codes = _dense_pairs(ta, tb, stride, start)
    else:
        rows, codes = _sparse_pairs(ta, tb, stride, start)
    pa, pb = codes // stride, codes % stride
    if op == "and":
        accepting = fa[pa] & fb[pb]
    elif op == "or":
        accepting = fa[pa] | fb[pb]
    elif op == "diff":
        accepting = fa[pa] & ~fb[pb]
    else:
        raise ValueError(op)
    trans, accepting = _trim(np.concatenate(rows), accepting, 0, reachable=True)
    return ByteDFA(trans, accepting)


def _dense_pairs(ta: np.ndarray, tb: np.ndarray, stride: int, start: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``product``'s breadth-first walk where every pair's state fits one table: the rows of
    each batch of pairs and the pairs' codes in state order. Pairs first met in a batch are
    numbered in the order of their codes, as ``_sparse_pairs`` numbers them."""
    state_of = np.full(len(ta) * stride, -1, dtype=np.int32)
    state_of[start] = 0
    found_codes = [np.array([start], dtype=np.int64)]
    pending = found_codes[0]
    n = 1
    rows = []
    while len(pending):
        check_budget(n)
        level, pending = pending[:_PRODUCT_BATCH], pending[_PRODUCT_BATCH:]
        found = ta[level // stride] * stride + tb[level % stride]  # [pairs, 256]
        ids = state_of[found]
        new = ids < 0
        if new.any():
            fresh = unique(found[new])
            state_of[fresh] = np.arange(n, n + len(fresh), dtype=np.int32)
            n += len(fresh)
            found_codes.append(fresh)
            pending = np.concatenate([pending, fresh])
            ids = state_of[found]
        rows.append(ids)
    return rows, np.concatenate(found_codes)


def _sparse_pairs(ta: np.ndarray, tb: np.ndarray, stride: int, start: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``_dense_pairs`` with the pairs met kept in a dict, for products whose pairs would not fit one table."""
    index = {start: 0}  # a pair of states, coded p * stride + q -> its state
    codes = [start]
    rows: list[np.ndarray] = []
    done = 0
    while done < len(codes):  # breadth-first, up to _PRODUCT_BATCH pairs at a time
        check_budget(len(codes))
        level = np.array(codes[done : done + _PRODUCT_BATCH], dtype=np.int64)
        done += len(level)
        found = ta[level // stride] * stride + tb[level % stride]  # [pairs, 256]
        distinct, _, inverse = unique_inverse(found)
        ids = []
        for code in distinct.tolist():
            j = index.get(code)
            if j is None:
                j = index[code] = len(codes)
                codes.append(code)
            ids.append(j)
        rows.append(np.array(ids, dtype=np.int32)[inverse.reshape(found.shape)])
    return rows, np.array(codes, dtype=np.int64)


def literal(data: bytes) -> ByteDFA:
    """The DFA matching exactly ``data``."""
    n = len(data) + 1
    trans = np.full((n, 256), -1, dtype=np.int32)
    for i, b in enumerate(data):
        trans[i, b] = i + 1
    accepting = np.zeros(n, dtype=bool)
    accepting[-1] = True
    dfa = ByteDFA(trans, accepting)
    object.__setattr__(dfa, "_literal", bytes(data))  # its part from state i on is data[i:] (lexer keys)
    return dfa


def union_all(dfas: list[ByteDFA]) -> ByteDFA:
    """The union of several DFAs (balanced, to keep intermediate products small)."""
    if not dfas:
        return ByteDFA(np.zeros((0, 256), dtype=np.int32), np.zeros(0, dtype=bool))
    lazy = [d for d in dfas if isinstance(d, LazyDFA)]
    if lazy:  # the dense ones as one table, then the lazy ones around it
        dense = [d for d in dfas if not isinstance(d, LazyDFA)]
        out = union_all(dense) if dense else lazy.pop(0)
        for d in lazy:
            out = product(out, d, "or")
        return out
    while len(dfas) > 1:
        dfas = [product(dfas[i], dfas[i + 1], "or") if i + 1 < len(dfas) else dfas[i] for i in range(0, len(dfas), 2)]
    return dfas[0]


def strings(values: list[bytes]) -> ByteDFA:
    """The DFA matching exactly the given byte strings (a trie)."""
    index: dict[bytes, int] = {b"": 0}
    for v in values:
        for i in range(1, len(v) + 1):
            index.setdefault(v[:i], len(index))
    trans = np.full((len(index), 256), -1, dtype=np.int32)
    accepting = np.zeros(len(index), dtype=bool)
    for prefix, state in index.items():
        if prefix:
            trans[index[prefix[:-1]], prefix[-1]] = state
    for v in values:
        accepting[index[v]] = True
    return ByteDFA(trans, accepting)


_NO_RESTS = object()


def finite_rests(dfa: ByteDFA, state: int, limit: int) -> tuple[bytes, ...] | None:
    """The strings that lead from ``state`` to acceptance, where there are at most ``limit`` of
    them (an enum's values, a closed set of names): None where there are more, or infinitely
    many. Found for the state and every state below it in one pass over the automaton's
    transitions, and kept on the automaton (an automaton of more than ``_LISTED_STATES`` states
    is not listed: None). The search stops at a cycle or past ``limit`` strings, so it visits at
    most about ``limit`` states per byte of the longest string."""
    cache = dfa.__dict__.get("_rests")
    if cache is None:
        if dfa.n_states > _LISTED_STATES or not isinstance(dfa.trans, np.ndarray):
            return None
        cache = {}
        object.__setattr__(dfa, "_rests", cache)  # a dict shared by threads: a race lists a state twice, alike
    found = cache.get(state, _NO_RESTS)
    if found is _NO_RESTS:
        trans, accepting = dfa.trans, dfa.accepting

        def rests(x: int, depth: int) -> tuple[bytes, ...] | None:
            known = cache.get(x, _NO_RESTS)
            if known is not _NO_RESTS:
                return known  # type: ignore[return-value]
            cache[x] = None  # on the path: a cycle reaching it again means infinitely many strings
            row = trans[x]
            live = np.flatnonzero(row >= 0)
            out: list[bytes] | None = [b""] if accepting[x] else []
            if len(live) > limit:  # each live byte leads to a string of its own (the automaton is trimmed)
                live, out = live[:0], None
            for b, y in zip(live.tolist(), row[live].tolist()):
                below = rests(y, depth + 1) if depth < _LISTED_DEPTH else None
                if below is None or len(out) + len(below) > limit:  # type: ignore[arg-type]
                    out = None
                    break
                head = bytes([b])
                out += [head + r for r in below]  # type: ignore[operator]
            cache[x] = found = tuple(out) if out is not None else None
            return found

        found = rests(state, 0)
    return found  # type: ignore[return-value]


def fold_classes(dfa: ByteDFA, ahead: int) -> np.ndarray | None:
    """Per state, the lowest state that no text of up to ``ahead`` bytes tells apart from it:
    from both, the same such texts are accepted and the same ones die (Moore's refinement of
    the states, stopped after ``ahead`` rounds). A classification of tokens of at most
    ``ahead`` bytes from one holds for the other, so masks key it by the class (see
    ``LexerAutomaton.automata_key``): a pattern that counts words, ``(?:\\S+\\s+){0,99}``,
    has a state per word and position in it, but far from the bound every count reads alike;
    and automata built through UTF-8 byte sequences hold many states of one language. None for
    an automaton of more than ``_FOLD_STATES`` states, or not a dense table. Kept per
    ``ahead`` on the automaton.

    Each round re-reads only the states with a successor whose class split in the round before
    (a class whose other members had none keeps its id), so a counter's rounds cost as much as
    the states near its bound, not the whole automaton.

    >>> pairs = compile_regex("(?:ab){0,40}")  # a state per byte: 81
    >>> [len(set(fold_classes(pairs, ahead).tolist())) for ahead in (4, 20, 200)]
    [6, 22, 81]
    """
    trans = dfa.trans
    if not isinstance(trans, np.ndarray) or not 1 < len(trans) <= _FOLD_STATES:
        return None
    folds = dfa.__dict__.get("_folds")
    if folds is None:
        folds = {}
        object.__setattr__(dfa, "_folds", folds)  # a dict shared by threads: a race computes it twice, alike
    found = folds.get(ahead)
    if found is not None:
        return found
    found = folds[ahead] = read_only(_refined(trans, np.asarray(dfa.accepting), ahead))
    return found


def _refined(trans: np.ndarray, accepting: np.ndarray, ahead: int) -> np.ndarray:
    """``fold_classes`` worked out: each state's class after ``ahead`` rounds, as its lowest
    state (int32)."""
    n = len(trans)
    table = trans[:, _unique_rows(trans.T)[0]]  # bytes that every state treats alike count once
    live = table >= 0
    safe = np.where(live, table, 0)
    sources = np.repeat(np.arange(n), table.shape[1])[live.ravel()]
    targets = table[live]
    order = np.argsort(targets, kind="stable")
    preds = sources[order]  # predecessors, grouped by target
    bounds = np.searchsorted(targets[order], np.arange(n + 1))
    cls = accepting.astype(np.int64)
    size = np.zeros(n + 2, dtype=np.int64)  # members per class id (at most n classes, ids from 2 on)
    size[:2] = np.bincount(cls, minlength=2)
    todo = np.arange(n)
    next_id = 2
    for _ in range(ahead):
        sig = np.concatenate([cls[todo, None], np.where(live[todo], cls[safe[todo]], -1)], axis=1)
        changed, next_id = _split_classes(cls, size, next_id, todo, sig)
        if not len(changed):
            break  # stable: no text of any length tells the classes apart any further
        todo = np.unique(preds[expand_ranges(bounds[changed], bounds[changed + 1])])
    low = np.full(next_id, n, dtype=np.int64)
    np.minimum.at(low, cls, np.arange(n))
    return low[cls].astype(np.int32)


def _split_classes(cls: np.ndarray, size: np.ndarray, next_id: int, todo: np.ndarray, sig: np.ndarray) -> tuple[np.ndarray, int]:
    """One round of ``_refined``: the states ``todo`` re-read, with their signatures ``sig``
    (own class, then each byte class's successor's class or -1), take the classes their
    signatures make (``cls`` and ``size`` updated in place). A class all of whose members were
    re-read keeps its id for its largest part; any other part (and every part of a class with
    members not re-read, which differ from all of those) takes a new id. Returns (the states
    whose id changed, the next free id)."""
    first, inverse = _unique_rows(sig)
    block, counts = sig[first, 0], np.bincount(inverse)
    by = np.lexsort((-counts, block))
    lead = np.ones(len(by), dtype=bool)
    lead[1:] = block[by[1:]] != block[by[:-1]]
    whole = np.bincount(block, weights=counts, minlength=len(size))[block] == size[block]
    keep = np.zeros(len(by), dtype=bool)
    keep[by[lead]] = True
    keep &= whole
    moved = np.flatnonzero(~keep)
    ids = np.arange(next_id, next_id + len(moved))
    group_id = block.copy()
    group_id[moved] = ids
    size[ids] = counts[moved]
    np.subtract.at(size, block[moved], counts[moved])
    changed = todo[~keep[inverse]]
    cls[todo] = group_id[inverse]
    return changed, next_id + len(moved)


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(rows, axis=0, return_index=True, return_inverse=True)`` but the values,
    grouped by a hash of each row and checked (a sort of rows as records cost ~10x more)."""
    global _ROW_WEIGHTS
    if len(_ROW_WEIGHTS) < rows.shape[1]:
        _ROW_WEIGHTS = np.random.default_rng(0).integers(1, 1 << 62, size=rows.shape[1], dtype=np.int64)
    _, first, inverse = np.unique(rows.astype(np.int64) @ _ROW_WEIGHTS[: rows.shape[1]], return_index=True, return_inverse=True)
    if not (rows == rows[first[inverse]]).all():  # two rows hashed alike
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def minus_strings(dfa: ByteDFA, values: list[bytes]) -> ByteDFA:
    """``product(dfa, strings(values), "diff")``, built without a product search: the pairs
    it would meet are ``dfa``'s state beside a node of the values' trie, and once a byte leaves
    the trie ``dfa``'s state alone. So the result is ``dfa``'s table plus one row per trie node
    that ``dfa`` survives (``dfa``'s row, with the trie's bytes leading to the child nodes), then
    trimmed. The same language as the product, in fewer steps: an object's extra keys (any key
    but its declared ones) cost a product per object in a large schema.

    The result carries ``_minus`` (``MinusParts``): from each of its states, its language is
    ``dfa``'s from a known state minus known suffixes of ``values``, which names the state for
    the lexer's classification keys without a search of the table."""
    if dfa.empty or not values:
        return dfa
    n = dfa.n_states
    trans, accepting = dfa.trans, dfa.accepting
    distinct = sorted(set(values))
    at, through, depth, edges, ends = _values_trie(trans, values, {v: i for i, v in enumerate(distinct)})
    rows = trans[at]  # leaving the trie: ``dfa``'s own states, numbered as in ``dfa``
    acc = accepting[at].copy()
    acc[ends] = False
    m = len(at)
    if edges:
        parent, byte, child = np.array(edges, dtype=np.int64).T
        rows[parent, byte] = n + child
    # trimmed without a search: ``dfa``'s states are live (it is trimmed), so a node is live
    # where it accepts, leaves the trie, or has a live child (children come after parents)
    live = acc | ((rows >= 0) & (rows < n)).any(axis=1)
    for p, _, c in reversed(edges):
        if live[c]:
            live[p] = True
    if not live[0]:
        return ByteDFA(np.zeros((0, 256), dtype=np.int32), np.zeros(0, dtype=bool))
    rows[np.isin(rows, n + np.flatnonzero(~live))] = -1
    rows, acc = rows[live], acc[live]
    # ``dfa``'s states that the kept nodes lead to, and what they reach
    reach = _closure(*_edges(trans), unique(rows[(rows >= 0) & (rows < n)]).tolist(), n)
    k = int(live.sum())
    renumber = np.full(n + m + 1, -1, dtype=np.int32)  # nodes first (the root is the start), then ``dfa``'s states
    renumber[n + np.flatnonzero(live)] = np.arange(k, dtype=np.int32)
    renumber[np.flatnonzero(reach)] = np.arange(k, k + int(reach.sum()), dtype=np.int32)
    table = np.concatenate([rows, trans[reach]])
    out = ByteDFA(renumber[np.where(table >= 0, table, n + m)], np.concatenate([acc, accepting[reach]]))
    kept = np.flatnonzero(live)
    nodes = np.array([through, depth, at], dtype=np.int32)[:, kept]
    parts = MinusParts(dfa, tuple(distinct), read_only(nodes), read_only(np.flatnonzero(reach).astype(np.int32)))
    object.__setattr__(out, "_minus", parts)
    return out


def _values_trie(trans: np.ndarray, values: list[bytes], rank: dict[bytes, int]) -> tuple[list[int], ...]:
    """``minus_strings``'s trie of ``values`` as far as ``trans`` (from state 0) takes them: per
    node, ``trans``'s state after its prefix, a value through it (by ``rank``) and its depth;
    the edges (parent, byte, child); the nodes that are whole values."""
    node = {b"": 0}  # trie prefix -> node number
    at, through, depth = [0], [0], [0]
    edges: list[tuple[int, int, int]] = []
    ends: list[int] = []
    for v in values:
        cur = 0
        for i in range(len(v)):
            child = node.get(v[: i + 1])
            if child is None:
                q = int(trans[at[cur], v[i]])
                if q < 0:  # rejected: nothing to take away past this prefix
                    break
                child = node[v[: i + 1]] = len(at)
                at.append(q)
                through.append(rank[v])
                depth.append(i + 1)
                edges.append((cur, v[i], child))
            cur = child
        else:
            ends.append(cur)
    return at, through, depth, edges, ends  # type: ignore[return-value]


@dataclass(frozen=True)
class MinusParts:
    """How ``minus_strings``'s result is made: state ``i`` below ``nodes.shape[1]`` is a node of
    the values' trie, ``nodes[:, i]`` = (a value through it, by rank in ``values``; its depth;
    ``base``'s state there), whose language is ``base``'s from that state minus the rest of every
    value it is a prefix of; state ``nodes.shape[1] + j`` is ``base``'s state ``states[j]``, with
    its language."""

    base: ByteDFA
    values: tuple[bytes, ...]  # sorted, distinct
    nodes: np.ndarray  # int32[3, trie nodes kept]
    states: np.ndarray  # int32[``base``'s states kept]

    def residual(self, state: int) -> tuple[int, tuple[bytes, ...]]:
        """(``base``'s state, the suffixes taken away from its language) at ``state``."""
        k = self.nodes.shape[1]
        if state >= k:
            return int(self.states[state - k]), ()
        rank, size, q = self.nodes[:, state].tolist()
        prefix = self.values[rank][:size]
        i = bisect.bisect_left(self.values, prefix)
        suffixes = []
        while i < len(self.values) and self.values[i].startswith(prefix):
            suffixes.append(self.values[i][len(prefix) :])
            i += 1
        return q, tuple(suffixes)


def concat_bytes(prefix: bytes, dfa: ByteDFA, suffix: bytes) -> ByteDFA:
    """``prefix`` then a word of ``dfa`` then ``suffix`` (e.g. the quotes around a string body).

    The body must not be able to continue with the suffix's first byte (true of a JSON string
    body and its closing quote), so the result stays deterministic.
    """
    if dfa.empty:
        return dfa
    n, p, k = dfa.n_states, len(prefix), len(suffix)
    trans = np.full((p + n + k, 256), -1, dtype=np.int32)
    for i, b in enumerate(prefix):
        trans[i, b] = i + 1
    trans[p : p + n] = np.where(dfa.trans >= 0, dfa.trans + p, -1)
    accepting = np.zeros(p + n + k, dtype=bool)
    if not k:
        accepting[p : p + n] = dfa.accepting
    else:
        after = p + n  # state p + n + i: suffix[: i + 1] consumed
        for s in np.flatnonzero(dfa.accepting):
            if trans[p + s, suffix[0]] >= 0:
                raise ValueError("the body can continue with the suffix's first byte")
            trans[p + s, suffix[0]] = after
        for i in range(1, k):
            trans[after + i - 1, suffix[i]] = after + i
        accepting[after + k - 1] = True
    # already trim, since ``dfa`` is: the prefix leads to its start, its states to its accepting
    # states, and those on through the suffix
    return ByteDFA(trans, accepting)


# -- JSON-string-safe characters ----------------------------------------------------------------

SAFE_ASCII = np.array([b for b in range(0x20, 0x80) if b not in (0x22, 0x5C)])  # not a control, quote or backslash
read_only(SAFE_ASCII)


@lru_cache(maxsize=1)
def safe_multibyte_sequences() -> tuple[tuple[tuple[int, int], ...], ...]:
    """Byte-range sequences of every non-ASCII character (all are JSON-string-safe)."""
    return tuple(utf8_sequences([(0x80, 0x10FFFF)]))


def uniform_successor(trans: np.ndarray, idx: np.ndarray, built: np.ndarray | None = None) -> np.ndarray:
    """Per state of ``idx``: the one state every JSON-string-safe character leads to through the
    table ``trans``, -1 if every one is rejected, -2 if they disagree, if one dies before its
    last byte, or if a state on the way is not ``built`` (when given). -2 is always safe."""
    rows = trans[idx][:, SAFE_ASCII]
    out = np.where((rows == rows[:, :1]).all(axis=1), rows[:, 0], -2).astype(np.int32)
    if len(idx) > 64:  # where the ASCII characters disagree, the answer is -2 already
        agree = np.flatnonzero(out != -2)
        if len(agree) < len(idx):
            full = np.full(len(idx), -2, dtype=np.int32)
            full[agree] = uniform_successor(trans, idx[agree], built)
            return full
    known = np.ones(len(idx), dtype=bool) if built is None else built[idx].copy()
    for seq in safe_multibyte_sequences():
        cur = idx.copy()
        ok = np.ones(len(idx), dtype=bool)
        for lo, hi in seq:
            live = cur >= 0
            if built is not None:
                known &= ~live | built[np.maximum(cur, 0)]
            nxt = trans[np.maximum(cur, 0), lo : hi + 1]
            ok &= live & (nxt == nxt[:, :1]).all(axis=1)
            cur = np.where(live, nxt[:, 0], -1)
        out = np.where(ok & (cur == out), out, np.where(ok & (cur == -1) & (out == -1), -1, -2))
    return np.where(known, out, -2).astype(np.int32)


# -- lazy automata ------------------------------------------------------------------------------
#
# A length bound of thousands of characters needs one level of states per character: too many to
# tabulate. A lazy automaton computes a state's row when the lexer first needs it, so only the
# levels a text actually reaches (plus a token's length of look-ahead) are ever built. States are
# ints; every state is live (the automaton is trimmed by construction); ``depth(s)`` says how far
# into the lexeme a state is, which the lexer uses to decide what to build ahead of time.


class UnboundedProduct(ValueError):
    """An intersection or difference that involves a lazy automaton (not supported)."""


class _Rows:
    __slots__ = ("_row",)

    def __init__(self, row) -> None:
        self._row = row

    def __getitem__(self, state: int) -> np.ndarray:
        return self._row(state)


class _Flags:
    __slots__ = ("_flag",)

    def __init__(self, flag) -> None:
        self._flag = flag

    def __getitem__(self, state: int) -> bool:
        return self._flag(state)


class LazyDFA:
    """A DFA over bytes whose rows are computed on demand (start state 0, -1 dead).

    ``trans[s]`` and ``accepting[s]`` read like a ``ByteDFA``'s, so the lexer treats both alike.
    """

    lazy = True
    empty = False
    numbered_by_content = False  # True where a state's number follows from the language alone, not the order of building

    def __init__(self) -> None:
        self.trans = _Rows(self.row)
        self.accepting = _Flags(self.is_accepting)

    @property
    def key(self) -> tuple:
        """Identifies the language (terminals are deduplicated by it)."""
        raise NotImplementedError

    def content_key(self) -> tuple | None:
        """A short digest of ``key`` where states are numbered by content (None elsewhere): two
        automata with the same content key number every state alike, so a lexer state's token
        classification can be shared between them (``LexerAutomaton._automaton_key``)."""
        if not self.numbered_by_content:
            return None
        found = self.__dict__.get("_content_key")
        if found is None:
            h = hashlib.blake2b(digest_size=16)
            for part in self.key:
                data = part if isinstance(part, bytes) else repr(part).encode()
                h.update(len(data).to_bytes(8, "little") + data)
            found = self.__dict__["_content_key"] = (type(self).__name__, h.digest())
        return found

    def row(self, state: int) -> np.ndarray:
        """int64[256] (state numbers grow with the count); not cached: the lexer keeps its own."""
        return self._compute_row(state)

    def _compute_row(self, state: int) -> np.ndarray:
        raise NotImplementedError

    def is_accepting(self, state: int) -> bool:
        raise NotImplementedError

    def depth(self, state: int) -> int:
        raise NotImplementedError

    def shift(self, state: int) -> int:
        """The one state every JSON-string-safe character leads to, -1 if all are rejected,
        -2 if they disagree (see ``LexerAutomaton.shift``); -2 is always a safe answer."""
        return -2

    def canonical(self, state: int, ahead: int) -> int:
        """A state that every text of up to ``ahead`` bytes treats like ``state`` (itself, at worst)."""
        return state

    foldable = False  # ``unfold`` is defined (a counter whose levels repeat one pattern)

    def unfold(self, state: int, levels: int) -> int:
        """The state ``levels`` characters deeper than ``state`` in the same position of its
        character (for a ``foldable`` automaton, whose rows past the lower bound repeat level by
        level): the inverse of ``canonical`` far from the upper bound."""
        raise NotImplementedError

    def matches(self, data: bytes) -> bool:
        state = 0
        for b in data:
            state = int(self.row(state)[b])
            if state < 0:
                return False
        return self.is_accepting(state)


@lru_cache(maxsize=1)
def json_char() -> ByteDFA:
    """One character as written inside a JSON string: raw UTF-8, or a JSON escape other than a
    surrogate's (``\\ud83d\\ude00`` is one character written as two escapes; counting lengths,
    such characters are taken written raw only, so that every escape is exactly one)."""
    return compile_regex(r'[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u(?:[0-9a-cA-C][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}|[e-fE-F][0-9a-fA-F]{3})')


class CountedString(LazyDFA):
    """A JSON string (quotes included) of ``lo`` to ``hi`` characters (``hi`` None: no bound).

    State 0 is before the opening quote, 1 after the closing one; state ``2 + k * m + c`` has
    ``k`` characters done and is in state ``c`` of the ``m``-state one-character automaton.
    With no upper bound the count stops at ``lo``.

    >>> s = CountedString(2, 3000)
    >>> s.matches(b'"ab"'), s.matches(b'"a"'), s.matches(b'"' + b"x" * 3000 + b'"'), s.matches(b'"' + b"x" * 3001 + b'"')
    (True, False, True, False)
    """

    def __init__(self, lo: int, hi: int | None) -> None:
        if hi is not None and hi < lo:
            raise ValueError("empty length range")
        super().__init__()
        self.lo, self.hi = lo, hi
        self._one = one_char = json_char()
        m = self._m = one_char.n_states
        # each one-character state's row as offsets from its level's first state: a character
        # completed goes to the next level (+m), else to another state of the same level
        nxt = one_char.trans
        final = np.zeros(m + 1, dtype=bool)
        final[:m] = one_char.accepting
        self._template = np.where(nxt < 0, -1, np.where(final[nxt], m, nxt)).astype(np.int64)
        self._completes = (nxt >= 0) & final[nxt]
        for table in (self._template, self._completes):
            read_only(table)

    numbered_by_content = True  # state 2 + k * m + c

    @property
    def key(self) -> tuple:
        return ("counted-string", self.lo, self.hi)

    def position(self, state: int) -> tuple[int, int] | None:
        """(characters done, state of the one-character automaton ``json_char``) inside the
        string; None before its opening quote or after its closing one."""
        return None if state < 2 else divmod(state - 2, self._m)

    def _state(self, k: int, c: int) -> int:
        return 2 + k * self._m + c

    def _compute_row(self, state: int) -> np.ndarray:
        row = np.full(256, -1, dtype=np.int32)
        if state == 0:
            row[0x22] = self._state(0, 0)
            return row
        if state == 1:
            return row
        k, c = divmod(state - 2, self._m)
        if self.hi is None or k + 1 <= self.hi:  # a character can still be completed
            tmpl = self._template[c]
            row = np.where(tmpl < 0, -1, tmpl + (2 + k * self._m))
            if self.hi is None and k >= self.lo:  # no upper bound: the count stops at lo
                row[self._completes[c]] = self._state(k, 0)
        if c == 0 and k >= self.lo:
            row[0x22] = 1
        return row

    def shift(self, state: int) -> int:
        if state < 2:
            return -2
        k, c = divmod(state - 2, self._m)
        if c:
            return -2  # inside a character
        if self.hi is not None and k + 1 > self.hi:
            return -1
        return self._state(k + 1 if self.hi is not None or k < self.lo else k, 0)

    def canonical(self, state: int, ahead: int) -> int:
        if state < 2:
            return state
        k, c = divmod(state - 2, self._m)
        if k > self.lo and (self.hi is None or k + ahead + 1 <= self.hi):
            return self._state(self.lo, c)  # past the lower bound and far from the upper one
        return state

    def is_accepting(self, state: int) -> bool:
        return state == 1

    def depth(self, state: int) -> int:
        return 0 if state < 2 else (state - 2) // self._m

    foldable = True

    def unfold(self, state: int, levels: int) -> int:
        return state + levels * self._m


class LazyUnion(LazyDFA):
    """The union of two automata (dense or lazy): pairs of states, either one alive."""

    def __init__(self, a: ByteDFA | LazyDFA, b: ByteDFA | LazyDFA) -> None:
        super().__init__()
        self.a, self.b = a, b
        self._pairs: list[tuple[int, int]] = [(0 if not a.empty else -1, 0 if not b.empty else -1)]
        self._index = {self._pairs[0]: 0}

    @property
    def key(self) -> tuple:
        return ("union", _key(self.a), _key(self.b))

    def _compute_row(self, state: int) -> np.ndarray:
        p, q = self._pairs[state]
        ra = self.a.trans[p] if p >= 0 else np.full(256, -1, dtype=np.int32)
        rb = self.b.trans[q] if q >= 0 else np.full(256, -1, dtype=np.int32)
        row = np.full(256, -1, dtype=np.int32)
        codes = (ra.astype(np.int64) + 1) * (1 << 32) + (rb.astype(np.int64) + 1)
        for code in unique(codes[(ra >= 0) | (rb >= 0)]).tolist():
            pair = (code >> 32) - 1, (code & 0xFFFFFFFF) - 1
            j = self._index.get(pair)
            if j is None:
                j = self._index[pair] = len(self._pairs)
                self._pairs.append(pair)
            row[codes == code] = j
        return row

    def is_accepting(self, state: int) -> bool:
        p, q = self._pairs[state]
        return (p >= 0 and bool(self.a.accepting[p])) or (q >= 0 and bool(self.b.accepting[q]))

    def depth(self, state: int) -> int:
        p, q = self._pairs[state]
        return max(_depth(self.a, p), _depth(self.b, q))

    def _one_side(self, state: int):
        """(the lazy automaton, its state, which side) when only a lazy side is alive."""
        p, q = self._pairs[state]
        if q < 0 and isinstance(self.a, LazyDFA):
            return self.a, p, 0
        if p < 0 and isinstance(self.b, LazyDFA):
            return self.b, q, 1
        return None

    def _pair_state(self, side: int, s: int) -> int:
        pair = (s, -1) if side == 0 else (-1, s)
        j = self._index.get(pair)
        if j is None:
            j = self._index[pair] = len(self._pairs)
            self._pairs.append(pair)
        return j

    def shift(self, state: int) -> int:
        one = self._one_side(state)
        if one is None:
            return -2
        dfa, s, side = one
        t = dfa.shift(s)
        return t if t < 0 else self._pair_state(side, t)

    def canonical(self, state: int, ahead: int) -> int:
        one = self._one_side(state)
        if one is None:
            return state
        dfa, s, side = one
        c = dfa.canonical(s, ahead)
        return state if c == s else self._pair_state(side, c)


def _key(dfa: ByteDFA | LazyDFA) -> tuple:
    if isinstance(dfa, LazyDFA):
        return dfa.key
    return ("dense", dfa.trans.tobytes(), dfa.accepting.tobytes())


def _depth(dfa: ByteDFA | LazyDFA, state: int) -> int:
    return dfa.depth(state) if state >= 0 and isinstance(dfa, LazyDFA) else 0


def first_bytes(dfa: ByteDFA | LazyDFA) -> np.ndarray:
    """The bytes a word of the language can start with."""
    if dfa.empty:
        return np.zeros(256, dtype=bool)
    return np.asarray(dfa.trans[0]) >= 0


def _lazy_product(a: ByteDFA | LazyDFA, b: ByteDFA | LazyDFA, op: str) -> ByteDFA | LazyDFA:
    """``product`` where one side is lazy: a union, or an operation settled by the first byte."""
    if op == "or":
        if a.empty:
            return b
        if b.empty:
            return a
        if isinstance(a, CountedString) and isinstance(b, CountedString):
            lo, hi = sorted([(a.lo, a.hi), (b.lo, b.hi)], key=lambda r: r[0])
            if lo[1] is None or lo[1] + 1 >= hi[0]:  # overlapping or adjacent ranges: one range
                top = None if lo[1] is None or hi[1] is None else max(lo[1], hi[1])
                return CountedString(lo[0], top)
        return LazyUnion(a, b)
    if a.empty or b.empty or not (first_bytes(a) & first_bytes(b)).any():
        # no word in common: the intersection is empty, the difference is a
        if op == "and" or a.empty:
            return ByteDFA(np.zeros((0, 256), dtype=np.int32), np.zeros(0, dtype=bool))
        return a
    raise UnboundedProduct(f"the {'intersection' if op == 'and' else 'difference'} of a length-counted string with another string")


class CountedPattern(LazyDFA):
    """A JSON string (quotes included) whose body is a word of ``body`` (a dense automaton over
    the body's JSON-escaped bytes, e.g. a pattern or a format) of ``lo`` to ``hi`` characters.

    A state is (characters done ``k``, body state ``p``, one-character state ``c``). It is live
    when some continuation ends the body accepted with a total length in bounds: with
    ``need[j][(p, c)]``, the fewest characters of a completion that has at least ``j`` (computed
    once per automaton, layer by layer), (k, p, c) is live iff
    ``need[max(lo - k, 0)][(p, c)] <= hi - k``.

    >>> digits = compile_regex("[0-9]*")
    >>> s = CountedPattern(digits, 3, 300)
    >>> s.matches(b'"123"'), s.matches(b'"12"'), s.matches(b'"12a"'), s.matches(b'"' + b"7" * 300 + b'"'), s.matches(b'"' + b"7" * 301 + b'"')
    (True, False, False, True, False)
    """

    def __init__(self, body: ByteDFA, lo: int, hi: int | None, *, max_lo: int = DEFAULT_LIMITS.max_counted_min) -> None:
        if hi is not None and hi < lo:
            raise ValueError("empty length range")
        if lo > max_lo:  # the table of completion lengths has a row per character up to lo
            raise UnboundedProduct(f"a minimum length over {max_lo} together with a pattern or format")
        super().__init__()
        self.body, self.lo, self.hi = body, lo, hi
        self._one = one = json_char()
        self._final = one.accepting
        # the (body state, character state) pairs reachable from the start, and their edges
        pairs = {(0, 0): 0} if not body.empty else {}
        order = list(pairs)
        src, dst, weight = [], [], []
        next_rows, done_rows = [], []  # per pair: the pair each byte leads to, and whether it ends a character
        i = 0
        while i < len(order):
            if i % 256 == 0:
                check_budget(len(order))
            p, c = order[i]
            pn, cn = body.trans[p], one.trans[c]
            ok = (pn >= 0) & (cn >= 0)
            done = ok & self._final[np.maximum(cn, 0)]
            row = np.full(256, -1, dtype=np.int32)
            for q, d in set(zip(pn[ok].tolist(), cn[ok].tolist())):
                finished = bool(self._final[d])
                key = (q, 0 if finished else d)
                v = pairs.setdefault(key, len(order))
                if v == len(order):
                    order.append(key)
                row[ok & (pn == q) & (cn == d)] = v
                src.append(i)
                dst.append(v)
                weight.append(int(finished))
            next_rows.append(row)
            done_rows.append(done)
            i += 1
        self._pairs, self._order = pairs, order
        self._next = np.stack(next_rows) if next_rows else np.zeros((0, 256), dtype=np.int32)
        self._done = np.stack(done_rows) if done_rows else np.zeros((0, 256), dtype=bool)
        self._char_shift = self._uniform_characters()
        self._accept_pair = np.array([bool(body.accepting[p]) and c == 0 for p, c in order], dtype=bool)
        n = len(order)
        src_a, dst_a, w_a = (np.array(x, dtype=np.int64) for x in (src, dst, weight))
        accept = self._accept_pair
        inf = np.iinfo(np.int64).max // 4
        layers = []
        for j in range(lo + 1):
            if j == 0:
                need = np.where(accept, 0, inf)
            else:
                need = np.full(n, inf, dtype=np.int64)
                ones = w_a == 1
                np.minimum.at(need, src_a[ones], 1 + layers[-1][dst_a[ones]])
            while True:  # relax along edges that stay inside the layer
                cand = need.copy()
                same = w_a == 0 if j else np.ones(len(w_a), dtype=bool)
                np.minimum.at(cand, src_a[same], need[dst_a[same]] + w_a[same])
                if (cand == need).all():
                    break
                need = cand
            layers.append(need)
        self._need = np.stack(layers) if layers else np.zeros((1, 0), dtype=np.int64)
        self._inf = inf
        self._n = n
        finite = self._need[0][self._need[0] < inf]
        self._longest_need = int(finite.max(initial=0))
        self.empty = not n or not self._live(0, 0)
        for table in (self._next, self._done, self._char_shift, self._accept_pair, self._need):
            read_only(table)

    def _uniform_characters(self) -> np.ndarray:
        """Per pair: the pair every JSON-string-safe character leads to (completing it), -1 if
        every one is rejected, -2 if they disagree (``LazyDFA.shift``)."""
        n = len(self._order)
        if not n:
            return np.zeros(0, dtype=np.int32)
        out = uniform_successor(self._next, np.arange(n))
        # only from a character boundary (a token's rest may start inside a character), and a
        # character is one step: it must end where a character ends
        boundary = np.array([c == 0 for _, c in self._order], dtype=bool)
        ends = self._done[:, 0x61]
        return np.where(~boundary | ((out >= 0) & ~ends), -2, out).astype(np.int32)

    def shift(self, state: int) -> int:
        if state < 2:
            return -2
        k, node = divmod(state - 2, self._n)
        target = int(self._char_shift[node])
        if target < 0:
            return target
        k2 = k + 1 if self.hi is not None or k < self.lo else k
        return self._state(k2, target) if self._live(k2, target) else -1

    numbered_by_content = True  # state 2 + k * n + node

    @property
    def key(self) -> tuple:
        return ("counted-pattern", self.body.trans.tobytes(), self.body.accepting.tobytes(), self.lo, self.hi)

    def _live(self, k: int, node: int) -> bool:
        need = int(self._need[max(self.lo - k, 0), node])
        return need < self._inf and (self.hi is None or need <= self.hi - k)

    def _state(self, k: int, node: int) -> int:
        return 2 + k * self._n + node

    def _compute_row(self, state: int) -> np.ndarray:
        row = np.full(256, -1, dtype=np.int32)
        if state == 0:
            if self._n and self._live(0, 0):
                row[0x22] = self._state(0, 0)
            return row
        if state == 1:
            return row
        k, node = divmod(state - 2, self._n)
        target, done = self._next[node], self._done[node]
        step = 1 if self.hi is not None or k < self.lo else 0  # no upper bound: the count stops at lo
        k2 = np.where(done, k + step, k)
        # live: the fewest characters of a completion (at least lo - k2 of them) fit under hi
        same = self._need[max(self.lo - k, 0)]
        after = self._need[max(self.lo - k - step, 0)]
        need = np.where(done, after[np.maximum(target, 0)], same[np.maximum(target, 0)])
        room = need < self._inf if self.hi is None else need <= self.hi - k2
        row = np.where((target >= 0) & room, 2 + k2 * self._n + target.astype(np.int64), -1)
        if k >= self.lo and self._accept_pair[node]:
            row[0x22] = 1
        return row

    def is_accepting(self, state: int) -> bool:
        return state == 1

    def depth(self, state: int) -> int:
        return 0 if state < 2 else (state - 2) // self._n

    foldable = True

    def unfold(self, state: int, levels: int) -> int:
        return state + levels * self._n

    def canonical(self, state: int, ahead: int) -> int:
        if state < 2:
            return state
        k, node = divmod(state - 2, self._n)
        # past the minimum and so far from the maximum that no text of ``ahead`` bytes, nor the
        # shortest completion after it, can reach it: the count does not matter
        if k > self.lo and (self.hi is None or k + ahead + 1 + self._longest_need <= self.hi):
            return self._state(self.lo, node)
        return state
