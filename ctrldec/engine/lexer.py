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

from dataclasses import dataclass

import numpy as np

from .bytedfa import ByteDFA, check_budget

__all__ = ["Terminal", "LexerAutomaton"]


@dataclass(frozen=True)
class Terminal:
    name: str
    dfa: ByteDFA
    priority: int
    is_literal: bool
    ignore: bool
    order: tuple  # Lark's lexer order, used to break ties


class LexerAutomaton:
    """Lexer states over the terminals of one grammar.

    Tables (index = lexer state): ``trans`` (int32[n, 256], -1 dead, also as nested lists for
    scalar stepping), ``accepts`` (the terminals the lexeme is if it ends here: one, or for an
    ambiguous grammar every match; ``accept`` is the first or -1), ``eager`` (accepting and no byte extends it), ``completable`` (bitset of the terminals
    the lexeme can still end as; bit ``ignore_bit`` stands for any ``%ignore`` terminal, and
    ``end_bit``, set on lexeme start states, for the text ending there), and
    ``start[q]`` (the state that starts a lexeme in parser state q; ``is_start`` marks such states).
    """

    def __init__(self, terminals: list[Terminal], contexts: list[list[int]], *, ambiguous: bool = False) -> None:
        self.terminals = terminals
        self.ambiguous = ambiguous
        self.ignore_bit = len(terminals)
        self.end_bit = len(terminals) + 1
        ignored = [i for i, t in enumerate(terminals) if t.ignore]
        self._index: dict[tuple, int] = {}
        self._members: list[tuple] = []
        rows: list[np.ndarray] = []
        self.start = [
            self._intern(tuple((t, 0) for t in sorted(set(ctx) | set(ignored)) if not terminals[t].dfa.empty), start=True)
            for ctx in contexts
        ]
        done = 0
        while done < len(self._members):
            if done % 64 == 0:
                check_budget(len(self._members))
            rows.append(self._successors(self._members[done]))
            done += 1
        self.trans = np.stack(rows) if rows else np.zeros((0, 256), dtype=np.int32)
        self.trans_list: list[list[int]] = self.trans.tolist()
        self.is_start = [key[0] for key in self._index]
        self.accepts = [() if first else self._choose(m) for first, m in zip(self.is_start, self._members)]
        self.accept = [a[0] if a else -1 for a in self.accepts]
        self.eager = [a >= 0 and not any(x >= 0 for x in row) for a, row in zip(self.accept, self.trans_list)]
        self.accept_np = np.array(self.accept, dtype=np.int32)
        self.multi_np = np.array([len(a) > 1 for a in self.accepts], dtype=bool)
        self.eager_np = np.array(self.eager, dtype=bool)
        self.completable = self._completable()
        values = sorted(set(self.completable))
        ids = {v: i for i, v in enumerate(values)}
        self.completable_values = values  # distinct completable bitsets
        self.completable_id = np.array([ids[v] for v in self.completable], dtype=np.int32)
        self._shift: np.ndarray | None = None
        self._chain: np.ndarray | None = None
        self.shift()  # part of compiling: no mask should pay for it

    @property
    def n_states(self) -> int:
        return len(self._members)

    def _intern(self, members: tuple, start: bool = False) -> int:
        # A lexeme's start state is kept apart from a state with the same alive set reached after
        # some bytes (a DFA can loop back to its start): only the former may end with no lexeme.
        key = (start, members)
        state = self._index.get(key)
        if state is None:
            state = self._index[key] = len(self._members)
            self._members.append(members)
        return state

    def _successors(self, members: tuple) -> np.ndarray:
        row = np.full(256, -1, dtype=np.int32)
        if not members:
            return row
        if len(members) == 1:  # one terminal alive: no combinations to sort out
            t, s = members[0]
            nxt1 = self.terminals[t].dfa.trans[s]
            for s2 in sorted(set(nxt1.tolist()) - {-1}):
                row[nxt1 == s2] = self._intern(((t, s2),))
            return row
        nxt = np.stack([self.terminals[t].dfa.trans[s] for t, s in members])  # [k, 256]
        live = np.flatnonzero((nxt >= 0).any(axis=0))  # few bytes extend several terminals
        by_combo: dict[tuple, list[int]] = {}
        for b, combo in zip(live.tolist(), nxt[:, live].T.tolist()):
            by_combo.setdefault(tuple(combo), []).append(b)
        for combo in sorted(by_combo):
            alive = tuple((t, s2) for (t, _), s2 in zip(members, combo) if s2 >= 0)
            row[by_combo[combo]] = self._intern(alive)
        return row

    def _choose(self, members: tuple) -> tuple[int, ...]:
        """The terminals a lexeme ending here is: the one Lark's rules pick, or (ambiguous) all."""
        done = sorted((t for t, s in members if self.terminals[t].dfa.accepting[s]), key=lambda t: self.terminals[t].order)
        return tuple(done) if self.ambiguous else tuple(done[:1])

    def _completable(self) -> list[int]:
        bits = []
        for first, accepts in zip(self.is_start, self.accepts):
            b = (1 << self.end_bit) if first else 0
            for t in accepts:
                b |= 1 << (self.ignore_bit if self.terminals[t].ignore else t)
            bits.append(b)
        succ = [sorted({x for x in row if x >= 0}) for row in self.trans_list]
        changed = True
        while changed:
            changed = False
            for s in range(len(bits) - 1, -1, -1):
                b = bits[s]
                for x in succ[s]:
                    b |= bits[x]
                if b != bits[s]:
                    bits[s] = b
                    changed = True
        return bits

    def shift(self) -> np.ndarray:
        """int[state]: the one state every JSON-string-safe character (any UTF-8 character but
        controls, quote and backslash) leads to, -1 if every such character is rejected, -2 if
        they do not all agree. A string interior shifts to itself, a character counter to the
        next count: a token of n safe characters from state s ends in shift^n(s), which lets
        masks settle such tokens without walking their bytes."""
        if self._shift is None:
            from .bytedfa import utf8_sequences

            n = self.n_states
            safe = np.array([b for b in range(0x20, 0x80) if b not in (0x22, 0x5C)])
            rows = self.trans[:, safe]
            out = np.where((rows == rows[:, :1]).all(axis=1), rows[:, 0], -2).astype(np.int32)
            for seq in utf8_sequences([(0x80, 0x10FFFF)]):
                cur = np.arange(n)
                ok = np.ones(n, dtype=bool)
                for lo, hi in seq:
                    nxt = self.trans[np.maximum(cur, 0), lo : hi + 1]
                    ok &= (cur >= 0) & (nxt == nxt[:, :1]).all(axis=1)
                    cur = np.where(cur >= 0, nxt[:, 0], -1)
                out = np.where(ok & (cur == out), out, np.where(ok & (cur == -1) & (out == -1), -1, -2))
            self._shift = out
        return self._shift

    def shift_chain(self, length: int) -> np.ndarray:
        """int[state, k]: shift applied k times (k <= length); -1 dead, -2 not uniform."""
        if self._chain is None or self._chain.shape[1] <= length:
            shift = self.shift()
            chain = np.empty((self.n_states, length + 1), dtype=np.int32)
            chain[:, 0] = np.arange(self.n_states)
            for k in range(length):
                prev = chain[:, k]
                chain[:, k + 1] = np.where(prev >= 0, shift[np.maximum(prev, 0)], prev)
            self._chain = chain
        return self._chain

    def describe(self, state: int) -> str:
        """The terminals alive in a lexer state, for error messages."""
        names = sorted({self.terminals[t].name for t, _ in self._members[state]})
        return ", ".join(names) or "nothing"
