"""Shortest completions of a parser configuration, for budget-aware decoding.

ALGORITHMS.md, "Budget-aware completion": with ``n`` tokens left, a token is allowed only if a
complete output still fits after it. The bound used is the byte length of a short completion made
of bytes that are tokens on their own (every byte-level vocabulary has all 256), so it never
under-counts tokens. This module finds such a completion without searching bytes (a breadth-first
search over bytes explodes as soon as the grammar allows free-form values: ~10^4 configurations
within 10 bytes of ``{`` for an object with open additional properties):

* the current lexeme is finished the shortest way for each terminal it can end as (a search over
  lexer states, which are few);
* the parser stack is completed by a shortest path over (stack level, LR state) pairs whose edges
  are the kernel items of the state on top: item ``A -> α . β`` costs the shortest yield of
  ``β`` (Knuth's algorithm over the rules) and pops ``|α|`` entries, after which ``goto`` on ``A``
  is pushed. An LR(0) state's kernel items are exactly the items valid for every stack that
  reaches it, so this is the shortest completion in the grammar, and it visits at most
  (stack depth x states) pairs.

The witness (bytes) is then replayed through the real matcher configuration: what the greedy
lexer and the real stack accept is the ground truth, and the distances along the replayed path
are what ``compiled._Run.distance`` caches. Grammars whose builder did not record kernel items
(Lark's LALR tables) fall back to the byte search.
"""

from __future__ import annotations

import heapq
from typing import Any

from .lalr import ROOT

__all__ = ["Completions"]

INF = float("inf")


def _shortest_lexeme(dfa: Any, usable: int, limit: int) -> bytes | None:
    """A shortest string a terminal's DFA accepts, made of bytes in ``usable`` (breadth-first)."""
    if dfa.empty:
        return None
    if dfa.accepting[0]:
        return b""
    usable_bytes = [b for b in range(256) if usable >> b & 1]
    parent: dict[int, tuple[int, int]] = {0: (-1, -1)}
    frontier = [0]
    while frontier and len(parent) <= limit:
        nxt = []
        for s in frontier:
            row = dfa.trans[s]
            for b in usable_bytes:
                r = int(row[b])
                if r < 0 or r in parent:
                    continue
                parent[r] = (s, b)
                if dfa.accepting[r]:
                    out = bytearray()
                    while r != 0:
                        r, byte = parent[r]
                        out.append(byte)
                    return bytes(reversed(out))
                nxt.append(r)
        frontier = nxt
    return None


