"""LALR(1) parsing over Lark's tables, incrementally, on persistent interned stacks.

A parser stack is a chain of ``Stack`` nodes (state, parent). Nodes are interned through their
parent (``parent.kids[state]``), so two sequences that reach the same stack share one node: a
node's identity is the stack's identity, and every per-stack cache (terminal feeds, masks, allowed
next bytes) lives on the node. Forking a sequence is free, and a prefix is never re-parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ParseTables", "Stack", "ACCEPT"]


class _Accept:
    """The result of feeding ``$END`` to a stack that forms a complete sentence."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ACCEPT"


ACCEPT = _Accept()


class Stack:
    """One node of a persistent LR stack; see the module docstring."""

    __slots__ = ("state", "parent", "tree", "kids", "feeds", "acceptable", "masks", "next_bytes")

    def __init__(self, state: int, parent: Stack | None, tree: list[int]) -> None:
        self.state = state
        self.parent = parent
        self.tree = tree  # [number of nodes], shared by every node under one root
        self.kids: dict[int, Stack] = {}
        self.feeds: dict[int, Stack | _Accept | None] = {}
        self.acceptable: int | None = None  # bitset of terminals this exact stack can shift next
        self.masks: dict[int, object] = {}  # lexer state -> cached token mask
        self.next_bytes: dict[int, int] = {}  # lexer state -> bitset of viable next bytes

    def push(self, state: int) -> Stack:
        kid = self.kids.get(state)
        if kid is None:
            kid = self.kids[state] = Stack(state, self, self.tree)
            self.tree[0] += 1
        return kid

    def states(self) -> list[int]:
        out = []
        node: Stack | None = self
        while node is not None:
            out.append(node.state)
            node = node.parent
        return out[::-1]


@dataclass
class ParseTables:
    """Integer LALR(1) tables.

    ``actions[state][terminal]``: ``>= 0`` shift to that state, ``< 0`` reduce rule ``-1 - code``.
    ``goto[state][nonterminal]``: the state after reducing to that nonterminal.
    """

    terminal_names: list[str]
    end: int  # id of the $END pseudo-terminal
    actions: list[dict[int, int]]
    goto: list[dict[int, int]]
    rule_lhs: list[int]
    rule_len: list[int]
    start_state: int
    end_state: int

    def feed(self, node: Stack, terminal: int) -> Stack | _Accept | None:
        """The stack after shifting ``terminal`` (reducing first as needed), ACCEPT, or None if rejected.

        Exact: LALR lookahead merging can put a reduce action on a terminal that is rejected after
        the reduction; this simulates the reductions on the actual stack, so only terminals that
        really shift are accepted. Cached on the node.
        """
        cached = node.feeds.get(terminal, node)
        if cached is not node:
            return cached
        result = self._feed(node, terminal)
        node.feeds[terminal] = result
        return result

    def _feed(self, node: Stack, terminal: int) -> Stack | _Accept | None:
        actions, goto, rule_lhs, rule_len = self.actions, self.goto, self.rule_lhs, self.rule_len
        while True:
            code = actions[node.state].get(terminal)
            if code is None:
                return None
            if code >= 0:
                return node.push(code)
            rule = -1 - code
            for _ in range(rule_len[rule]):
                node = node.parent  # type: ignore[assignment]
            node = node.push(goto[node.state][rule_lhs[rule]])
            if terminal == self.end and node.state == self.end_state:
                return ACCEPT
