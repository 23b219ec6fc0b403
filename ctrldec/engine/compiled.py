"""A grammar compiled for one tokenizer, and the per-sequence ``GrammarMatcher``.

How a full token mask is computed (see ``docs/engine.md`` for the measurements):

* For a lexer state ``D`` the whole vocabulary is run through the lexer automaton once, vectorised
  with numpy, and split into three kinds of tokens: tokens that stay inside the current lexeme
  (allowed iff the lexeme can still end as a terminal the parser accepts: a bitset test), tokens
  that die (never allowed), and tokens that end the lexeme as terminal ``T`` part-way through.
* Tokens of the third kind are grouped by ``T``; after the parser shifts ``T`` (which depends on
  the stack) the rest of their bytes is classified the same way from the new parser state's
  lexer start, recursively. A classification depends only on (lexer state, terminal path, parser
  states along it), so it is computed once and cached for the life of the compiled grammar.
* At run time a mask is an OR of a few precomputed bitmasks, chosen by a handful of parser steps
  on the actual stack. The result is cached per (stack node, lexer state): stacks are interned
  integers (``lalr.Stacks``), so a state seen before costs one dict lookup.

This is exact for the lexing rules of ``lexer.py``: tokens spanning several terminals (``"},`` in
JSON) are checked terminal by terminal against the real stack, and LALR's merged lookaheads are
resolved by simulating reductions on the stack.

Threads: every cache above is shared by all matchers of a grammar, in any thread, and most are
filled on first use. The rule that keeps this safe without a lock on the hot path: reads take no
lock; whatever fills a cache (a new interned stack, a lazily built lexer state, a terminal feed,
an acceptable-terminal set, a token classification, a mask) runs under the grammar's re-entrant
lock (``GrammarTables.lock``, the lexer automaton's), re-checks the cache first, and publishes
its result last, after everything the result refers to is in place. Caches only grow (a full
stack store is replaced, never emptied, so matchers keep theirs), and every read of one entry of
a list or dict is atomic in CPython, so a lock-free reader sees either no entry (and takes the
lock) or a complete one. ``accepts`` on a state seen before, and a mask already computed, cost
no lock at all (``docs/engine.md``, "Threads"). A matcher itself is per sequence: one thread at a
time.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import DeadEndError, InvalidTokenError, TokenizerError
from ..limits import DEFAULT_LIMITS, Limits
from ..vocab import TokenizerInfo
from .bitmask import unpack, words_for, write_words
from .bytedfa import CountedString, expand_ranges, json_char, read_only, unique_inverse
from .completion import Completions
from .grammar import ENTRY_BYTES, GrammarTables
from .lalr import ACCEPT, Stacks
from .lexer import VIRTUAL

__all__ = ["ByteAutomaton", "CompiledGrammar", "GrammarMatcher", "UNBOUNDED"]

_LEX_STRIDE = 1 << 32  # a lazy lexer grows, so keys cannot use its current size
UNBOUNDED = 1 << 40  # a completion bound when no completion is known (none, or past the search limit)
_SKIP = -3  # ``_classify_root``'s first-byte row: tokens starting with this byte are left out
_FEW_NODES = 12  # from a trie level of at most this many live nodes on, and while each next level has at most
# four times as many, ``_classify_root`` walks node by node (``_FewNodes``)
_FEW_TOKENS = 48  # ``_walk`` goes token by token once at most this many tokens are left
_FEW_ASSEMBLED = 512  # a walk that found at most this many tokens, node by node, is assembled in Python
_FEW_SOAKED = 64  # ... with the tokens of its absorbed subtrees sorted out by numpy past this many
_LOOP_DEPTH = 1  # trie levels (from the first byte) where subtrees are tested for runs: deeper, the test costs more than it saves
_LOOP_TOKENS = 8  # a subtree of at least this many tokens entering a state that begins a run (``LexerAutomaton.runs``) is settled by a subset test
_PICKED_CHILD = 1024  # tokens of a child classification past which, all at offset 0, they are picked from the state's own
_HASHED_TOKENS = 256  # token arrays up to this length are interned by their bytes; longer ones by a fingerprint
_PICKS = 1024  # first-byte picks kept per tokenizer (``_first_byte_words``), ~6 KB each for 49,152 tokens
_FOLD_MARGIN = 4  # bytes past the longest token that a shared classification's states must agree on: a
# split reads its interior's classification one byte in, and a token's end reads one byte more
_BUDGET_TABLES = 512  # per-state budget tables kept (each a few bitmasks); the cache is cleared past it


def _groups(keys: np.ndarray, values: np.ndarray):
    """(key, values with that key) for each distinct key: one sort, not one pass per key."""
    if not len(keys):
        return
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    cuts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    for chunk in np.split(order, cuts):
        yield int(keys[chunk[0]]), values[chunk]


_SCAN_DIES, _SCAN_STAYS, _SCAN_CLOSES = 0, 1, 2  # ``_scan_strings``'s statuses


def _scan_strings(info: TokenizerInfo) -> tuple[np.ndarray, ...]:
    """Every token read from inside a JSON string at a character boundary, once per tokenizer:
    (status: dies, stays inside, or closes the string with a quote; characters completed before
    the end or the closing quote; whether it ends inside a character; the offset after the
    closing quote). Tokens without bytes die."""
    one = json_char()
    table, lengths = info.byte_table()
    n = len(lengths)
    status = np.full(n, _SCAN_STAYS, dtype=np.int8)
    status[lengths == 0] = _SCAN_DIES
    chars, pos = np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.int32)
    state = np.zeros(n, dtype=np.int32)
    going = np.flatnonzero(lengths > 0)
    for j in range(table.shape[1]):
        going = going[lengths[going] > j]
        if not len(going):
            break
        b, at = table[going, j], state[going]
        closes = (at == 0) & (b == 0x22)
        status[going[closes]], pos[going[closes]] = _SCAN_CLOSES, j + 1
        nxt = one.trans[at, b]
        dies = ~closes & (nxt < 0)
        status[going[dies]] = _SCAN_DIES
        going, nxt = going[~closes & ~dies], nxt[~closes & ~dies]
        done = one.accepting[nxt]
        chars[going[done]] += 1
        state[going] = np.where(done, 0, nxt)
    partial = (status == _SCAN_STAYS) & (state != 0)
    return tuple(read_only(a) for a in (status, chars, partial.astype(np.int32), pos))


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class _Group:
    """Tokens classified from one lexer state along one terminal path; see the module docstring."""

    __slots__ = ("always", "stays", "emits", "children")

    def __init__(self) -> None:
        self.always: np.ndarray | None = None
        # tuples of ints and arrays: the cyclic GC stops scanning them (a process that compiled
        # many grammars holds tens of thousands of groups)
        self.stays: tuple[tuple[int, np.ndarray], ...] = ()
        self.emits: tuple[tuple[int, np.ndarray, np.ndarray], ...] = ()
        self.children: dict[tuple[int, int], _Group] = {}

    def nbytes(self) -> int:
        """Its arrays and list entries (children are counted when they are made)."""
        arrays = [a for _, a in self.stays] + [a for _, i, p in self.emits for a in (i, p)]
        if self.always is not None:
            arrays.append(self.always)
        return sum(a.nbytes for a in arrays) + (len(self.stays) + len(self.emits) + 1) * ENTRY_BYTES


class _Split:
    """``CompiledGrammar._classify_state``'s classification of a split state: its own walk
    (``rest``) plus the tokens that classify as from the string interior ``U``, picked by
    first-byte bitmasks from ``U``'s classification (``after``: from its second byte), which
    ``_Run.collect`` reads through its per-stack cache of those two. Merged into one group, the
    state had paid a merge, a key and a renumbering of ``U``'s tokens, and every stack a
    collection of them, at each position of a property name. ``byte`` is a first byte that
    leads from the state to ``U``: the shared form names no grammar's states, and each grammar
    finds its ``U`` through it (``parts``: the grammar's two groups and their picks). A child
    classification picked whole from a root one (``CompiledGrammar._child``) is a split with no
    walk, ``byte`` -1 and its one part set directly: it is never shared, so no grammar looks
    for its ``U``."""

    __slots__ = ("rest", "byte", "as_u", "after", "parts")

    def __init__(self, rest: _Group, byte: int, as_u: np.ndarray | None, after: np.ndarray | None) -> None:
        self.rest, self.byte, self.as_u, self.after = rest, byte, as_u, after
        self.parts: tuple[tuple[_Group, np.ndarray], ...] = ()

    def nbytes(self) -> int:
        """Its own walk's arrays and the picks (the picks are shared per tokenizer: counted here
        as an upper bound)."""
        return self.rest.nbytes() + sum(w.nbytes for w in (self.as_u, self.after) if w is not None)


class _SharedGroups:
    """Token classifications shared by every grammar compiled for one tokenizer (kept on its
    ``TokenizerInfo``), keyed by ``LexerAutomaton.automata_key``: a lexer state built from the
    same terminal automata classifies every token the same way, up to the numbering of its
    terminals, so groups are stored with terminals numbered by their place in the key (the
    ``%ignore`` bit and the end bit after them). Least recently used entries go past
    ``limit`` bytes. Thread-safe (its own lock; the arrays are read-only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.entries: OrderedDict[tuple, tuple[_Group, int, tuple]] = OrderedDict()
        self.bytes = 0
        self.arrays: dict[tuple, tuple[tuple[np.ndarray, np.ndarray], ...]] = {}  # ``intern``: by content key, the pairs with it
        self.array_bytes = 0
        self.picks: dict[bytes, np.ndarray] = {}  # ``CompiledGrammar._first_byte_words``

    def nbytes(self) -> int:
        """The classifications, the interned arrays and the first-byte picks kept."""
        return self.bytes + self.array_bytes + sum(w.nbytes for w in list(self.picks.values()))

    def get(self, key: tuple) -> _Group | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                return None
            self.entries.move_to_end(key)
            return entry[0]

    def intern(self, idx: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The one read-only copy of the token and offset arrays ``idx``, ``pos`` (by content):
        classifications from different lexer states, in one grammar or several, often end the
        same tokens at the same offsets (a string's closing quote after each position of a
        property name), and their children are shared by the arrays' identity. Past a quarter of
        ``limit`` bytes the table starts afresh (the arrays live on in the groups that hold
        them; a later equal pair is then a new object, which costs only a shared child)."""
        idx, pos = idx.astype(np.int64, copy=False), pos.astype(np.int64, copy=False)
        if len(idx) <= _HASHED_TOKENS:
            key: tuple = (len(idx), idx.tobytes(), pos.tobytes())
        else:  # a fingerprint, and the arrays compared on a match: hashing ~48,000 tokens cost ~0.2 ms
            key = (len(idx), int(idx[0]), int(idx[-1]), int(idx.sum()), int(pos.sum()), int(np.dot(idx, pos + 1)))
        with self.lock:
            for found in self.arrays.get(key, ()):
                if len(idx) <= _HASHED_TOKENS or np.array_equal(found[0], idx) and np.array_equal(found[1], pos):
                    return found
            if self.array_bytes > self.limit // 4:
                self.arrays.clear()
                self.array_bytes = 0
            found = (read_only(idx), read_only(pos))
            self.arrays[key] = self.arrays.get(key, ()) + (found,)
            self.array_bytes += (idx.nbytes + pos.nbytes) * (2 if len(idx) <= _HASHED_TOKENS else 1)  # a short pair's key holds its bytes
        return found

    def put(self, key: tuple, group: _Group, keep: tuple) -> None:
        """Keep ``group`` under ``key``, and ``keep`` alive with it (arrays among it counted)."""
        size = group.nbytes() + sum(a.nbytes for a in keep if isinstance(a, np.ndarray))
        with self.lock:
            if key in self.entries or size > self.limit:
                return
            self.entries[key] = (group, size, keep)
            self.bytes += size
            while self.bytes > self.limit:
                _, (_, old, _) = self.entries.popitem(last=False)
                self.bytes -= old


def _renumbered(group: _Group | _Split, bit_map: dict[int, int], term_map: dict[int, int]) -> _Group | _Split | None:
    """``group`` with its ``stays`` bits and ``emits`` terminals renumbered (None if one has no
    number in the maps); the arrays are shared, the children are not copied. A split's own walk
    is renumbered; its parts, another grammar's groups, are left out (``parts`` empty)."""
    if isinstance(group, _Split):
        rest = _renumbered(group.rest, bit_map, term_map)
        return None if rest is None else _Split(rest, group.byte, group.as_u, group.after)  # type: ignore[arg-type]
    stays = []
    for bits, words in group.stays:
        new = 0
        while bits:
            low = bits & -bits
            target = bit_map.get(low.bit_length() - 1)
            if target is None:
                return None
            new |= 1 << target
            bits ^= low
        stays.append((new, words))
    if any(t not in term_map for t, _, _ in group.emits):
        return None
    out = _Group()
    out.always = group.always
    out.stays = tuple(stays)
    out.emits = tuple((term_map[t], idx, pos) for t, idx, pos in group.emits)
    return out


class _FewNodes:
    """``CompiledGrammar._classify_root``'s work on trie levels of a few nodes, done node by node
    in Python: the same decisions as a vectorised level (a node whose byte is rejected ends its
    lexeme there; one reaching an eager state ends it after the byte; tokens ending at the node
    stay; a subtree entering a state that absorbs safe characters is settled later by
    ``_absorbed``; the rest walk on). A vectorised level costs about 30 numpy calls whatever its
    size, and a first visit often walks a dozen levels of a handful of nodes each (the tokens
    that begin with a property name's next character, say)."""

    def __init__(self, grammar: CompiledGrammar) -> None:
        self.g = grammar
        self.grew = False  # states were built since the caller last read the numpy tables
        self.stays: list[tuple[int, int, int]] = []  # (lo, hi, lexer state)
        self.emits: list[tuple[int, int, int, int]] = []  # (lexer state it ended in, lo, hi, next offset)
        self.soaks: list[tuple[int, int, int, int, int]] = []  # (lo, hi, depth, lexer state, characters before)
        self.loops: list[tuple[int, int, int, int]] = []  # (lo, hi, depth, lexer state beginning a run of ASCII bytes)
        lexer = grammar.lexer
        self.accept, self.eager, self.built = lexer.accept, lexer.eager, lexer.built  # lists the lexer grows in place
        self.order = grammar.info.trie().order
        self.shift = lexer.shift()  # re-read as the walk builds states
        self.second: list[int] | None = None  # ``_classify_root``'s ``second`` row, as a list
        self.handed: list[int] = []  # level-1 nodes left to ``U``'s classification from the second byte

    def walk(self, levels: list[dict[str, np.ndarray]], d: int, parents: np.ndarray, states: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
        """Walk the children of trie nodes ``parents`` (level ``d - 1``, in lexer states
        ``states``) and their subtrees, level by level; None when no node walks on, or where a
        level has grown past a few nodes, (its level, the nodes above it, their states) for the
        vectorised walk to go on from."""
        lexer = self.g.lexer
        trans = lexer.trans_list
        self.shift = lexer.shift()
        up, at = parents.tolist(), states.tolist()
        second = self.second
        while up and d < len(levels):
            above, level = levels[d - 1], levels[d]
            kids_lo, kids_hi = above["kids_lo"], above["kids_hi"]
            spans = [(kids_lo.item(i), kids_hi.item(i)) for i in up]
            if sum(b - a for a, b in spans) > 4 * _FEW_NODES:
                break
            byte, lo_at, hi_at, ends_at = level["byte"], level["lo"], level["hi"], level["ends"]
            live_idx: list[int] = []
            live_state: list[int] = []
            for (first, last), p in zip(spans, at):
                row = trans[p]
                for i in range(first, last):
                    b = byte.item(i)
                    x = row[b]
                    if d == 1 and second is not None and x >= 0 and x == second[b]:
                        self.handed.append(i)
                        continue
                    if self._node(p, x, lo_at.item(i), hi_at.item(i), ends_at.item(i), d):
                        live_idx.append(i)
                        live_state.append(x)
            up, at = live_idx, live_state
            d += 1
        if self.grew:
            lexer.sync()
        if not up or d >= len(levels):
            return None
        return d, np.array(up, dtype=np.int64), np.array(at, dtype=np.int32)

    def _node(self, p: int, x: int, lo: int, hi: int, e: int, d: int) -> bool:
        """Settle a trie node at level ``d`` (tokens ``[lo, hi)`` in trie order, ``e`` of them
        ending at it) whose byte leads from lexer state ``p`` to ``x``; True if it walks on."""
        if x < 0:
            if self.accept[p] >= 0:
                self.emits.append((p, lo, hi, d))  # this byte starts the next lexeme
            return False
        if not self.built[x]:  # a lazy lexer's state met for the first time
            self.g.lexer.build(x)
            self.grew = True
        if self.eager[x]:
            self.emits.append((x, lo, hi, d + 1))
            return False
        if e:
            self.stays.append((lo, lo + e, x))
        if x >= len(self.shift):
            self.shift = self.g.lexer.shift()
        if self.shift[x] != -2:
            if hi > lo + e:  # the subtree shares its first d + 1 bytes: one character count
                self.soaks.append((lo + e, hi, d + 1, x, int(self.g._char_starts[self.order[lo], d + 1])))
            return False
        if d < _LOOP_DEPTH and hi - lo - e >= max(_LOOP_TOKENS, 1) and self.g.lexer.runs(x):
            self.loops.append((lo + e, hi, d + 1, x))
            return False
        return True

    def settle(self, level: dict[str, np.ndarray], d: int, idx: np.ndarray, states: np.ndarray, parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``_settle_level`` of nodes ``idx`` of ``level`` (depth ``d``), reached lexer states
        ``states`` from ``parents``, node by node; the nodes that walk on and their states."""
        lexer = self.g.lexer
        self.shift = lexer.shift()
        lo_at, hi_at, ends_at = level["lo"], level["hi"], level["ends"]
        up: list[int] = []
        at: list[int] = []
        for i, x, p in zip(idx.tolist(), states.tolist(), parents.tolist()):
            if self._node(p, x, lo_at.item(i), hi_at.item(i), ends_at.item(i), d):
                up.append(i)
                at.append(x)
        if self.grew:
            lexer.sync()
        return np.array(up, dtype=np.int64), np.array(at, dtype=np.int32)

    def walk_first(self, levels: list[dict[str, np.ndarray]], start: int, first: np.ndarray, kept: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
        """The first trie level's nodes ``kept`` from lexer state ``start``, whose row ``first``
        replaces (``_classify_root``), then ``walk`` on; its answer."""
        lexer = self.g.lexer
        self.shift = lexer.shift()
        level = levels[0]
        byte, lo_at, hi_at, ends_at = level["byte"], level["lo"], level["hi"], level["ends"]
        up: list[int] = []
        at: list[int] = []
        for i in kept.tolist():
            x = int(first[byte.item(i)])
            if self._node(start, x, lo_at.item(i), hi_at.item(i), ends_at.item(i), 0):
                up.append(i)
                at.append(x)
        if self.grew:
            lexer.sync()
        if not up:
            return None
        return self.walk(levels, 1, np.array(up, dtype=np.int64), np.array(at, dtype=np.int32))

    def assembled(self) -> _Group | None:
        """``CompiledGrammar._assembled`` of what the walk found, in Python where that is a few
        tokens and every absorbing subtree is in a string interior or one safe character from
        it (None otherwise)."""
        g = self.g
        shift = g.lexer.shift()
        spans = [(lo, hi) for lo, hi, _ in self.stays] + [(lo, hi) for _, lo, hi, _ in self.emits] + [(lo, hi) for lo, hi, *_ in self.soaks + self.loops]
        # a soak's state is a string interior, or leads into one on any safe character (a
        # property name typed whole: its next character can only be the interior's)
        into = [int(shift[x]) for _, _, _, x, _ in self.soaks]
        if sum(hi - lo for lo, hi in spans) > _FEW_ASSEMBLED or any(y < 0 or shift[y] != y for y in into):
            return None
        order = g.info.trie().order
        s_idx: list[int] = []
        s_lex: list[int] = []
        e_lex: list[int] = []
        e_idx: list[int] = []
        e_pos: list[int] = []
        for lo, hi, x in self.stays:
            s_idx += order[lo:hi].tolist()
            s_lex += [x] * (hi - lo)
        for x, lo, hi, p in self.emits:
            e_idx += order[lo:hi].tolist()
            e_lex += [x] * (hi - lo)
            e_pos += [p] * (hi - lo)
        walk: tuple[list[int], list[int], list[int]] = ([], [], [])
        if sum(hi - lo for lo, hi, *_ in self.soaks) > _FEW_SOAKED:  # a few numpy calls: ~0.4 us a token in Python
            self._soaked_np(into, s_idx, s_lex, walk)
        else:
            self._soaked(into, s_idx, s_lex, walk)
        self._ran(s_idx, s_lex, walk)
        found: tuple[list, ...] = ([], [], [], [], [])
        if walk[0]:
            g._walk_few(np.array(walk[0], dtype=np.int64), np.array(walk[1], dtype=np.int64), np.array(walk[2], dtype=np.int32), found)
        for got, part in zip((s_idx, s_lex, e_lex, e_idx, e_pos), found):
            for a in part:
                got += a.tolist()
        group = _Group()
        g._fill_group(group, np.array(s_idx, dtype=np.int64), np.array(s_lex, dtype=np.int32), np.array(e_lex, dtype=np.int32),
                      np.array(e_idx, dtype=np.int64), np.array(e_pos, dtype=np.int64))
        return group

    def _soaked(self, into: list[int], s_idx: list[int], s_lex: list[int], walk: tuple[list[int], ...]) -> None:
        """``assembled``'s tokens of the soaks, one by one: a token safe past the soak's depth
        stays, in ``y`` (``into``) if it has characters past the soak's (``x`` if none); the rest
        walk."""
        g = self.g
        order, unsafe, chars = g.info.trie().order, g._unsafe_sorted, g._char_total
        for (lo, hi, depth, x, before), y in zip(self.soaks, into):
            for row, tok in zip(range(lo, hi), order[lo:hi].tolist()):
                if unsafe.item(row) < depth:
                    s_idx.append(tok)
                    s_lex.append(y if chars.item(tok) > before else x)
                else:
                    walk[0].append(tok)
                    walk[1].append(depth)
                    walk[2].append(x)

    def _ran(self, s_idx: list[int], s_lex: list[int], walk: tuple[list[int], ...]) -> None:
        """``assembled``'s tokens of the subtrees that entered a run, one by one: those whose
        bytes after their first lie in the run's sets for their length end where it leads; the
        rest walk."""
        g = self.g
        order, lengths = g.info.trie().order, g._tok_len
        tail_lo, tail_hi, other = g.info.tail_sets()
        for lo, hi, depth, x in self.loops:
            ends, run_lo, run_hi = (a.tolist() for a in g.lexer.run_chain(x, int(lengths[order[lo:hi]].max()) - depth))
            for row, tok in zip(range(lo, hi), order[lo:hi].tolist()):
                k = lengths.item(tok) - depth
                if ends[k] >= 0 and not (tail_lo.item(row) & ~run_lo[k] or tail_hi.item(row) & ~run_hi[k] or other.item(row)):
                    s_idx.append(tok)
                    s_lex.append(ends[k])
                else:
                    walk[0].append(tok)
                    walk[1].append(depth)
                    walk[2].append(x)

    def _soaked_np(self, into: list[int], s_idx: list[int], s_lex: list[int], walk: tuple[list[int], ...]) -> None:
        """``assembled``'s loop over the soaks' tokens, vectorised: a token safe past the soak's
        depth stays, in ``y`` if it has characters past the soak's (``x`` if none); the rest walk."""
        g = self.g
        lo, hi, depth, x, before = np.array(self.soaks, dtype=np.int64).T
        sizes = hi - lo
        rows = expand_ranges(lo, hi)
        tokens = g.info.trie().order[rows]
        depth, x = np.repeat(depth, sizes), np.repeat(x, sizes)
        settled = g._unsafe_sorted[rows] < depth
        lex = np.where(g._char_total[tokens] > np.repeat(before, sizes), np.repeat(np.array(into, dtype=np.int64), sizes), x)
        s_idx += tokens[settled].tolist()
        s_lex += lex[settled].tolist()
        if not settled.all():
            rest = ~settled
            for got, part in zip(walk, (tokens[rest], depth[rest], x[rest])):
                got += part.tolist()

    def flush(self, stay_lo: list[np.ndarray], stay_hi: list[np.ndarray], stay_lex: list[np.ndarray], ev_t: list[np.ndarray],
              ev_lo: list[np.ndarray], ev_hi: list[np.ndarray], ev_pos: list[np.ndarray], absorbed: list[tuple]) -> None:
        """Add what the levels found to ``_classify_root``'s lists, as arrays."""
        if self.stays:
            lo, hi, lex = np.array(self.stays, dtype=np.int64).T
            stay_lo.append(lo)
            stay_hi.append(hi)
            stay_lex.append(lex.astype(np.int32))
        if self.emits:
            t, lo, hi, pos = np.array(self.emits, dtype=np.int64).T
            ev_t.append(t.astype(np.int32))
            ev_lo.append(lo)
            ev_hi.append(hi)
            ev_pos.append(pos)
        if self.soaks:
            lo, hi, depth, lex, before = np.array(self.soaks, dtype=np.int64).T
            sizes = hi - lo
            absorbed.append((expand_ranges(lo, hi), np.repeat(depth, sizes), np.repeat(lex.astype(np.int32), sizes), np.repeat(before, sizes)))
        if self.loops:
            lo, hi, depth, lex = np.array(self.loops, dtype=np.int64).T
            sizes = hi - lo
            absorbed.append((expand_ranges(lo, hi), np.repeat(depth, sizes), np.repeat(lex.astype(np.int32), sizes), None))


class _BudgetTable:
    """The allowed tokens of one state grouped by the completion bound after them: ``masks[i]``
    holds the tokens whose bound is at most ``bounds[i]`` (ascending); ``complete`` says whether
    every allowed token has a known bound (then the last mask is the whole mask, EOS aside)."""

    __slots__ = ("bounds", "masks", "complete")

    def __init__(self, bounds: list[int], masks: list[np.ndarray], complete: bool) -> None:
        self.bounds, self.masks, self.complete = bounds, masks, complete

    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.masks) + (len(self.bounds) + 1) * ENTRY_BYTES


class _Run:
    """One generation of per-stack state: the interned stacks and every cache keyed by them.

    All keys and values are ints or numpy arrays, which Python's cyclic GC does not track.
    A sequence is a tuple of configurations (stack, lexer state): exactly one for an LALR(1)
    grammar; for an ambiguous grammar (GLR-style) one per live reading, merged when equal.
    """

    def __init__(self, automaton: ByteAutomaton) -> None:
        self.a = automaton
        self.lock = automaton.lock
        self.stacks = Stacks(automaton.parse, automaton.lock)
        self.n_lex = _LEX_STRIDE  # cache keys are node * n_lex + lexer state
        self.glr = automaton.parse.ambiguous or automaton.lexer.ambiguous
        self.acceptable_bits: dict[int, int] = {}
        self.masks: dict[int, np.ndarray] = {}  # node * n_lex + lex -> token mask
        self.next_bytes_bits: dict[int, int] = {}
        self.byte_groups: dict[tuple, list[tuple[int, int]]] = {}  # (lexer state, start states after it) -> ``_byte_groups``
        self.distances: dict[int, int] = {}  # node * n_lex + lex -> completion bound (``distance``)
        self.exact: dict[int, int] = {}  # node * n_lex + lex -> bytes of a shortest completion
        self.budget_tables: dict[int, _BudgetTable] = {}
        self.member_completions: dict[int, list[int] | None] = {}  # stack -> ``_with_members``
        self.collected_words: dict[tuple[int, int], np.ndarray] = {}  # ``collected``

    def memory_size_bytes(self) -> int:
        """Estimated: interned stacks and cache entries (the masks themselves are pooled)."""
        s = self.stacks
        entries = len(self.acceptable_bits) + len(self.masks) + len(self.next_bytes_bits) + len(self.byte_groups) + len(s._feeds) + len(s._feeds_all)
        entries += len(self.member_completions)
        tables = sum(t.nbytes() for t in list(self.budget_tables.values()))
        tables += sum(w.nbytes for w in list(self.collected_words.values()))
        return (len(s) + entries + len(self.distances) + len(self.exact) + len(self.collected_words)) * ENTRY_BYTES + tables

    def key(self, c: tuple[int, int]) -> int:
        """The cache key of a configuration (a folded counter shares its base's entries)."""
        return c[0] * self.n_lex + (c[1] if c[1] < VIRTUAL else self.a.lexer.rep(c[1]))

    def after(self, node: int, t: int) -> tuple[int, ...]:
        """The stacks after the lexeme ``t`` (an ``%ignore`` lexeme leaves the stack as it is)."""
        if self.a._ignore[t]:
            return (node,)
        if self.glr:
            return self.stacks.feed_all(node, t)
        r = self.stacks.feed(node, t)
        return (r,) if r >= 0 else ()

    def completes(self, node: int) -> bool:
        """Does the stack form a complete sentence ($END accepted)?"""
        if self.glr:
            return ACCEPT in self.stacks.feed_all(node, self.a.parse.end)
        return self.stacks.feed(node, self.a.parse.end) == ACCEPT

    def acceptable(self, node: int) -> int:
        """Bitset of terminals the stack really shifts next, the ``%ignore`` bit, and the end bit
        if the stack is a complete sentence (matched against ``LexerAutomaton.completable``)."""
        bits = self.acceptable_bits.get(node)
        if bits is None:
            with self.lock:
                bits = self._acceptable(node)
        return bits

    def _acceptable(self, node: int) -> int:
        bits = self.acceptable_bits.get(node)
        if bits is None:
            lexer = self.a.lexer
            bits = 1 << lexer.ignore_bit
            end = self.a.parse.end
            for t in self.a.parse.actions[self.stacks.state[node]]:
                if t == end:
                    if self.completes(node):
                        bits |= 1 << lexer.end_bit
                elif self.after(node, t):
                    bits |= 1 << t
            self.acceptable_bits[node] = bits
        return bits

    def step(self, node: int, lex: int, data: bytes | Sequence[int]) -> tuple[int, int] | None:
        """Consume bytes from (stack, lexer state) of an LALR(1) grammar; None if rejected."""
        lexer = self.a.lexer
        trans, accept, eager, start, built = lexer.trans_list, lexer.accept, lexer.eager, lexer.start, lexer.built
        feed, ignore, state = self.stacks.feed, self.a._ignore, self.stacks.state
        for b in data:
            try:
                nxt = trans[lex][b]
            except IndexError:  # a folded counter (``LexerAutomaton.arrive``): never a lexeme's end
                nxt = lexer.virtual_next(lex, b)
                if nxt < 0:
                    return None
                if nxt >= VIRTUAL:
                    lex = nxt
                    continue
            if nxt < 0:
                t = accept[lex]
                if t < 0:
                    return None
                if not ignore[t]:
                    node = feed(node, t)
                    if node < 0:
                        return None
                nxt = trans[start[state[node]]][b]
                if nxt < 0:
                    return None
            if not built[nxt]:  # a lazy lexer's state met for the first time (built, or folded)
                nxt = lexer.arrive(nxt)
                if nxt >= VIRTUAL:
                    lex = nxt
                    continue
            lex = nxt
            if eager[lex]:
                t = accept[lex]
                if not ignore[t]:
                    node = feed(node, t)
                    if node < 0:
                        return None
                lex = start[state[node]]
        return node, lex

    def step_all(self, configs: tuple[tuple[int, int], ...], data: bytes | Sequence[int]) -> tuple[tuple[int, int], ...]:
        """Consume bytes from every configuration; the surviving configurations (deduplicated)."""
        if not self.glr:
            out = []
            for node, lex in configs:
                r = self.step(node, lex, data)
                if r is not None:
                    out.append(r)
            return tuple(out)
        for b in data:
            nxt: dict[tuple[int, int], None] = {}
            for node, lex in configs:
                for c in self._byte(node, lex, b):
                    nxt[c] = None
            if len(nxt) > self.a.limits.max_configs:
                raise DeadEndError(f"more than {self.a.limits.max_configs} simultaneous readings: the grammar is too ambiguous here")
            configs = tuple(nxt)
            if not configs:
                break
        return configs

    def _byte(self, node: int, lex: int, b: int) -> list[tuple[int, int]]:
        lexer = self.a.lexer
        if lex >= VIRTUAL:
            nxt = lexer.virtual_next(lex, b)
            return self._settle(node, nxt) if nxt >= 0 else []
        nxt = lexer.trans_list[lex][b]
        if nxt >= 0:
            return self._settle(node, nxt)
        out: list[tuple[int, int]] = []
        start, trans, state = lexer.start, lexer.trans_list, self.stacks.state
        for t in lexer.accepts[lex]:
            for n in self.after(node, t):
                x = trans[start[state[n]]][b]
                if x >= 0:
                    out += self._settle(n, x)
        return out

    def _settle(self, node: int, lex: int) -> list[tuple[int, int]]:
        """End an eager lexeme at once (each way it can end, for an ambiguous grammar)."""
        lexer = self.a.lexer
        if lex < VIRTUAL:
            lex = lexer.arrive(lex)
        if lex >= VIRTUAL or not lexer.eager[lex]:
            return [(node, lex)]
        start, state = lexer.start, self.stacks.state
        return [(n, start[state[n]]) for t in lexer.accepts[lex] for n in self.after(node, t)]

    def viable(self, node: int, lex: int) -> bool:
        lexer = self.a.lexer
        return bool(lexer.completable[lex if lex < VIRTUAL else lexer.rep(lex)] & self.acceptable(node))

    def is_accepting(self, node: int, lex: int) -> bool:
        """May the text end here? (The current lexeme ends, then the parser accepts $END.)"""
        lexer = self.a.lexer
        if lex >= VIRTUAL:
            lex = lexer.rep(lex)
        if lexer.is_start[lex]:
            return self.completes(node)
        return any(self.completes(n) for t in lexer.accepts[lex] for n in self.after(node, t))

    def next_bytes(self, node: int, lex: int) -> int:
        """Bitset of the bytes that keep the text viable."""
        lex = self.a.lexer.rep(lex)
        key = node * self.n_lex + lex
        bits = self.next_bytes_bits.get(key)
        if bits is None:
            with self.lock:
                bits = 0
                for b, members in self._byte_groups(node, lex):  # the first byte of a group decides for it
                    if any(self.viable(*c) for c in self.step_all(((node, lex),), (b,))):
                        bits |= members
                self.next_bytes_bits[key] = bits
        return bits

    def _byte_groups(self, node: int, lex: int) -> list[tuple[int, int]]:
        """The bytes that may lead anywhere from (node, lex), in groups whose bytes lead where the
        others of their group do: (the first byte, the group's bitset). A byte only picks the
        lexer state to move to (``step``/``_byte``): within the lexeme, or, where no lexeme
        continues, from the start state after each way the lexeme can end; so the groups depend
        on the lexer state and those start states alone, and are shared by every stack that
        shares them. Each byte alone in a folded or unbuilt state."""
        lexer = self.a.lexer
        if lex >= VIRTUAL or not lexer.built[lex]:
            return [(b, 1 << b) for b in range(256)]
        start, state = lexer.start, self.stacks.state
        if self.glr:
            nodes = [n for t in lexer.accepts[lex] for n in self.after(node, t)]
        else:
            t = lexer.accept[lex]
            ended = -1 if t < 0 else node if self.a._ignore[t] else self.stacks.feed(node, t)
            nodes = [ended] if ended >= 0 else []
        key = (lex, tuple(start[state[n]] for n in nodes))
        groups = self.byte_groups.get(key)
        if groups is None:
            # a byte's class: the state it moves to within the lexeme, else those after the lexeme ends
            table = np.array([lexer.trans_list[lex], *(lexer.trans_list[s] for s in key[1])], dtype=np.int64)
            within = table[0] >= 0
            table[1:, within] = -1
            alive = np.flatnonzero(within | (table[1:] >= 0).any(axis=0))
            groups = []
            if alive.size:
                _, first, which = np.unique(table[:, alive].T, axis=0, return_index=True, return_inverse=True)
                for g, i in enumerate(first):
                    members = np.zeros(256, dtype=bool)
                    members[alive[which.reshape(-1) == g]] = True
                    groups.append((int(alive[i]), int.from_bytes(np.packbits(members, bitorder="little").tobytes(), "little")))
            self.byte_groups[key] = groups
        return groups

    def completion(self, node: int, lex: int, max_states: int) -> bytes | None:
        """A shortest byte suffix reaching a complete sentence (breadth-first), or None."""
        seen = {(node, lex)}
        frontier: list[tuple[int, int, bytes]] = [(node, lex, b"")]
        while frontier and len(seen) < max_states:
            nxt: list[tuple[int, int, bytes]] = []
            for n, x, path in frontier:
                if self.is_accepting(n, x):
                    return path
                bits = self.next_bytes(n, x)
                while bits:
                    b = (bits & -bits).bit_length() - 1
                    bits &= bits - 1
                    for r in self.step_all(((n, x),), (b,)):
                        if r not in seen:
                            seen.add(r)
                            nxt.append((r[0], r[1], path + bytes((b,))))
            frontier = nxt
        return None

    def distance(self, node: int, lex: int, usable: int) -> int:
        """An upper bound on the tokens that complete the output from (stack, lexer state), EOS
        not counted; ``UNBOUNDED`` when no completion is known. Only bytes in the bitset
        ``usable`` (those that are tokens on their own) are used.

        With ``L(c)`` the bytes of a shortest completion of ``c`` (``_shortest``: exact), and
        ``c1`` the configuration after the first token of the tokenizer's own tokenization of
        that completion: ``d(c) = min(L(c), 1 + d(c1))``. Both terms are real completions (a
        token per byte; the first token, then ``c1``'s), and from any ``c`` some token lowers
        ``d`` by at least one: the first byte of the shortest completion (``L`` falls by one
        along it) or that first token. That keeps budget-aware decoding out of dead ends. ``d``
        depends on ``c`` alone, not on what was cached before (outputs do not depend on which
        sequence or thread asked first); cached. (A folded counter asks its base: a completion
        never comes near the count's bound.)"""
        lex = self.a.lexer.rep(lex)
        key = node * self.n_lex + lex
        d = self.distances.get(key)
        if d is None:
            with self.lock:
                d = self.distances.get(key)
                if d is None:
                    d = self._bound((node, lex), usable)
        return d

    def _bound(self, source: tuple[int, int], usable: int) -> int:
        """``distance``'s recursion, unrolled along the chain of first tokens."""
        known, key_of = self.distances, self.key
        tokenize = getattr(self.a, "_token_lengths", None)
        waiting: list[tuple[int, int]] = []  # (key, L) of configurations whose d waits on the next one's
        c = source
        while True:
            key = key_of(c)
            value = known.get(key)
            if value is not None:
                break
            length, text, path = self._shortest(c, usable)
            pieces = tokenize(text) if tokenize is not None and text else None
            if not pieces or path is None:
                value = known[key] = length
                break
            waiting.append((key, length))
            c = path[pieces[0]]
        for key, length in reversed(waiting):
            value = known[key] = min(length, 1 + value)
        return known[key_of(source)]

    def _shortest(self, source: tuple[int, int], usable: int) -> tuple[int, bytes | None, list[tuple[int, int]] | None]:
        """(bytes, text, configurations a byte apart along it) of a shortest completion: built
        from the grammar (``witness``) and replayed from ``source``; where that fails, the length
        from a byte search, without the text. ``UNBOUNDED`` when none is found."""
        text = self.witness(source, usable)
        path = self._replay(source, text) if text is not None else None
        if path is not None:
            return len(text), text, path  # type: ignore[arg-type]
        return self._search(source, usable), None, None

    def witness(self, source: tuple[int, int], usable: int) -> bytes | None:
        """A shortest completion of ``source`` in the grammar (``engine/completion.py``), made of
        bytes in ``usable``; None where the parse tables have no kernel items or there is none.
        Not checked against the lexer (``_replay`` does that)."""
        comp = self.a.completions(usable)
        if comp is None:
            return None
        node, lex = source
        if lex >= VIRTUAL:
            node, lex = source = node, self.a.lexer.rep(lex)
        if self.a.lexer.is_start[lex]:
            options = [(b"", node)]
        else:
            options = [(tail, after) for t, tail in self._lexeme_tails(lex, usable, self.acceptable(node))
                       for after in self.after(node, t)]
        best: tuple[float, bytes] | None = None
        for tail, after in options:
            cost, terminals = comp.stack(self.stacks.states(after))
            if cost < UNBOUNDED and self.stacks.required is not None:
                members = self._with_members(after, comp)
                cost, terminals = (UNBOUNDED, []) if members is None else (comp.cost(tuple(members)), members)
            if cost < UNBOUNDED and (best is None or len(tail) + cost < best[0]):
                best = (len(tail) + cost, tail + comp.text(terminals))
        return None if best is None else best[1]

    def _with_members(self, node: int, comp: Completions) -> list[int] | None:
        """The terminals of the grammar's shortest completion of the stack ``node`` with the
        required members that a frame lacks (``lalr.RequiredMembers``: the grammar's completion
        does not see them) written before its closer, in the frame's order; None if that fails.
        Cached per stack: from a stack after an inserted member it goes on the same way."""
        req = self.stacks.required
        assert req is not None
        known = self.member_completions
        chain: list[tuple[int, list[int]]] = []  # (stack, its completion's terminals up to the next stack's)
        result: list[int] | None = None
        while True:
            if node in known:
                result = known[node]
                break
            cost, terminals = comp.stack(self.stacks.states(node))
            if cost == UNBOUNDED:
                break
            nodes, i = (node,), 0
            while i < len(terminals) and (nxt := self._fed(nodes, terminals[i:i + 1])):
                nodes, i = nxt, i + 1
            if i == len(terminals):
                if any(self.completes(n) for n in nodes):
                    result = terminals
                break
            lack = next((m for n in nodes if (m := self.stacks.missing(n)) is not None), None) if terminals[i] == req.closer else None
            if lack is None or len(chain) > self.a.limits.max_completion_states:  # each round writes a member
                break
            frame, bits = lack
            whole: list[int] = []  # every member the frame lacks, each its grammar's shortest way
            for j, unit in enumerate(req.units[frame]):
                if bits >> j & 1:
                    whole += [req.separator, *comp.witness((-1 - unit,))]
            # where a member's shortest way holds a frame that lacks members itself, only the
            # first member's key: the next round finishes it (the grammar's way, then members)
            key = [req.separator, comp.witness((-1 - req.units[frame][(bits & -bits).bit_length() - 1],))[0]]
            for members in (whole, whole[1:], key, key[1:]):  # no separator before a first member
                nxt = self._fed(nodes, members)
                if nxt:
                    break
            else:
                break
            chain.append((node, terminals[:i] + members))
            node = nxt[0]
        known[node] = result
        for n, head in reversed(chain):
            result = None if result is None else head + result
            known[n] = result
        return result

    def _fed(self, nodes: tuple[int, ...], terminals: list[int]) -> tuple[int, ...]:
        """The stacks after the terminals ``terminals`` from any of ``nodes``."""
        for t in terminals:
            nodes = tuple(dict.fromkeys(n for m in nodes for n in self.after(m, t)))
            if not nodes:
                break
        return nodes

    def _lexeme_tails(self, lex: int, usable: int, acceptable: int) -> list[tuple[int, bytes]]:
        """(terminal, shortest bytes that end the current lexeme as it) for each terminal the
        lexeme can end as and the stack takes (or ``%ignore``), breadth-first over lexer states."""
        lexer, ignore = self.a.lexer, self.a._ignore
        wanted = {t for t in range(len(ignore)) if lexer.completable[lex] >> t & 1 and (acceptable >> t & 1 or ignore[t])}
        usable_bytes = [b for b in range(256) if usable >> b & 1]
        parent: dict[int, tuple[int, int] | None] = {lex: None}
        frontier, found = [lex], {}
        while frontier and wanted - found.keys() and len(parent) <= self.a.limits.max_completion_states:
            nxt = []
            for x in frontier:
                for t in lexer.accepts[x]:
                    if t in wanted and t not in found:
                        path, y = bytearray(), x
                        while parent[y] is not None:
                            y, b = parent[y]  # type: ignore[misc]
                            path.append(b)
                        found[t] = bytes(reversed(path))
                if lexer.eager[x]:
                    continue
                if not lexer.built[x]:
                    lexer.build(x)
                row = lexer.trans_list[x]
                for b in usable_bytes:
                    y = row[b]
                    if y >= 0 and y not in parent:
                        parent[y] = (x, b)
                        nxt.append(y)
            frontier = nxt
        return list(found.items())

    def _replay(self, source: tuple[int, int], text: bytes) -> list[tuple[int, int]] | None:
        """The configurations after each byte of ``text`` from ``source`` if it completes the
        output (their exact shortest lengths are cached for ``_search``), else None."""
        layers: list[dict[tuple[int, int], tuple[int, int] | None]] = [{source: None}]
        for b in text:
            layer: dict[tuple[int, int], tuple[int, int] | None] = {}
            for c in layers[-1]:
                for r in self.step_all((c,), (b,)):
                    if r not in layer and self.viable(*r):
                        layer[r] = c
            if not layer:
                return None
            layers.append(layer)
        end = next((c for c in layers[-1] if self.is_accepting(*c)), None)
        if end is None:
            return None
        path = [end]
        for j in range(len(text), 0, -1):
            path.append(layers[j][path[-1]])  # type: ignore[arg-type]
        path.reverse()
        self._note_exact(path)
        return path

    def _note_exact(self, path: list[tuple[int, int]]) -> None:
        """Cache the shortest lengths along a shortest completion (bytes left)."""
        for j, c in enumerate(path):
            self.exact.setdefault(self.key(c), len(path) - 1 - j)

    def _search(self, source: tuple[int, int], usable: int) -> int:
        """The exact length of a shortest completion by breadth-first search over bytes, stopping
        at a configuration whose exact length is known; ``UNBOUNDED`` past
        ``limits.max_completion_states`` states."""
        known, key_of = self.exact, self.key
        limit = self.a.limits.max_completion_states
        parent: dict[tuple[int, int], tuple[int, int] | None] = {source: None}
        frontier, depth = [source], 0
        best, end = UNBOUNDED, None  # the best total so far, and where its path leaves the search
        while frontier and depth < best and len(parent) <= limit:
            nxt = []
            for c in frontier:
                if self.is_accepting(*c):
                    best, end = depth, c
                    break
                cached = known.get(key_of(c)) if depth else None
                if cached is not None:
                    if depth + cached < best:
                        best, end = depth + cached, c
                    continue
                bits = self.next_bytes(*c) & usable
                while bits:
                    b = (bits & -bits).bit_length() - 1
                    bits &= bits - 1
                    for r in self.step_all((c,), (b,)):
                        if r not in parent and self.viable(*r):
                            parent[r] = c
                            nxt.append(r)
            frontier, depth = nxt, depth + 1
        if end is None:
            return UNBOUNDED
        path = [end]
        while parent[path[-1]] is not None:
            path.append(parent[path[-1]])  # type: ignore[arg-type]
        path.reverse()
        tail = best - (len(path) - 1)  # the known length past the path's end (0 if it ends the output)
        for j, c in enumerate(path):
            known.setdefault(key_of(c), best - j if j < len(path) - 1 else tail)
        return best

    def mask(self, node: int, lex: int) -> np.ndarray:
        if lex >= VIRTUAL:  # a folded counter: the table state that the longest token cannot tell from it
            lex = self.a.lexer.canonical(lex, self.a._max_token_len)  # type: ignore[attr-defined]
        key = node * self.n_lex + lex
        mask = self.masks.get(key)
        if mask is None:
            with self.lock:
                mask = self.masks.get(key)
                if mask is None:
                    mask = self.masks[key] = self.a._mask(self, node, lex)  # type: ignore[attr-defined]
        return mask

    def collect(self, group: _Group | _Split, node: int, out: np.ndarray) -> None:
        if isinstance(group, _Split):
            self.collect(group.rest, node, out)
            for shared, words in group.parts:
                np.bitwise_or(out, self.collected(shared, node) & words, out=out)
            return
        if group.always is not None:
            np.bitwise_or(out, group.always, out=out)
        if group.stays:
            acceptable = self.acceptable(node)
            for bits, words in group.stays:
                if bits & acceptable:
                    np.bitwise_or(out, words, out=out)
        a = self.a
        for t, idx, pos in group.emits:
            for nxt in self.after(node, t):
                q = self.stacks.state[nxt]
                child = group.children.get((t, q))
                if child is None:
                    child = group.children[(t, q)] = a._child(idx, pos, a.lexer.start[q])  # type: ignore[attr-defined]
                    a._group_bytes += child.nbytes()  # type: ignore[attr-defined]
                self.collect(child, nxt, out)

    def collected(self, group: _Group, node: int) -> np.ndarray:
        """``collect`` of a group the grammar keeps (an interior's classification that split states
        pick from) into a bitmask of its own, kept per (group, stack): every position of a
        property name reads the same two at the same stack. The key holds the group's identity:
        the grammar keeps its root and after-first-byte groups for its life, so no other group
        takes the number."""
        key = (id(group), node)
        words = self.collected_words.get(key)
        if words is None:
            words = np.zeros(self.a.words, dtype=np.uint32)  # type: ignore[attr-defined]
            self.collect(group, node, words)
            self.collected_words[key] = words
        return words


class ByteAutomaton:
    """Grammar tables plus the per-stack caches needed to run bytes through them (no tokenizer).

    ``CompiledGrammar`` extends it with token masks; on its own it checks whole texts. Safe to
    share between threads (see the module docstring).
    """

    def __init__(self, tables: GrammarTables, limits: Limits = DEFAULT_LIMITS) -> None:
        self.tables = tables
        self.limits = limits
        self.lock = tables.lock
        self.parse = tables.parse
        self.lexer = tables.lexer
        self._ignore = [t.ignore for t in self.lexer.terminals]
        self._completions: dict[int, Completions | None] = {}
        self._run = _Run(self)

    def completions(self, usable: int) -> Completions | None:
        """The grammar's shortest-completion tables for completions made of the bytes in
        ``usable`` (built once; None where the parse tables have no kernel items)."""
        found = self._completions.get(usable, False)
        if found is False:
            with self.lock:
                found = self._completions.get(usable, False)
                if found is False:
                    found = Completions.for_tables(self.parse, self.lexer.terminals, usable, self.limits.max_completion_states)
                    self._completions[usable] = found
        return found  # type: ignore[return-value]

    def _start(self) -> tuple[_Run, int, int]:
        if len(self._run.stacks) > self.limits.max_stack_nodes:
            self._run = _Run(self)
        return self._run, 0, self.lexer.start[self.parse.start_state]

    def matches(self, data: bytes) -> bool:
        """Is ``data`` a complete sentence of the language?"""
        run, node, lex = self._start()
        return any(run.is_accepting(*c) for c in run.step_all(((node, lex),), data))

    def is_prefix(self, data: bytes) -> bool:
        """Can ``data`` be continued into a sentence?"""
        run, node, lex = self._start()
        return any(run.viable(*c) for c in run.step_all(((node, lex),), data))

    def completion(self, data: bytes, *, max_states: int | None = None) -> bytes | None:
        """A shortest suffix that turns ``data`` into a sentence, or None if there is none.

        Breadth-first over (stack, lexer state); gives up (None) after ``max_states`` states
        (default ``limits.max_completion_states``). A witness can be checked by any parser of the
        grammar, which makes it a useful oracle.
        """
        budget = max_states or self.limits.max_completion_states
        run, node, lex = self._start()
        best = None
        for c in run.step_all(((node, lex),), data):
            tail = run.completion(c[0], c[1], budget)
            if tail is not None and (best is None or len(tail) < len(best)):
                best = tail
        return best

    def cache_bytes(self) -> int:
        """Estimated bytes of what this object caches beyond its tables (the current stack store)."""
        return self._run.memory_size_bytes()

    def memory_size_bytes(self) -> int:
        """Estimated bytes held: the tables (``GrammarTables.memory_size_bytes``) and ``cache_bytes``."""
        return self.tables.memory_size_bytes() + self.cache_bytes()


class CompiledGrammar(ByteAutomaton):
    """Grammar tables bound to a tokenizer: token masks and the checks ``GrammarMatcher`` needs.

    Build it through a constraint (``Grammar(...).compile(tokenizer)``), which caches it per
    (constraint, tokenizer). Masks are filled lazily and cached for the life of this object.
    """

    def __init__(self, tables: GrammarTables, info: TokenizerInfo, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(tables, limits)
        self.info = info
        self.vocab_size = info.vocab_size
        self.words = words_for(self.vocab_size)
        self._tok_bytes, self._tok_len = info.byte_table()
        # per-tokenizer tables, built here so that no mask pays for them
        self._unsafe_sorted = info.unsafe_tail()[info.trie().order]
        self._char_starts = info.char_starts()
        self._char_total = self._char_starts[:, -1].astype(np.int64)
        self._max_chars = int(self._char_total.max(initial=0))
        self._eos_words = self._pack(np.array(info.eos_token_ids, dtype=np.int64))
        self._groups: dict[int, _Group | _Split] = {}
        self._after_first: dict[int, _Group] = {}  # lexer state -> every token from its 2nd byte
        self._first_byte = info.first_bytes()  # 256: no bytes
        counts = np.bincount(self._first_byte, minlength=257)
        self._first_counts = counts[:256]  # tokens per first byte
        self._first_total = int(self._first_counts.sum())
        self._top_byte = int(self._first_counts.argmax())  # the first byte of the most tokens
        self._has_first = counts > 0  # [257]: some token begins so (256: tokens without bytes)
        self._group_bytes = 0  # ``_Group.nbytes`` of every group made, children included
        self._pool: dict[bytes, np.ndarray] = {}
        self._max_token_len = int(self._tok_len.max(initial=0))
        # bytes that are a token on their own: what a completion bound may count one token each
        self._single_bytes = sum(1 << b for b in set(self._tok_bytes[self._tok_len == 1, 0].tolist()))
        # tokens made only of JSON-string-safe characters, and the other tokens with bytes
        unsafe_tail, ids = info.unsafe_tail(), np.arange(self.vocab_size, dtype=np.int64)
        self._safe_ids = ids[(self._tok_len > 0) & (unsafe_tail < 0)]
        self._unsafe_ids = ids[(self._tok_len > 0) & (unsafe_tail >= 0)]
        for array in (self._unsafe_sorted, self._char_total, self._safe_ids, self._unsafe_ids):
            read_only(array)

    def matcher(self) -> GrammarMatcher:
        """A fresh matcher at the start of the language."""
        return GrammarMatcher(self, *self._start())

    def cache_bytes(self) -> int:
        """Estimated bytes this grammar holds beyond its tables: token classifications (exact array
        bytes plus ``ENTRY_BYTES`` per list entry), pooled masks (each stored twice: the array and
        its key), the current stack store and its caches,
        and the per-grammar token arrays. Not
        counted: the tokenizer's tables (``TokenizerInfo.memory_size_bytes``, shared) and stack
        stores that only older matchers still hold."""
        pooled = len(self._pool) * (2 * self.words * 4 + ENTRY_BYTES)
        arrays = sum(a.nbytes for a in (self._unsafe_sorted, self._char_total, self._eos_words, self._safe_ids, self._unsafe_ids))
        return self._group_bytes + pooled + arrays + super().cache_bytes()

    def _pack(self, ids: np.ndarray) -> np.ndarray:
        """The bitmask of ``ids`` (read-only: kept in token classifications, shared by threads)."""
        flags = np.zeros(self.words * 32, dtype=bool)
        flags[ids] = True
        return read_only(np.packbits(flags, bitorder="little").view(np.uint32))

    def _classify(self, idx: np.ndarray, pos: np.ndarray, start: int) -> _Group:
        """Run tokens ``idx`` from byte offsets ``pos`` through the lexer from lexer state ``start``."""
        group = _Group()
        done = pos >= self._tok_len[idx]
        if done.any():
            group.always = self._pack(idx[done])
            idx, pos = idx[~done], pos[~done]
        if len(idx) > _FEW_TOKENS and self.lexer.accept[start] < 0:
            rests = self.lexer.literal_rests(start)
            if rests is not None:  # only literals alive: the tokens along them (``_classify_literals``)
                flags = np.zeros(self.vocab_size, dtype=bool)
                flags[self._along(rests)] = True
                keep = flags[idx] | (pos > 0)
                idx, pos = idx[keep], pos[keep]
        self._fill_group(group, *self._walk(idx, pos, np.full(len(idx), start, dtype=np.int32)))
        return group

    def _walk(self, idx: np.ndarray, pos: np.ndarray, cur: np.ndarray):
        """Walk tokens byte by byte (vectorised) from their offsets and lexer states.

        Returns (stay tokens, their final lexer states, lexer states where a lexeme ended,
        those tokens, the offset where the next lexeme starts).
        """
        tb, tl = self._tok_bytes, self._tok_len
        lexer = self.lexer
        lexer.build_many(cur)
        flat, accept, eager = lexer.trans.ravel(), lexer.accept_np, lexer.eager_np
        tb_flat, width = tb.ravel(), tb.shape[1]
        stay_idx, stay_lex, em_t, em_idx, em_pos = [], [], [], [], []
        while len(idx):
            if len(idx) <= _FEW_TOKENS:  # numpy's cost per call would dominate: token by token
                self._walk_few(idx, pos, cur, (stay_idx, stay_lex, em_t, em_idx, em_pos))
                break
            nxt = flat.take(cur.astype(np.int64) * 256 + tb_flat.take(idx * width + pos))
            if lexer.build_many(nxt):  # a lazy lexer's states met for the first time
                flat, accept, eager = lexer.trans.ravel(), lexer.accept_np, lexer.eager_np
            dead = nxt < 0
            if dead.any():
                ended = cur[dead]
                ok = accept[ended] >= 0
                em_t.append(ended[ok])
                em_idx.append(idx[dead][ok])
                em_pos.append(pos[dead][ok])  # the byte that ended the lexeme starts the next one
                live = ~dead
                idx, pos, nxt = idx[live], pos[live], nxt[live]
            pos = pos + 1
            cur = nxt
            ends = eager[cur]
            if ends.any():
                em_t.append(cur[ends])
                em_idx.append(idx[ends])
                em_pos.append(pos[ends])
                keep = ~ends
                idx, pos, cur = idx[keep], pos[keep], cur[keep]
            fin = pos >= tl[idx]
            if fin.any():
                stay_idx.append(idx[fin])
                stay_lex.append(cur[fin])
                keep = ~fin
                idx, pos, cur = idx[keep], pos[keep], cur[keep]
        return tuple(_cat(parts) for parts in (stay_idx, stay_lex, em_t, em_idx, em_pos))

    def _walk_few(self, idx: np.ndarray, pos: np.ndarray, cur: np.ndarray, out: tuple[list, ...]) -> None:
        """``_walk`` of a few tokens, one by one in Python; appends to ``_walk``'s five lists."""
        lexer = self.lexer
        trans, accept, eager, built = lexer.trans_list, lexer.accept, lexer.eager, lexer.built
        tokens = self.info.token_bytes
        found: tuple[list[int], ...] = ([], [], [], [], [])
        stay_idx, stay_lex, em_t, em_idx, em_pos = found
        grew = False
        for i, p, c in zip(idx.tolist(), pos.tolist(), cur.tolist()):
            data = tokens[i]
            while True:
                x = trans[c][data[p]]
                if x < 0:
                    if accept[c] >= 0:  # the byte that ended the lexeme starts the next one
                        em_t.append(c)
                        em_idx.append(i)
                        em_pos.append(p)
                    break
                if not built[x]:  # a lazy lexer's state met for the first time
                    lexer.build(x)
                    grew = True
                p += 1
                c = x
                if eager[c]:
                    em_t.append(c)
                    em_idx.append(i)
                    em_pos.append(p)
                    break
                if p >= len(data):
                    stay_idx.append(i)
                    stay_lex.append(c)
                    break
        if grew:
            lexer.sync()
        for parts, got, dtype in zip(out, found, (np.int64, np.int32, np.int32, np.int64, np.int64)):
            if got:
                parts.append(np.array(got, dtype=dtype))

    def _fill_group(self, group: _Group, s_idx, s_lex, e_lex, e_idx, e_pos) -> None:
        """Group tokens that stay in a lexeme by what it can still end as, and the others by the
        terminal that ends their lexeme (``e_lex``: the lexer state where it ended; an ambiguous
        grammar's lexeme can end as several terminals, and the token then follows each)."""
        lexer = self.lexer
        lexer.sync()  # states a chain of shifts reached may be new
        stays = []
        if len(s_idx):
            gid = lexer.completable_id[s_lex]
            low, high = int(gid.min()), int(gid.max())
            if low == high:  # the common case: every staying token can end the same ways
                stays.append((lexer.completable_values[low], self._pack(s_idx)))
            else:
                for g in np.flatnonzero(np.bincount(gid - low)).tolist():
                    stays.append((lexer.completable_values[g + low], self._pack(s_idx[gid == g + low])))
        group.stays = tuple(stays)
        intern = self._shared_groups().intern
        group.emits = tuple((t, *intern(idx, pos)) for t, idx, pos in self._by_terminal(e_lex, e_idx, e_pos))

    def _by_terminal(self, e_lex, e_idx, e_pos) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Tokens whose lexeme ended (in lexer state ``e_lex``), grouped by the terminal it ends as:
        (terminal, tokens, offset where the next lexeme starts), by terminal."""
        if not len(e_lex):
            return []
        lexer = self.lexer
        one = int(e_lex[0])
        if len(e_lex) > _FEW_TOKENS and not (e_lex != one).any():  # one state ended them all (every token whose first byte ends it)
            return [(t, e_idx, e_pos) for t in sorted(lexer.accepts[one])]
        by_t: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        first = lexer.accept_np[e_lex]
        for t in np.flatnonzero(np.bincount(first)).tolist():
            sel = first == t
            by_t.setdefault(t, []).append((e_idx[sel], e_pos[sel]))
        multi = lexer.multi_np[e_lex]
        if multi.any():
            for lex, rows in _groups(e_lex[multi], np.flatnonzero(multi)):
                for t in lexer.accepts[lex][1:]:
                    by_t.setdefault(t, []).append((e_idx[rows], e_pos[rows]))
        out = []
        for t, parts in sorted(by_t.items()):
            idx, pos = parts[0] if len(parts) == 1 else (np.concatenate([i for i, _ in parts]), np.concatenate([p for _, p in parts]))
            out.append((t, idx, pos))
        return out

    def _classify_root(self, start: int, first: np.ndarray | None = None, second: np.ndarray | None = None, handed: list[np.ndarray] | None = None) -> _Group:
        """``_classify`` of the whole vocabulary from lexer state ``start``, walking the token trie.

        The trie has ~3x fewer nodes than the vocabulary has bytes, and a subtree that dies or
        ends its lexeme is settled at once (its tokens are one contiguous range), so this is the
        cheap way to visit a lexer state for the first time.

        ``first`` (int32[256]), where given, replaces ``start``'s row for a token's first byte:
        -1 ends the lexeme there as ``start``'s terminal would, ``_SKIP`` leaves the tokens that
        begin with that byte out (see ``_classify_state``).

        ``second`` (int32[256], with ``first``): a node of the second trie level whose byte ``b``
        leads to ``second[b]`` (a live state) is left out and appended to ``handed`` (arrays of
        level-1 node indices): its subtree classifies as from that state at the same depth, which
        the caller takes from another classification.
        """
        if first is None and self.lexer.shift()[start] == -2 and self.lexer.safe_closed(start):
            return self._classify_safe_closed(start)
        if first is None and self.lexer.shift()[start] != -2:  # (re-read: safe_closed may have built states)
            return self._classify_shifting(start)
        # (stay lo, hi, lexer state), (event lexer state, lo, hi, next offset), and subtrees
        # entering a state that absorbs safe characters: (rows, depth, state, characters before)
        found: tuple[list, ...] = ([], [], [], [], [], [], [], [])
        few = _FewNodes(self)
        if second is not None:
            few.second = second.tolist()
        self._walk_trie(start, first, second, handed, found, few)
        if few.handed:
            handed.append(np.array(few.handed, dtype=np.int64))  # type: ignore[union-attr]
        stay_lo, stay_hi, stay_lex, ev_t, ev_lo, ev_hi, ev_pos, absorbed = found
        if not (stay_lo or ev_t or absorbed):  # everything was found node by node
            group = few.assembled()
            if group is not None:
                return group
        few.flush(*found)
        return self._assembled((stay_lo, stay_hi, stay_lex), (ev_t, ev_lo, ev_hi, ev_pos), absorbed, self.lexer.shift())

    def _walk_trie(self, start: int, first: np.ndarray | None, second: np.ndarray | None, handed: list[np.ndarray] | None,
                   found: tuple[list, ...], few: _FewNodes) -> None:
        """``_classify_root``'s walk, level by level: vectorised levels record into ``found``,
        levels of a few nodes go to ``few``. The lexer's tables are re-read where a lazy lexer's
        states are met for the first time."""
        trie_levels = self.info.trie().levels
        flat, accept, eager, _, shifting = self._lexer_tables()
        idx = nxt = np.zeros(0, dtype=np.int64)  # the nodes still walking, and their states
        d = 0
        if first is not None:
            row0 = first[trie_levels[0]["byte"]]
            kept = np.flatnonzero((row0 >= 0) | (row0 == -1) & (accept[start] >= 0))  # a dead byte matters if ``start`` accepts
            if len(kept) <= _FEW_NODES:  # the split's few first bytes: node by node from the start
                back = few.walk_first(trie_levels, start, first, kept)
                d, idx, nxt = back if back is not None else (len(trie_levels), idx, nxt)
        while d < len(trie_levels):
            if few.grew:
                flat, accept, eager, _, shifting = self._lexer_tables()
                few.grew = False
            level = trie_levels[d]
            if d == 0:
                idx = np.arange(len(level["lo"]))
                parent_state = np.full(len(idx), start, dtype=np.int32)
            else:
                if len(idx) <= _FEW_NODES:  # numpy's cost per call would dominate: node by node
                    back = few.walk(trie_levels, d, idx, nxt)
                    if back is None:
                        break
                    if back[0] != d:  # the walk went on past level d
                        d, idx, nxt = back
                        continue
                    if few.grew:
                        flat, accept, eager, _, shifting = self._lexer_tables()
                        few.grew = False
                above = trie_levels[d - 1]
                kids_lo, kids_hi = above["kids_lo"][idx], above["kids_hi"][idx]
                parent_state = np.repeat(nxt, kids_hi - kids_lo)  # only live nodes are visited
                idx = expand_ranges(kids_lo, kids_hi)
                if not len(idx):
                    break
            if d == 0 and first is not None:
                nxt = first[level["byte"]]
                kept = nxt != _SKIP
                idx, nxt, parent_state = idx[kept], nxt[kept], parent_state[kept]
            else:
                nxt = flat.take(parent_state * 256 + level["byte"][idx])
                if d == 1 and second is not None:
                    hand = (nxt >= 0) & (nxt == second[level["byte"][idx]])
                    if hand.any():
                        handed.append(idx[hand])  # type: ignore[union-attr]
                        idx, nxt, parent_state = idx[~hand], nxt[~hand], parent_state[~hand]
            if len(idx) <= _FEW_NODES:  # few nodes left (the rest handed over): settled node by node
                idx, nxt = few.settle(level, d, idx, nxt, parent_state)
            else:
                if self.lexer.build_many(nxt):
                    flat, accept, eager, _, shifting = self._lexer_tables()
                idx, nxt = self._settle_level(found, level, d, idx, nxt, parent_state, (accept, eager, shifting))
            d += 1

    def _settle_level(self, found: tuple[list, ...], level: dict[str, np.ndarray], d: int, idx: np.ndarray, nxt: np.ndarray,
                      parent_state: np.ndarray, tables: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        """One vectorised trie level of ``_classify_root``: nodes ``idx`` of ``level`` (depth
        ``d``) reached lexer states ``nxt`` from ``parent_state``. Records in ``found`` the
        subtrees whose lexeme ended (a dead byte after an accepting state, or an eager state),
        the tokens that end at a node, and the subtrees a state absorbing safe characters, or
        looping on a set of ASCII bytes, takes; returns the nodes that walk on and their states."""
        accept, eager, shifting = tables
        stay_lo, stay_hi, stay_lex, ev_t, ev_lo, ev_hi, ev_pos, absorbed = found
        lo, hi = level["lo"], level["hi"]
        dead = nxt < 0
        if dead.any():
            ended = parent_state[dead]
            ok = accept[ended] >= 0
            where = idx[dead][ok]
            ev_t.append(ended[ok])
            ev_lo.append(lo[where])
            ev_hi.append(hi[where])
            ev_pos.append(np.full(len(where), d))  # this byte starts the next lexeme
            idx, nxt = idx[~dead], nxt[~dead]
        ends = eager[nxt]
        if ends.any():
            where = idx[ends]
            ev_t.append(nxt[ends])
            ev_lo.append(lo[where])
            ev_hi.append(hi[where])
            ev_pos.append(np.full(len(where), d + 1))
            idx, nxt = idx[~ends], nxt[~ends]
        here = level["ends"][idx] > 0
        if here.any():
            stay_lo.append(lo[idx[here]])
            stay_hi.append(lo[idx[here]] + level["ends"][idx[here]])
            stay_lex.append(nxt[here])
        def absorb(sel: np.ndarray, counted: bool) -> tuple[np.ndarray, np.ndarray]:
            """Record the subtrees of nodes ``sel`` as absorbed (but for tokens that end exactly
            at a node); the nodes left walk on."""
            where = idx[sel]
            starts = lo[where] + level["ends"][where]
            sizes = hi[where] - starts
            rows = expand_ranges(starts, hi[where])
            before = None  # a loop's subset test reads bytes, not character counts
            if counted:  # the subtree shares its first d + 1 bytes, so their character count is per node
                before = np.repeat(self._char_starts[self.info.trie().order[lo[where]], d + 1].astype(np.int64), sizes)
            absorbed.append((rows, np.full(len(rows), d + 1), np.repeat(nxt[sel], sizes), before))
            return idx[~sel], nxt[~sel]

        soak = shifting[nxt]
        if soak.any():
            idx, nxt = absorb(soak, True)
        big = hi[idx] - lo[idx] - level["ends"][idx] >= _LOOP_TOKENS if d < _LOOP_DEPTH else None
        if big is not None and big.any():  # a large subtree in a state that begins a run of ASCII bytes: tested, not walked
            loop = np.zeros(len(idx), dtype=bool)
            loop[big] = self.lexer.running(nxt[big])
            if loop.any():
                idx, nxt = absorb(loop, False)
        return idx, nxt

    def _lexer_tables(self) -> tuple[np.ndarray, ...]:
        """The lexer's tables as a walk reads them: flat transitions, accept, eager, shift, shifting."""
        lexer = self.lexer
        shift = lexer.shift()
        return lexer.trans.ravel(), lexer.accept_np, lexer.eager_np, shift, shift != -2

    def _classify_safe_closed(self, start: int) -> _Group:
        """``_classify_root`` from a ``safe_closed`` state: tokens of safe characters stay, ending
        the way ``start`` can (no walk); the rest walk."""
        whole, rest = self._safe_ids, self._unsafe_ids
        group = _Group()
        self._fill_group(group, *(np.concatenate(x) for x in zip(
            (whole, np.full(len(whole), start, np.int32), *(np.zeros(0, np.int64),) * 3),
            self._walk(rest, np.zeros(len(rest), np.int64), np.full(len(rest), start, np.int32)),
        )))  # fmt: skip
        return group

    def _classify_shifting(self, start: int, closed_form: bool = True) -> _Group:
        """``_classify_root`` from a state that shifts (every safe character leads to one state:
        a counted string's next count, say): a token of ``c`` safe characters ends in
        shift^c(``start``), so the safe tokens are settled ``c`` by ``c`` from the tokenizer's
        per-count masks, and only the others (and those of a count whose chain is not known) are
        walked. Inside a counted string at a character boundary the others are read from the
        tokenizer's string scan instead (``_counted_unsafe``; ``closed_form=False`` walks them)."""
        lexer = self.lexer
        counts = np.arange(self._max_chars + 1)
        final = lexer.chain_take(np.full(len(counts), start, dtype=np.int32), counts, self._max_chars).tolist()
        lexer.sync()  # the chain may have met new states
        per_count = self.info.safe_char_words()
        settled: dict[int, np.ndarray] = {}
        unknown = []
        counted = self._counted_position(start) if closed_form else None
        # past a counted string's room its tokens die (a tabulated one's last count reads -2:
        # its multi-byte characters die at their first byte, which ``shift`` does not tell apart)
        room = counted[2] if counted is not None and counted[2] is not None else len(per_count)
        for c, f in enumerate(final[: len(per_count)]):
            if f == -2:
                if c <= room:
                    unknown.append(c)
            elif f >= 0:  # (a count the lexeme cannot take: its tokens are dropped)
                bits = lexer.completable_values[int(lexer.completable_id[f])]
                settled[bits] = settled[bits] | per_count[c] if bits in settled else per_count[c].copy()
        if unknown:
            counted = None
        if counted is not None:
            group = self._counted_unsafe(start, *counted)
        else:
            walk = self._unsafe_ids
            if unknown:
                safe = self._safe_ids
                walk = np.concatenate([walk, safe[np.isin(self._char_total[safe], unknown)]])
            group = _Group()
            self._fill_group(group, *self._walk(walk, np.zeros(len(walk), np.int64), np.full(len(walk), start, np.int32)))
        stays = dict(group.stays)
        for bits, words in settled.items():
            stays[bits] = stays[bits] | words if bits in stays else words
        group.stays = tuple((bits, read_only(words)) for bits, words in stays.items() if words.any())
        return group

    def _counted_position(self, start: int) -> tuple[int, int, int | None] | None:
        """(terminal, characters still needed, characters still allowed: None for no bound) where
        ``start`` is inside one counted string (``CountedString``) at a character boundary."""
        lexer = self.lexer
        members = lexer.members(start)
        if len(members) != 1 or lexer.is_start[start]:
            return None
        ((t, s),) = members
        dfa = lexer.terminals[t].dfa
        length = dfa.__dict__.get("_length")
        if isinstance(dfa, CountedString):
            at, lo, hi = dfa.position(s), dfa.lo, dfa.hi
        elif length is not None:  # a tabulated one (``strings.string_dfa``): state 1 + k * m + c
            lo, hi, m = length
            at = divmod(s - 1, m) if 0 < s < dfa.n_states - 1 else None
        else:
            return None
        if at is None or at[1]:
            return None
        k = at[0]
        return t, max(lo - k, 0), None if hi is None else hi - k

    def _counted_unsafe(self, start: int, t: int, need: int, room: int | None) -> _Group:
        """The tokens with a quote, a backslash, a control or a multi-byte character, classified
        inside counted string ``t`` with ``need`` to ``room`` more characters allowed, from the
        tokenizer's string scan (``_scan_strings``): a token that closes the string after ``n``
        characters ends it iff ``need <= n <= room``; one that stays in it fits iff its
        characters (one more for a character it leaves unfinished) fit in ``room``; the scan's
        dead tokens die here too. Equal to walking them from ``start`` (tests/engine)."""
        status, chars, partial, pos = self.info._once("_string_scan", lambda: _scan_strings(self.info))
        ids = self._unsafe_ids
        st, n = status[ids], chars[ids]
        fits = np.ones(len(ids), dtype=bool) if room is None else n + partial[ids] <= room
        group = _Group()
        staying = ids[(st == _SCAN_STAYS) & fits]
        if len(staying):
            lexer = self.lexer
            group.stays = ((lexer.completable_values[int(lexer.completable_id[start])], self._pack(staying)),)
        closing = (st == _SCAN_CLOSES) & fits & (n >= need)
        if closing.any():
            group.emits = ((t, *self._shared_groups().intern(ids[closing], pos[ids[closing]])),)
        return group

    def _assembled(self, stays: tuple[list, ...], events: tuple[list, ...], absorbed: list[tuple], shift: np.ndarray) -> _Group:
        """The group of a trie walk's findings: token ranges that stay (lo, hi, lexer state),
        ranges whose lexeme ended (lexer state, lo, hi, next offset), and absorbed subtrees."""
        trie = self.info.trie()
        s_lo, s_hi, lexes = (_cat(x) for x in stays)
        e_t, e_lo, e_hi, e_pos = (_cat(x) for x in events)
        n_s, n_e = s_hi - s_lo, e_hi - e_lo
        parts = [
            (trie.order[expand_ranges(s_lo, s_hi)], np.repeat(lexes, n_s), np.repeat(e_t, n_e), trie.order[expand_ranges(e_lo, e_hi)], np.repeat(e_pos, n_e))
        ]
        for rows, depth, lex, before in absorbed:
            parts += self._absorbed(rows, depth, lex, before, shift) if before is not None else self._looped(rows, depth, lex)
        group = _Group()
        self._fill_group(group, *(np.concatenate([p[i] for p in parts]) for i in range(5)))
        return group

    def _absorbed(self, rows: np.ndarray, depth: np.ndarray, lex: np.ndarray, before: np.ndarray, shift: np.ndarray) -> list[tuple]:
        """``_walk``'s results for the tokens (trie rows) of subtrees that entered lexer states
        ``lex`` absorbing safe characters at ``depth`` bytes, ``before`` characters in: a token
        that is safe from there on ends in shift^(its remaining characters); the others (and those
        whose chain stops being uniform) are walked."""
        trie, empty = self.info.trie(), np.zeros(0, np.int64)
        tokens = trie.order[rows]
        settled = self._unsafe_sorted[rows] < depth
        if (shift[lex] == lex).all():  # string interiors: safe characters leave them where they are
            final, known, keep = lex, settled, settled
        else:
            final = self.lexer.chain_take(lex, self._char_total[tokens] - before, self._max_chars)
            known = settled & (final != -2)
            keep = known & (final >= 0)
        out = [(tokens[keep], final[keep], empty, empty, empty)]
        walk = ~known
        if walk.any():
            out.append(self._walk(tokens[walk], depth[walk].astype(np.int64), lex[walk]))
        return out

    def _looped(self, rows: np.ndarray, depth: np.ndarray, lex: np.ndarray) -> list[tuple]:
        """``_walk``'s results for the tokens (trie rows) of subtrees that entered lexer states
        ``lex`` at ``depth`` bytes, each beginning a run of ASCII bytes
        (``LexerAutomaton.run_chain``): a token whose bytes after its first are all in the sets
        of its state's run for its remaining length ends where the run leads (its own state,
        where the run is a loop); the others are walked. (The bytes after the first are a
        superset of those after ``depth``: the test is safe at any depth.)"""
        tokens = self.info.trie().order[rows]
        tail_lo, tail_hi, other = self.info.tail_sets()
        steps = self._tok_len[tokens] - depth
        if len(lex) and (lex == lex[0]).all():  # the common case: one state
            ends, run_lo, run_hi = (a.take(steps) for a in self.lexer.run_chain(int(lex[0]), int(steps.max())))
        else:
            ends = np.empty(len(lex), np.int32)
            run_lo, run_hi = np.empty(len(lex), np.uint64), np.empty(len(lex), np.uint64)
            for x in np.unique(lex).tolist():
                at = lex == x
                for out, chain in zip((ends, run_lo, run_hi), self.lexer.run_chain(x, int(steps[at].max()))):
                    out[at] = chain.take(steps[at])
        keep = ((tail_lo[rows] & ~run_lo) == 0) & ((tail_hi[rows] & ~run_hi) == 0) & ~other[rows] & (ends >= 0)
        empty = np.zeros(0, np.int64)
        out = [(tokens[keep], ends[keep], empty, empty, empty)]
        if not keep.all():
            walk = ~keep
            out.append(self._walk(tokens[walk], depth[walk].astype(np.int64), lex[walk]))
        return out

    def _classify_state(self, state: int) -> _Group | _Split:
        """``_classify_root(state)``, split at the first byte where many tokens go the same way.

        Inside a property name that is also a prefix of declared names, or a string whose
        automaton tracks something (a pattern, a name to avoid), each position is its own lexer
        state, but most first bytes lead where they would from one state ``U`` (the plain string
        interior, their most common successor): to ``U`` itself for most characters, and to the
        same escape and multi-byte-character states for the rest. A token whose first byte ``b``
        leads to the same state from ``state`` as from ``U`` is classified exactly as from ``U``,
        so those tokens are taken from ``U``'s own classification (built once per grammar, and
        shared across grammars like every root classification); those whose first byte leads to
        ``U`` but not from ``U`` take ``U``'s classification from the second byte
        (``_after_first_byte``). Each state walks only the tokens whose first byte leads
        elsewhere (the characters it tracks, the quote that ends it). The result is a ``_Split``:
        the walk, and the two pickings from ``U``'s classifications, read at collection time."""
        lexer = self.lexer
        if lexer.accept[state] < 0:
            rests = lexer.literal_rests(state)
            if rests is not None:
                return self._classify_literals(state, rests)
        row = lexer.trans[state]
        live = row >= 0
        if not live.any() or (lexer.shift()[state] == -2 and lexer.safe_closed(state)):
            return self._classify_root(state)  # nothing to share, or the fast path applies
        u = self._majority(row, live)
        if u is None or u == state or lexer.eager[u]:
            return self._classify_root(state)  # most tokens would be walked anyway
        lexer.build_many(np.array([u]))
        if lexer.shift()[u] != u:  # not a string interior: ``u``'s classification would serve this state alone
            return self._classify_root(state)
        row = lexer.trans[state]  # re-read: building ``u`` may have grown the table
        # bytes that go where they go from ``u``, where ``u``'s own classification is cheap (a
        # string interior: most tokens settle at once) and the same in every such state
        as_u = live & (row == lexer.trans[u])
        to_u = live & (row == u) & ~as_u
        skip = np.append(as_u | to_u, False)  # by first byte; 256: tokens without bytes
        # a token whose first byte is walked and whose second byte leads where it does from ``u``
        # classifies as from ``u`` after its first byte: those subtrees are handed over too
        handed: list[np.ndarray] = []
        u_row = lexer.trans[u].astype(np.int32)
        rest = self._classify_root(state, np.where(skip[:256], _SKIP, row).astype(np.int32), u_row, handed)
        as_words = self._first_byte_words(np.append(as_u, False), np.append(live, False)) if as_u.any() else None
        after = None
        if to_u.any() or handed:
            after = self._first_byte_words(np.append(to_u, False)) if to_u.any() else None
            if handed:
                nodes = _cat(handed)
                level = self.info.trie().levels[1]
                subtrees = self._pack(self.info.trie().order[expand_ranges(level["lo"][nodes], level["hi"][nodes])])
                after = subtrees if after is None else after | subtrees
        return _Split(rest, int(np.flatnonzero(row == u)[0]), as_words, after)

    def _majority(self, row: np.ndarray, live: np.ndarray) -> int | None:
        """The state that the first bytes of at least half the tokens lead to from a state of
        row ``row`` (``live``: its bytes that do not die), the lowest at a tie; None if none.
        The successor of the byte most tokens begin with is tried first: it is the answer in
        almost every state that has one, and proving it takes a comparison and a sum."""
        top = self._top_byte
        if live[top]:
            guess = row[top]
            if int(self._first_counts[row == guess].sum()) * 2 > self._first_total:
                return int(guess)  # past half: the only one
        targets, _, inverse = unique_inverse(row[live])
        weight = np.bincount(inverse, weights=self._first_counts[live])
        if weight.max() * 2 < self._first_total:
            return None
        return int(targets[int(weight.argmax())])

    def _classify_literals(self, state: int, rests: list[bytes]) -> _Group:
        """``_classify_root`` of a state where only literals are alive (``rests``: the bytes
        each still needs) and no lexeme has ended: a token lives past its first byte only if it
        is a prefix of one of them or begins with one (a token that leaves every literal before
        one is complete dies, and with it no lexeme ends), so only those few are walked, found
        by ``TokenTrie.rows_along`` instead of a walk of the trie's first level. The keys of a
        closed object, typed a few bytes at a time, are such states: a trie walk of each cost
        ~0.4 ms, mostly numpy's cost per call."""
        tokens = self._along(rests)
        if not len(tokens):
            return _Group()
        group = _Group()
        self._fill_group(group, *self._walk(tokens, np.zeros(len(tokens), np.int64), np.full(len(tokens), state, np.int32)))
        return group

    def _along(self, rests: list[bytes]) -> np.ndarray:
        """The tokens that are a proper prefix of one of ``rests`` or begin with one, ascending."""
        trie = self.info.trie()
        spans = trie.rows_along_all(rests)
        if not spans:
            return np.zeros(0, dtype=np.int64)
        lo, hi = np.array(spans, dtype=np.int64).T
        return np.unique(trie.order[expand_ranges(lo, hi)])

    def _split_parts(self, state: int, split: _Split) -> None:
        """Fill a split's ``parts`` with this grammar's classifications of its interior."""
        lexer = self.lexer
        lexer.build(state)
        u = lexer.trans_list[state][split.byte]
        lexer.build_many(np.array([u]))
        parts = []
        if split.as_u is not None:
            parts.append((self._root_group(u, split=False), split.as_u))
        if split.after is not None:
            parts.append((self._after_first_byte(u), split.after))
        split.parts = tuple(parts)

    def _after_first_byte(self, state: int) -> _Group:
        """Every token classified from its second byte on, lexer state ``state`` after its first."""
        group = self._after_first.get(state)
        if group is None:
            build = lambda: self._classify_root(state, np.full(256, state, dtype=np.int32))  # noqa: E731
            group = self._after_first[state] = self._shared(state, "after first byte", build)
            self._group_bytes += group.nbytes()
        return group

    def _child(self, idx: np.ndarray, pos: np.ndarray, start: int) -> _Group | _Split:
        """``_classify(idx, pos, start)``, shared like the root classifications: the same tokens
        end a lexeme the same way after a property name in every schema. The arrays are named by
        identity, and every classification's arrays are interned by content
        (``_SharedGroups.intern``), so equal arrays are one object and the same name; the entry
        keeps them alive, so an identity in a key is never another array's.

        Many tokens that all start their next lexeme at their first byte (every token but the
        digits, after a number) classify as from ``start`` itself: they are picked from its root
        classification (a ``_Split`` with no walk of its own) instead of walked again."""
        if len(idx) > _PICKED_CHILD and not pos.any():
            words = self._pack(idx)
            pick = _Split(_Group(), -1, words, None)
            pick.parts = ((self._root_group(start), words),)
            return pick
        return self._shared(start, ("tokens", id(idx), id(pos)), lambda: self._classify(idx, pos, start), (idx, pos))

    def _shared(self, state: int, kind: object, build: Callable[[], Any], keep: tuple = ()) -> Any:
        """``build()``, or the same classification made by another grammar for this tokenizer
        from a lexer state with the same automata (``_SharedGroups``)."""
        lexer = self.lexer
        key, terms, named = lexer.automata_key(state, self._max_token_len + _FOLD_MARGIN)
        key = (kind, key)
        n = len(terms)
        shared = self._shared_groups()
        found = shared.get(key)
        if found is not None:
            group = _renumbered(found, {i: t for i, t in enumerate(terms)} | {n: lexer.ignore_bit, n + 1: lexer.end_bit}, dict(enumerate(terms)))
            if group is not None:
                return group
        group = build()
        local = _renumbered(group, {t: i for i, t in enumerate(terms)} | {lexer.ignore_bit: n, lexer.end_bit: n + 1}, {t: i for i, t in enumerate(terms)})
        if local is not None:
            shared.put(key, local, named + keep)
        return group

    def _shared_groups(self) -> _SharedGroups:
        return self.info._once("_classes", lambda: _SharedGroups(self.limits.max_shared_classification_bytes))

    def _first_byte_words(self, pick: np.ndarray, within: np.ndarray | None = None) -> np.ndarray:
        """The bitmask of the tokens whose first byte ``b`` has ``pick[b]`` (bool[257]): an OR of
        the per-byte masks on the side of ``pick`` with fewer bytes that begin tokens, or, where
        ``within`` (a superset of ``pick``: a state's live bytes) has fewer bytes beyond
        ``pick``, ``within``'s bitmask without theirs. Kept per pick for every grammar of the
        tokenizer (up to ``_PICKS``): the states inside property names have the same live bytes
        and pick them all but a few, in every schema."""
        key = pick.tobytes()
        picks = self._shared_groups().picks
        words = picks.get(key)
        if words is not None:
            return words
        table, has = self.info.first_byte_words(), self._has_first  # table[257]: every token
        inside, outside = np.flatnonzero(pick & has), np.flatnonzero(~pick & has)
        extra = np.flatnonzero(within & ~pick & has) if within is not None else None
        if extra is not None and len(extra) < min(len(inside), len(outside)):
            words = self._first_byte_words(within) ^ np.bitwise_or.reduce(table[extra], axis=0)
        elif len(inside) <= len(outside):
            words = np.bitwise_or.reduce(table[inside], axis=0)
        else:
            words = np.bitwise_or.reduce(table[outside], axis=0) ^ table[257]
        if len(picks) >= _PICKS:
            picks.clear()  # a fresh start costs each pick one more OR (a dict: safe across threads)
        picks[key] = read_only(words)
        return words

    def _root_group(self, key: int, split: bool = True) -> _Group | _Split:
        """The classification of every token from table state ``key`` (kept per grammar, and
        shared across grammars through ``_shared``); ``split=False`` builds it by walking every
        token (``_classify_state`` itself asks for a state's group that way: no recursion)."""
        group = self._groups.get(key)
        if group is None:
            build = (lambda: self._classify_state(key)) if split else (lambda: self._classify_root(key))
            group = self._shared(key, "root", build)
            if isinstance(group, _Split):
                self._split_parts(key, group)
            self._groups[key] = group  # published last: lock-free readers see it whole
            self._group_bytes += group.nbytes()
        return group

    def _mask(self, run: _Run, node: int, lex: int) -> np.ndarray:
        lexer = self.lexer
        key = lex
        if lexer.lazy:  # deep in a counted lexeme, one state stands for many
            key = lexer.canonical(lex, self._max_token_len)
            lexer.build_many(np.array([key]))
        group = self._root_group(key)
        out = np.zeros(self.words, dtype=np.uint32)
        run.collect(group, node, out)
        if run.is_accepting(node, lex):
            np.bitwise_or(out, self._eos_words, out=out)
        key = out.tobytes()
        mask = self._pool.get(key)
        if mask is None:
            if len(self._pool) > self.limits.max_pooled_masks:
                self._pool.clear()
            mask = self._pool[key] = read_only(out)
        return mask

    def _token_lengths(self, text: bytes) -> list[int] | None:
        """The byte lengths of the tokens of a tokenization of ``text`` (None where the tokenizer
        does not give back exactly these bytes)."""
        try:
            ids = self.info.encode(text.decode("utf-8"))
        except (UnicodeDecodeError, TokenizerError):
            return None
        pieces = [self.info.token_bytes[i] if 0 <= i < self.vocab_size else b"" for i in ids]
        if not all(pieces) or b"".join(pieces) != text:
            return None
        return [len(p) for p in pieces]

    def _budget_table(self, run: _Run, configs: tuple[tuple[int, int], ...]) -> _BudgetTable:
        """The allowed tokens of ``configs`` grouped by the completion bound after them (cached
        for a single configuration)."""
        if any(x >= VIRTUAL for _, x in configs):  # folded counters: their table states for this look-ahead
            configs = tuple((n, self.lexer.canonical(x, self._max_token_len) if x >= VIRTUAL else x) for n, x in configs)
        key = configs[0][0] * run.n_lex + configs[0][1] if len(configs) == 1 else None
        table = run.budget_tables.get(key) if key is not None else None
        if table is None:
            with run.lock:
                bounds = self._successor_bounds(run, configs)
                allowed = np.flatnonzero(bounds >= 0)
                finite = allowed[bounds[allowed] < UNBOUNDED]
                flags = np.zeros(self.words * 32, dtype=bool)
                values, masks = [], []
                for value, ids in _groups(bounds[finite], finite):
                    flags[ids] = True
                    values.append(value)
                    masks.append(read_only(np.packbits(flags, bitorder="little").view(np.uint32)))
                table = _BudgetTable(values, masks, len(finite) == len(allowed))
                if key is not None:
                    if len(run.budget_tables) >= _BUDGET_TABLES:
                        run.budget_tables = {}
                    run.budget_tables[key] = table
        return table

    def _successor_bounds(self, run: _Run, configs: tuple[tuple[int, int], ...]) -> np.ndarray:
        """Per token id: the completion bound (``_Run.distance``) after it, ``UNBOUNDED`` where
        none is known, -1 where the token is not allowed (EOS included: it needs no bound).

        The allowed tokens are walked through the lexer together (``_walk``), lexeme by lexeme
        along the real stack, so each distinct configuration after a token is looked up once.
        """
        out = np.full(self.vocab_size, -1, dtype=np.int64)
        lexer, usable, state = self.lexer, self._single_bytes, run.stacks.state

        def settle(node: int, lex: int, ids: np.ndarray) -> None:
            if len(ids) and run.viable(node, lex):
                bound = run.distance(node, lex, usable)
                seen = out[ids]
                out[ids] = np.where(seen < 0, bound, np.minimum(seen, bound))

        for node, lex in configs:
            ids = np.flatnonzero(unpack(run.mask(node, lex), self.vocab_size))
            ids = ids[self._tok_len[ids] > 0]
            work = [(node, lex, ids, np.zeros(len(ids), dtype=np.int64))]
            while work:
                n, x, idx, pos = work.pop()
                s_idx, s_lex, e_lex, e_idx, e_pos = self._walk(idx, pos, np.full(len(idx), x, dtype=np.int32))
                lexer.sync()
                for stay, toks in _groups(s_lex, s_idx):
                    settle(n, stay, toks)
                for t, t_idx, t_pos in self._by_terminal(e_lex, e_idx, e_pos):
                    for after in run.after(n, t):
                        start = lexer.start[state[after]]
                        done = t_pos >= self._tok_len[t_idx]
                        settle(after, start, t_idx[done])
                        if not done.all():
                            work.append((after, start, t_idx[~done], t_pos[~done]))
        return out

    def _extendable(self, tail: bytes) -> bool:
        """Does some token start with ``tail`` and go on? (Then a token could cross the boundary.)"""
        toks = self.info.sorted_token_bytes()
        i = bisect.bisect_right(toks, tail)
        return i < len(toks) and toks[i].startswith(tail)


class GrammarMatcher:
    """The state of one sequence under a grammar: which tokens may come next (the ``Matcher``
    protocol of ``engine/matcher.py``; DESIGN.md).

    Cheap to fork (the state is a few references and a persistent history). ``accepts`` is much
    cheaper than ``fill_mask`` on a cold state: it runs only the token's own bytes. Matchers of one
    grammar may run in different threads (the grammar's shared caches are thread-safe, see the
    module docstring); one matcher is used by one thread at a time.

    >>> import ctrldec                                                     # doctest: +SKIP
    >>> m = ctrldec.Regex(r"[0-9]{3}").compile(info).matcher()             # doctest: +SKIP
    >>> m.accepts(info.encode("12")[0]), m.is_accepting()                  # doctest: +SKIP
    (True, False)
    """

    __slots__ = ("grammar", "_run", "_configs", "_trail", "_length", "_ended")

    def __init__(self, grammar: CompiledGrammar, run: _Run, node: int, lex: int) -> None:
        self.grammar = grammar
        self._run = run
        self._configs: tuple[tuple[int, int], ...] = ((node, lex),)
        self._trail: tuple | None = None  # (previous trail, configs, ended, token)
        self._length = 0
        self._ended = False

    def __repr__(self) -> str:
        return f"GrammarMatcher(tokens={self._length}, accepting={self.is_accepting()}, ended={self._ended})"

    @property
    def ended(self) -> bool:
        """True once EOS was advanced."""
        return self._ended

    @property
    def num_tokens(self) -> int:
        """How many tokens were advanced (EOS included)."""
        return self._length

    def fork(self) -> GrammarMatcher:
        """An independent copy (O(1): the history is persistent)."""
        other = GrammarMatcher.__new__(GrammarMatcher)
        other.grammar, other._run, other._configs = self.grammar, self._run, self._configs
        other._trail, other._length, other._ended = self._trail, self._length, self._ended
        return other

    def accepts(self, token_id: int) -> bool:
        """Would ``token_id`` keep the output viable? No state change.

        False when the output has ended, for an id outside the vocabulary, for a token with no
        bytes (special tokens) other than EOS, for EOS where the output may not end yet, and for
        a token after whose bytes no completion exists.
        """
        g = self.grammar
        if self._ended:
            return False
        if token_id in g.info.eos_token_ids:
            return self.is_accepting()
        if not 0 <= token_id < g.vocab_size:
            return False
        run = self._run
        if len(self._configs) == 1:
            node, lex = self._configs[0]
            mask = run.masks.get(node * run.n_lex + lex) if lex < VIRTUAL else None
            if mask is not None:
                return bool((int(mask[token_id >> 5]) >> (token_id & 31)) & 1)
            if not run.glr:  # ``_after`` inlined: this is the hot path of mask-free sampling
                data = g.info.token_bytes[token_id]
                r = run.step(node, lex, data) if data else None
                return r is not None and run.viable(*r)
        return bool(self._after(self._configs, token_id))

    def _after(self, configs: tuple[tuple[int, int], ...], token_id: int) -> tuple[tuple[int, int], ...]:
        """The viable configurations after a (non-EOS, in-vocabulary) token; empty if it is not
        allowed."""
        run = self._run
        data = self.grammar.info.token_bytes[token_id]
        if not data:
            return ()
        if len(configs) == 1 and not run.glr:
            r = run.step(*configs[0], data)
            return (r,) if r is not None and run.viable(*r) else ()
        return tuple(c for c in run.step_all(configs, data) if run.viable(*c))

    def advance(self, token_id: int) -> None:
        """Consume one token; raises ``InvalidTokenError`` if the constraint does not allow it."""
        g = self.grammar
        eos = token_id in g.info.eos_token_ids
        configs: tuple[tuple[int, int], ...] = ()  # one walk: the token's check is its step
        if eos:
            configs = self._configs if self.is_accepting() else ()
        elif not self._ended and 0 <= token_id < g.vocab_size:
            configs = self._after(self._configs, token_id)
        if not configs:
            raise InvalidTokenError(
                f"token {token_id} {g.info.token_bytes[token_id] if 0 <= token_id < g.vocab_size else b''!r} "
                f"is not allowed after {self._length} tokens ({self._describe()})"
            )
        self._trail = (self._trail, self._configs, self._ended, token_id)
        self._length += 1
        self._configs = configs
        self._ended = eos

    def validate_tokens(self, token_ids: Sequence[int]) -> int:
        """How many of ``token_ids``, in order, are allowed from here (a draft's valid prefix):
        one walk over their bytes, no state change. EOS counts when the output may end there,
        and ends the count (nothing may follow it)."""
        g = self.grammar
        if self._ended:
            return 0
        eos, run = g.info.eos_token_ids, self._run
        configs = self._configs
        for i, t in enumerate(token_ids):
            if t in eos:
                return i + 1 if any(run.is_accepting(*c) for c in configs) else i
            if not 0 <= t < g.vocab_size:
                return i
            configs = self._after(configs, t)
            if not configs:
                return i
        return len(token_ids)

    def advance_bytes(self, data: bytes) -> bool:
        """Consume raw bytes that are not a token (e.g. a prompt's forced prefix); False if invalid.

        Not recorded in the history: ``rollback`` cannot undo it.
        """
        configs = tuple(c for c in self._run.step_all(self._configs, data) if self._run.viable(*c))
        if not configs:
            return False
        self._configs = configs
        return True

    def viable_prefix(self, data: bytes, *, skip: frozenset[int] | bytes = b"") -> bytes:
        """The longest prefix of ``data`` the output may continue with, where bytes in ``skip``
        that the grammar rejects are dropped rather than ending it (e.g. whitespace a compact
        grammar does not allow). No state change. For drafting text to check, not for output."""
        run = self._run
        configs = self._configs
        out = bytearray()
        if self._ended:
            return b""
        for b in data:
            nxt = tuple(c for c in run.step_all(configs, (b,)) if run.viable(*c))
            if nxt:
                configs = nxt
                out.append(b)
            elif b not in skip:
                break
        return bytes(out)

    def rollback(self, n: int = 1) -> None:
        """Undo the last ``n`` advanced tokens."""
        if not 0 <= n <= self._length:
            raise ValueError(f"cannot roll back {n} tokens: only {self._length} were advanced")
        for _ in range(n):
            self._trail, self._configs, self._ended, _ = self._trail  # type: ignore[misc]
        self._length -= n

    def tokens(self, last: int | None = None) -> list[int]:
        """The advanced token ids (the last ``last`` of them)."""
        out = []
        trail = self._trail
        while trail is not None and (last is None or len(out) < last):
            out.append(trail[3])
            trail = trail[0]
        return out[::-1]

    def is_accepting(self) -> bool:
        """May the output end here (is EOS allowed)?"""
        return not self._ended and any(self._run.is_accepting(*c) for c in self._configs)

    def is_done(self) -> bool:
        """Must the output end here: EOS advanced, or EOS is the only allowed continuation."""
        if self._ended:
            return True
        run = self._run
        return self.is_accepting() and not any(run.next_bytes(*c) for c in self._configs)

    def mask(self) -> np.ndarray:
        """The allowed-token bitmask (``engine.bitmask`` layout: ``uint32[ceil(vocab/32)]``, bit
        ``i % 32`` of word ``i // 32``). Read-only and shared between matchers; EOS bits are set
        when the output may end."""
        g = self.grammar
        if self._ended:
            return np.zeros(g.words, dtype=np.uint32)
        run = self._run
        if len(self._configs) == 1:
            return run.mask(*self._configs[0])
        out = np.zeros(g.words, dtype=np.uint32)
        for c in self._configs:
            np.bitwise_or(out, run.mask(*c), out=out)
        return read_only(out)

    def fill_mask(self, out: Any) -> bool:
        """Write the allowed-token bitmask into ``out`` (numpy or torch, 32-bit words, any length).

        Words past the tokenizer's vocabulary (a model whose logits are wider) are zeroed; a
        shorter ``out`` is trimmed. Returns False when no token at all is allowed (a dead end).
        """
        return write_words(self.mask(), out)

    def allowed_token_ids(self) -> np.ndarray:
        """The allowed token ids, ascending."""
        return np.flatnonzero(unpack(self.mask(), self.grammar.vocab_size))

    def forced_bytes(self) -> bytes:
        """The bytes the grammar fixes from here (stops where there is a choice, or the text may end)."""
        run = self._run
        if self._ended:
            return b""
        configs = self._configs
        out = bytearray()
        limit = self.grammar.limits.max_forced_bytes
        while len(out) < limit and configs and not any(run.is_accepting(*c) for c in configs):
            bits = 0
            for c in configs:
                bits |= run.next_bytes(*c)
            if bits == 0 or bits & (bits - 1):
                break
            b = bits.bit_length() - 1
            out.append(b)
            configs = tuple(c for c in run.step_all(configs, (b,)) if run.viable(*c))
        return bytes(out)

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar fixes from here, in the tokenizer's canonical tokenization.

        The forced bytes are re-tokenized together with the last committed tokens, and only the
        tokens after those, up to a boundary no token can cross, are returned (ALGORITHMS.md,
        fast-forward): feeding them is what the model would have seen without the constraint.
        """
        forced = self.forced_bytes()
        if not forced:
            return []
        g = self.grammar
        info = g.info
        out = info.encode_after(self.tokens(3), forced)
        if not out:
            return []  # nothing whole to feed, or the new text re-merges the committed tokens
        body = info.decode_bytes(out)
        complete = len(body) == len(forced) and self._is_done_after(forced)
        if out and not complete and self._boundary_unsafe(body, out):
            out.pop()
        # Keep only a prefix whose bytes are a prefix of the forced bytes (tokenizers may normalise).
        total = b""
        for i, t in enumerate(out):
            total += info.token_bytes[t]
            if not forced.startswith(total):
                return out[:i]
        return out

    def _is_done_after(self, data: bytes) -> bool:
        other = self.fork()
        return other.advance_bytes(data) and other.is_done()

    def _boundary_unsafe(self, body: bytes, ids: list[int]) -> bool:
        """Could a token cross the end of ``body`` once more text follows?"""
        g = self.grammar
        last = g.info.token_bytes[ids[-1]]
        start = len(body) - len(last)
        return any(g._extendable(body[j:]) for j in range(max(0, start), len(body)))

    def completion_bound(self) -> int:
        """An upper bound on the tokens a completion needs, EOS not counted (``_Run.distance``: a
        shortest completion's bytes, each a token of its own, or its tokenization where that is
        shorter); 0 when the output may end, ``UNBOUNDED`` when no completion is known. From any
        state with a finite bound some token lowers it by at least one."""
        if self._ended:
            return 0
        usable = self.grammar._single_bytes
        return min(self._run.distance(n, x, usable) for n, x in self._configs)

    def shortest_completion(self) -> bytes | None:
        """A completion of ``completion_bound()`` bytes where one was built from the grammar
        (None otherwise). No state change."""
        usable, run = self.grammar._single_bytes, self._run
        with run.lock:  # builds lexer states and caches lengths, as ``distance`` does
            for c in self._configs:
                c = (c[0], run.a.lexer.rep(c[1]))  # a folded counter's completions are its base's
                text = run.witness(c, usable)
                if text is not None and run._replay(c, text) is not None:
                    return text
        return None

    def completion_bound_after(self, token_id: int) -> int:
        """``completion_bound`` after ``token_id`` (``UNBOUNDED`` if it is not allowed). No state change."""
        g = self.grammar
        if self._ended or not 0 <= token_id < g.vocab_size:
            return UNBOUNDED
        if token_id in g.info.eos_token_ids:
            return 0 if self.is_accepting() else UNBOUNDED
        usable = g._single_bytes
        return min((self._run.distance(n, x, usable) for n, x in self._after(self._configs, token_id)), default=UNBOUNDED)

    def budget_mask(self, limit: int) -> np.ndarray:
        """The allowed tokens after which a completion of at most ``limit`` tokens is known
        (``completion_bound_after(t) <= limit``), and EOS where the output may end. Read-only."""
        g = self.grammar
        if self._ended:
            return np.zeros(g.words, dtype=np.uint32)
        table = g._budget_table(self._run, self._configs)
        if table.complete and table.bounds and limit >= table.bounds[-1]:
            return self.mask()
        i = bisect.bisect_right(table.bounds, limit)
        out = table.masks[i - 1].copy() if i else np.zeros(g.words, dtype=np.uint32)
        if self.is_accepting():
            np.bitwise_or(out, g._eos_words, out=out)
        return read_only(out)

    def _describe(self) -> str:
        g = self.grammar
        if self._ended:
            return "the output has ended"
        if not self._configs:
            return "no reading of the output is left"
        node, lex = self._configs[0]
        acceptable = self._run.acceptable(node)
        expected = [name for t, name in enumerate(g.parse.terminal_names) if acceptable >> t & 1]
        return f"expecting {', '.join(expected) or 'the end'}; inside a lexeme of {g.lexer.describe(lex)}"

    def check_not_dead(self) -> None:
        """Raise ``DeadEndError`` if no token (EOS included) is allowed."""
        if not self._ended and not self.mask().any():
            raise DeadEndError(f"no token is allowed and the output may not end here ({self._describe()})")
