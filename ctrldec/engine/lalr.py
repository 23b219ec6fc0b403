"""LALR(1) parsing over Lark's tables, incrementally, on interned stacks.

A parser stack is a node id in a ``Stacks`` store: node -> (LR state, parent node). Nodes are
interned (pushing state ``s`` on node ``n`` always gives the same id), so a node id *is* the
stack's identity: every per-stack cache (terminal feeds, masks, next bytes) is a dict keyed by
integers. Forking a sequence is free and a prefix is never re-parsed.

Why integers and not small objects: a long-running cache of ~10^5 stacks held as objects with
dicts makes Python's cyclic garbage collector stop the world for 100-200 ms (measured on the
JSONSchemaBench replay); dicts of ints and numpy arrays are not tracked by the collector at all.

Threads: a store is shared by every matcher of a grammar. Reads take no lock; a cache miss
computes under ``lock`` (re-checking first), and a node's ``state``/``parent`` entries are
appended before its id is published, so a reader only ever holds ids whose entries exist.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["ParseTables", "Stacks", "REJECT", "ACCEPT", "ROOT"]

REJECT = -1  # feeding the terminal is a syntax error
ACCEPT = -2  # feeding $END completes a sentence
ROOT = -1  # the lhs of the added start rule in ``ParseTables.kernels``


@dataclass
class ParseTables:
    """Integer LALR(1) tables.

    ``actions[state][terminal]``: ``>= 0`` shift to that state, ``< 0`` reduce rule ``-1 - code``;
    in an ``ambiguous`` table a conflict is a tuple of such codes, all of which are followed.
    ``goto[state][nonterminal]``: the state after reducing to that nonterminal.
    """

    terminal_names: list[str]
    end: int  # id of the $END pseudo-terminal
    actions: list[dict[int, int | tuple[int, ...]]]
    goto: list[dict[int, int]]
    rule_lhs: list[int]
    rule_len: list[int]
    start_state: int
    end_state: int
    ambiguous: bool = False
    # For shortest completions (``engine/completion.py``), where the builder knows them (both do;
    # None if Lark's state numbering is not the one assumed):
    # every rule as (lhs, rhs symbols) and each state's kernel items as (dot, lhs, the rule's
    # symbols: those after the dot are ``rhs[dot:]``); a symbol is a terminal id, or ``-1 - nonterminal`` id; lhs ``ROOT`` is the
    # added start rule.
    rules: list[tuple[int, tuple[int, ...]]] | None = None
    kernels: list[tuple[tuple[int, int, tuple[int, ...]], ...]] | None = None


class Stacks:
    """An intern table of LR stacks plus the terminal-feed cache; node 0 is the start stack."""

    def __init__(self, tables: ParseTables, lock: Any = None) -> None:
        self.tables = tables
        self.lock = lock if lock is not None else threading.RLock()
        self.state: list[int] = [tables.start_state]
        self.parent: list[int] = [-1]
        self._kids: dict[int, int] = {}
        self._feeds: dict[int, int] = {}
        self._feeds_all: dict[int, tuple[int, ...]] = {}
        self._n_states = len(tables.actions)
        self._n_symbols = len(tables.terminal_names) + 1

    def __len__(self) -> int:
        return len(self.state)

    def push(self, node: int, state: int) -> int:
        """The id of ``state`` pushed on ``node`` (interned). Holds: the caller has the lock."""
        key = node * self._n_states + state
        kid = self._kids.get(key)
        if kid is None:
            kid = len(self.state)
            self.state.append(state)
            self.parent.append(node)
            self._kids[key] = kid
        return kid

    def feed(self, node: int, terminal: int) -> int:
        """The stack after shifting ``terminal`` (reducing first as needed), REJECT or ACCEPT.

        Exact: LALR lookahead merging can put a reduce action on a terminal that is rejected after
        the reduction; this simulates the reductions on the actual stack, so only terminals that
        really shift are accepted. Cached per (node, terminal).
        """
        key = node * self._n_symbols + terminal
        result = self._feeds.get(key)
        if result is None:
            with self.lock:
                result = self._feeds.get(key)
                if result is None:
                    result = self._feeds[key] = self._feed(node, terminal)
        return result

    def _feed(self, node: int, terminal: int) -> int:
        t = self.tables
        actions, goto, rule_lhs, rule_len, state, parent = t.actions, t.goto, t.rule_lhs, t.rule_len, self.state, self.parent
        while True:
            code = actions[state[node]].get(terminal)
            if code is None:
                return REJECT
            if code >= 0:
                return self.push(node, code)
            rule = -1 - code
            for _ in range(rule_len[rule]):
                node = parent[node]
            node = self.push(node, goto[state[node]][rule_lhs[rule]])
            if terminal == t.end and state[node] == t.end_state:
                return ACCEPT

    def feed_all(self, node: int, terminal: int) -> tuple[int, ...]:
        """Every stack reachable by shifting ``terminal`` (ACCEPT for a completed sentence).

        For ambiguous tables: each conflicting action is followed, like a GLR parser without the
        shared graph (stacks are interned, so equal branches merge by themselves). Empty if the
        terminal is rejected by every branch. Cached per (node, terminal).
        """
        key = node * self._n_symbols + terminal
        result = self._feeds_all.get(key)
        if result is None:
            with self.lock:
                result = self._feeds_all.get(key)
                if result is None:
                    result = self._feeds_all[key] = self._feed_all(node, terminal)
        return result

    def _feed_all(self, node: int, terminal: int) -> tuple[int, ...]:
        t = self.tables
        actions, goto, rule_lhs, rule_len, state, parent = t.actions, t.goto, t.rule_lhs, t.rule_len, self.state, self.parent
        out: dict[int, None] = {}
        seen = {node}
        todo = [node]
        while todo:
            n = todo.pop()
            codes = actions[state[n]].get(terminal)
            if codes is None:
                continue
            for code in (codes,) if isinstance(codes, int) else codes:
                if code >= 0:
                    out[self.push(n, code)] = None
                    continue
                rule = -1 - code
                m = n
                for _ in range(rule_len[rule]):
                    m = parent[m]
                m = self.push(m, goto[state[m]][rule_lhs[rule]])
                if terminal == t.end and state[m] == t.end_state:
                    out[ACCEPT] = None
                elif m not in seen:  # a reduction cycle (A -> B -> A with no input) ends here
                    seen.add(m)
                    todo.append(m)
        return tuple(out)

    def states(self, node: int) -> list[int]:
        """The LR states of a stack, bottom first."""
        out = []
        while node >= 0:
            out.append(self.state[node])
            node = self.parent[node]
        return out[::-1]