class Completions:
    """Shortest terminal-level completions of one grammar's parser stacks (see the module docstring).

    Built lazily per compiled grammar (``usable`` depends on the tokenizer); ``None`` from
    ``for_tables`` when the parse tables carry no kernel items.
    """

    def __init__(self, parse: Any, terminals: list[Any], usable: int, limit: int) -> None:
        self.parse = parse
        self.lexemes = [None if t.ignore else _shortest_lexeme(t.dfa, usable, limit) for t in terminals]
        self._yield_rules(parse.rules)
        self._witness: dict[int, tuple[int, ...]] = {}
        # per state: (pops, lhs, cost, symbols) for each kernel item with a finite cost
        self.items = [
            tuple((dot, lhs, c, beta) for dot, lhs, rhs in kernel if (c := self.cost(beta := rhs[dot:])) < INF)
            for kernel in parse.kernels
        ]

    @classmethod
    def for_tables(cls, parse: Any, terminals: list[Any], usable: int, limit: int) -> Completions | None:
        if parse.kernels is None or parse.rules is None:
            return None
        return cls(parse, terminals, usable, limit)

    def _yield_rules(self, rules: list[tuple[int, tuple[int, ...]]]) -> None:
        """Knuth's algorithm: the shortest yield (bytes) of every nonterminal, and the rule that
        gives it (rules are settled in order of cost, so the chosen rules never form a cycle)."""
        n_nt = 1 + max([lhs for lhs, _ in rules] + [-1 - x for _, rhs in rules for x in rhs if x < 0], default=-1)
        self.best: list[float] = [INF] * n_nt
        self.rule_of: list[int] = [-1] * n_nt
        waiting = [sum(1 for x in rhs if x < 0) for _, rhs in rules]
        partial = [sum(self.term_cost(x) for x in rhs if x >= 0) for _, rhs in rules]
        uses: dict[int, list[int]] = {}
        for r, (_, rhs) in enumerate(rules):
            for x in rhs:
                if x < 0:
                    uses.setdefault(-1 - x, []).append(r)
        heap = [(partial[r], r) for r in range(len(rules)) if waiting[r] == 0 and partial[r] < INF]
        heapq.heapify(heap)
        settled = [False] * n_nt
        while heap:
            cost, r = heapq.heappop(heap)
            lhs = rules[r][0]
            if settled[lhs]:
                continue
            settled[lhs] = True
            self.best[lhs], self.rule_of[lhs] = cost, r
            for u in uses.get(lhs, ()):
                count = sum(1 for x in rules[u][1] if x == -1 - lhs)
                waiting[u] -= count
                partial[u] += count * cost
                if waiting[u] == 0 and partial[u] < INF and not settled[rules[u][0]]:
                    heapq.heappush(heap, (partial[u], u))
        self.rules = rules

    def term_cost(self, t: int) -> float:
        lexeme = self.lexemes[t] if t < len(self.lexemes) else None
        return INF if lexeme is None else len(lexeme)

    def cost(self, symbols: tuple[int, ...]) -> float:
        return sum(self.term_cost(x) if x >= 0 else self.best[-1 - x] for x in symbols)

    def witness(self, symbols: tuple[int, ...]) -> list[int]:
        """The terminals of a shortest yield of ``symbols`` (iterative: the chosen rules of a large
        schema nest deeper than Python's recursion limit)."""
        out: list[int] = []
        for top in symbols:
            if top >= 0:
                out.append(top)
                continue
            w = self._witness.get(-1 - top)
            if w is None:
                expanded: list[int] = []
                todo = [top]
                while todo:
                    x = todo.pop()
                    if x >= 0:
                        expanded.append(x)
                    elif -1 - x in self._witness:
                        expanded += self._witness[-1 - x]
                    else:
                        todo += reversed(self.rules[self.rule_of[-1 - x]][1])
                w = self._witness[-1 - top] = tuple(expanded)
            out += w
        return out

    def stack(self, states: list[int]) -> tuple[float, list[int]]:
        """(bytes, terminals) of a shortest completion of the stack ``states`` (bottom first), or
        (inf, []) when there is none."""
        goto = self.parse.goto
        top = len(states) - 1
        source = (top, states[top])
        dist: dict[tuple[int, int], float] = {source: 0}
        prev: dict[Any, tuple[Any, tuple[int, ...]]] = {}
        heap: list[tuple[float, int, int]] = [(0, top, states[top])]
        goal = ("goal",)
        best = INF
        while heap:
            c, level, s = heapq.heappop(heap)
            if c >= best:
                break
            if c > dist.get((level, s), INF):
                continue
            for pops, lhs, cost, beta in self.items[s]:
                if pops > level:
                    continue
                total = c + cost
                if lhs == ROOT:
                    if pops == level and total < best:
                        best, prev[goal] = total, ((level, s), beta)
                    continue
                below = s if pops == 0 else states[level - pops]
                g = goto[below].get(lhs)
                if g is None:
                    continue
                node = (level - pops + 1, g)
                if total < dist.get(node, INF):
                    dist[node] = total
                    prev[node] = ((level, s), beta)
                    heapq.heappush(heap, (total, *node))
        if best == INF:
            return INF, []
        betas = []
        node: Any = goal
        while node != source:
            node, beta = prev[node]
            betas.append(beta)
        terminals: list[int] = []
        for beta in reversed(betas):
            terminals += self.witness(beta)
        return best, terminals

    def text(self, terminals: list[int]) -> bytes:
        return b"".join(self.lexemes[t] for t in terminals)  # type: ignore[misc]
