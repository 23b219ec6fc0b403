"""LALR(1) parsing over Lark's tables, incrementally, on interned stacks.

A parser stack is a node id in a ``Stacks`` store: node -> (LR state, parent node, and the
required members seen in its object, see ``RequiredMembers``). Nodes are
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

__all__ = ["ParseTables", "RequiredMembers", "Stacks", "REJECT", "ACCEPT", "ROOT"]

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
    required: RequiredMembers | None = None


@dataclass
class RequiredMembers:
    """A side condition no grammar of polynomial size states: a *frame* (an object's rule, its
    members in any order) may close only once each of its required *units* (one rule per
    member) has been reduced inside it. Rules alone need a state per subset of the required
    keys (2^r); the stacks carry the subset instead (``Stacks``), so the parser holds it for the
    one object being written.

    ``opener``/``closer``/``separator``: the terminals ``{``, ``}`` and ``,``. ``units[frame]``:
    the frame's required unit nonterminals (bit ``i`` is ``units[frame][i]``); ``bit[unit]``;
    ``need[frame]``: every bit. ``opens``: the rules whose right side has ``opener`` (any
    object's rule, tracked or not: reducing one leaves its frame). ``close_needs[state]``: for
    each kernel item of ``state`` that shifts ``closer`` next, (frame, bits it needs), frame
    ``-1`` and no bits for an object that needs none.
    """

    opener: int
    closer: int
    separator: int
    units: dict[int, tuple[int, ...]]
    bit: dict[int, int]
    need: dict[int, int]
    opens: frozenset[int]
    close_needs: dict[int, tuple[tuple[int, int], ...]]


class Stacks:
    """An intern table of LR stacks plus the terminal-feed cache; node 0 is the start stack."""

    def __init__(self, tables: ParseTables, lock: Any = None) -> None:
        self.tables = tables
        self.lock = lock if lock is not None else threading.RLock()
        self.state: list[int] = [tables.start_state]
        self.parent: list[int] = [-1]
        # required members seen in the innermost open frame (``RequiredMembers``); all 0 without
        self.seen: list[int] = [0]
        self._kids: dict[int | tuple[int, int], int] = {}
        self._feeds: dict[int, int] = {}
        self._feeds_all: dict[int, tuple[int, ...]] = {}
        self._n_states = len(tables.actions)
        self._n_symbols = len(tables.terminal_names) + 1
        self.required = tables.required
        if self.required is not None:
            self._shift, self._reduce = self._shift_required, self._reduce_required  # type: ignore[method-assign]

    def __len__(self) -> int:
        return len(self.state)

    def push(self, node: int, state: int, seen: int = 0) -> int:
        """The id of ``state`` pushed on ``node`` with ``seen`` members (interned). Holds: the
        caller has the lock."""
        key: int | tuple[int, int] = node * self._n_states + state
        if seen:
            key = (key, seen)  # type: ignore[assignment]
        kid = self._kids.get(key)
        if kid is None:
            kid = len(self.state)
            self.state.append(state)
            self.parent.append(node)
            self.seen.append(seen)
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
        actions, state = t.actions, self.state
        while True:
            code = actions[state[node]].get(terminal)
            if code is None:
                return REJECT
            if code >= 0:
                return self._shift(node, terminal, code)
            node = self._reduce(node, -1 - code)
            if node < 0:
                return REJECT
            if terminal == t.end and state[node] == t.end_state:
                return ACCEPT

    def _shift(self, node: int, terminal: int, target: int) -> int:
        return self.push(node, target)

    def _reduce(self, node: int, rule: int) -> int:
        """The stack after reducing ``rule`` on top of ``node`` (REJECT where a side condition refuses)."""
        t = self.tables
        for _ in range(t.rule_len[rule]):
            node = self.parent[node]
        return self.push(node, t.goto[self.state[node]][t.rule_lhs[rule]])

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
        out: dict[int, None] = {}
        seen = {node}
        todo = [node]
        while todo:
            n = todo.pop()
            codes = t.actions[self.state[n]].get(terminal)
            if codes is None:
                continue
            for code in (codes,) if isinstance(codes, int) else codes:
                m = self._shift(n, terminal, code) if code >= 0 else self._reduce(n, -1 - code)
                if m < 0:
                    continue
                if code >= 0:
                    out[m] = None
                elif terminal == t.end and self.state[m] == t.end_state:
                    out[ACCEPT] = None
                elif m not in seen:  # a reduction cycle (A -> B -> A with no input) ends here
                    seen.add(m)
                    todo.append(m)
        return tuple(out)

    # -- required members (``RequiredMembers``) ----------------------------------------------------
    #
    # ``seen[node]``: the required units reduced in the innermost open frame, as of ``node``.
    # Shifting the opener starts a frame (0); any other shift keeps the parent's. Reducing a rule
    # that holds the opener ends a frame: the node pushed gets what its base had. Any other
    # reduction keeps what its last symbol's node had (its span lies in one frame: a nested
    # object was reduced to one symbol first), plus the bit of a required unit. A frame's rule
    # reduces only with all its bits; the closer shifts only where some item of the state may
    # close (so no shift is allowed that every reduction after it refuses).

    def _shift_required(self, node: int, terminal: int, target: int) -> int:
        req = self.required
        seen = self.seen[node]
        if terminal == req.closer:  # type: ignore[union-attr]
            needs = req.close_needs.get(self.state[node])  # type: ignore[union-attr]
            if needs is not None and all(need & ~seen for _, need in needs):
                return REJECT
        return self.push(node, target, 0 if terminal == req.opener else seen)  # type: ignore[union-attr]

    def _reduce_required(self, node: int, rule: int) -> int:
        t, req = self.tables, self.required
        seen = self.seen[node]
        for _ in range(t.rule_len[rule]):
            node = self.parent[node]
        lhs = t.rule_lhs[rule]
        need = req.need.get(lhs)  # type: ignore[union-attr]
        if need is not None and need & ~seen:
            return REJECT
        after = self.seen[node] if rule in req.opens else seen | req.bit.get(lhs, 0)  # type: ignore[union-attr]
        return self.push(node, t.goto[self.state[node]][lhs], after)

    def missing(self, node: int) -> tuple[int, int] | None:
        """(frame, bits it lacks) for the first frame that refuses to close on the closer fed at
        ``node`` (following every action), or None if none does."""
        req, t = self.required, self.tables
        if req is None:
            return None
        with self.lock:
            todo, seen = [node], {node}
            while todo:
                n = todo.pop()
                codes = t.actions[self.state[n]].get(req.closer)
                for code in () if codes is None else (codes,) if isinstance(codes, int) else codes:
                    if code >= 0:
                        for frame, need in req.close_needs.get(self.state[n], ()):
                            if need & ~self.seen[n]:
                                return frame, need & ~self.seen[n]
                        continue
                    lhs = t.rule_lhs[-1 - code]
                    need = req.need.get(lhs)
                    if need is not None and need & ~self.seen[n]:
                        return lhs, need & ~self.seen[n]
                    m = self._reduce_required(n, -1 - code)
                    if m >= 0 and m not in seen:
                        seen.add(m)
                        todo.append(m)
        return None

    def states(self, node: int) -> list[int]:
        """The LR states of a stack, bottom first."""
        out = []
        while node >= 0:
            out.append(self.state[node])
            node = self.parent[node]
        return out[::-1]
