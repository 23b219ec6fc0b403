"""LR(0) automaton with SLR(1) reduce lookaheads, for ambiguous grammars.

The engine follows every conflicting action of an ambiguous grammar (``lalr.Stacks.feed_all``),
so it does not need LALR(1)'s precise lookaheads: SLR's FOLLOW sets only decide which
reductions are *tried*, and every wrong try dies at the next shift. This builder works on
integers (items are ``rule offset + dot``), and is several times faster than Lark's LALR
analysis on the large grammars the JSON Schema compiler produces (measured in docs/engine.md).
"""

from __future__ import annotations

from .bytedfa import check_budget

__all__ = ["slr_tables"]


Rules = list[tuple[str, list[str]]]


def slr_tables(
    rules: Rules, terminals: set[str], start: str
) -> tuple[list[dict[str, int | tuple[int, ...]]], int, int, list[tuple[tuple[int, int], ...]]]:
    """Build the action/goto rows of an SLR(1) automaton with every conflict kept.

    Returns ``(rows, start_state, end_state, kernels)`` where ``rows[state][symbol]`` is an
    action code, or a tuple of them for a conflict (a shift first): ``j >= 0`` shifts to state
    ``j`` (for a nonterminal: goes to it), ``-1 - r`` reduces by rule index ``r``. Plain ints
    keep the rows out of the cyclic GC's lists. ``end_state`` is the state after
    ``start`` (where ``$END`` accepts) and ``kernels[state]`` lists the state's kernel items as
    (rule index, dot), rule ``len(rules)`` being the added ``$root -> start``. ``$END`` is the
    end-of-input terminal.
    """
    nts = sorted({lhs for lhs, _ in rules})
    aug = len(rules)
    all_rules = rules + [("$root", [start])]
    offsets, item_rule, item_dot, item_next = _items(all_rules)
    moves_of = _Moves(_leftmost_closures(rules, terminals, nts, offsets), item_rule, item_next, terminals)
    nullable, first = _nullable_and_first(rules, terminals, nts)
    follow = _follow(rules, terminals, nts, start, nullable, first)
    reduces = [() if r == aug else tuple(follow.get(lhs, ())) for r, (lhs, _) in enumerate(all_rules)]

    # kernels as sorted tuples of ints: the cyclic GC untracks them at its first look, where
    # frozensets would be carried into the old generation (and counted toward a full collection)
    start_kernel = (offsets[aug],)
    index: dict[tuple[int, ...], int] = {start_kernel: 0}
    kernels = [start_kernel]
    rows: list[dict[str, int | tuple[int, ...]]] = []
    i = 0
    while i < len(kernels):
        if i % 32 == 0:
            check_budget(len(kernels))
        moves, reducing = moves_of.state(kernels[i])
        row: dict[str, int | tuple[int, ...]] = {}
        for r in reducing:
            for t in reduces[r]:
                row[t] = _with(row.get(t), -1 - r)
        for x, key in moves:
            j = index.get(key)
            if j is None:
                j = index[key] = len(kernels)
                kernels.append(key)
            row[x] = _with(row.get(x), j, first=True)
        rows.append(row)
        i += 1
    end_state = rows[0][start]  # a nonterminal's entry is a goto
    # an item's number grows with (rule, dot): sorting the numbers sorts the pairs
    items = [tuple([(item_rule[i], item_dot[i]) for i in kernel]) for kernel in kernels]
    return rows, 0, end_state, items


class _Moves:
    """Where an LR(0) state's items go: per symbol, the kernel it moves to, and the rules it
    reduces by. A state's closure adds the initial items of what its kernel's nonterminals lead
    with; the grammars the JSON Schema compiler writes have ten thousand states but a few hundred
    sets of such nonterminals, so each set's part is worked out once (``_part``)."""

    def __init__(self, closure_of: dict[str, frozenset[int]], item_rule: list[int], item_next: list[str | None],
                 terminals: set[str]) -> None:
        self.closure_of, self.item_rule, self.item_next, self.terminals = closure_of, item_rule, item_next, terminals
        self.parts: dict[frozenset[str], tuple[dict[str, list[int]], list[int]]] = {}

    def state(self, kernel: tuple[int, ...]) -> tuple[list[tuple[str, tuple[int, ...]]], list[int]]:
        """(symbol, the sorted kernel after moving over it) for each symbol, and the rules to
        reduce by, of the state with this (sorted) kernel."""
        own: dict[str, list[int]] = {}  # symbol -> the kernel's items after moving over it
        reducing: list[int] = []
        leading: set[str] = set()
        for item in kernel:
            x = self.item_next[item]
            if x is None:
                reducing.append(self.item_rule[item])
            else:
                moved = own.get(x)
                if moved is None:
                    own[x] = [item + 1]
                else:
                    moved.append(item + 1)
                if x not in self.terminals:
                    leading.add(x)
        if not leading:
            return [(x, tuple(moved)) for x, moved in own.items()], reducing
        brought, empty = self._part(frozenset(leading))
        moves = []
        for x in [*own, *(x for x in brought if x not in own)]:
            mine, theirs = own.get(x), brought.get(x)
            # a kernel item past its first symbol never equals an initial item: no duplicates
            moves.append((x, tuple(sorted(mine + theirs)) if mine and theirs else tuple(mine or theirs)))  # type: ignore[arg-type]
        return moves, reducing + empty

    def _part(self, leading: frozenset[str]) -> tuple[dict[str, list[int]], list[int]]:
        """The moves and empty-rule reductions of the initial items ``leading`` brings in."""
        part = self.parts.get(leading)
        if part is None:
            items: set[int] = set()
            for x in leading:
                items |= self.closure_of[x]
            moves: dict[str, list[int]] = {}
            empty: list[int] = []
            for item in sorted(items):
                x = self.item_next[item]
                if x is None:
                    empty.append(self.item_rule[item])
                else:
                    moves.setdefault(x, []).append(item + 1)
            part = self.parts[leading] = (moves, empty)
        return part


def _items(all_rules: Rules) -> tuple[list[int], list[int], list[int], list[str | None]]:
    """Items numbered ``rule offset + dot``: each rule's offset, and per item its rule, its dot
    and the symbol after the dot (None at the end)."""
    offsets = []
    total = 0
    for _, rhs in all_rules:
        offsets.append(total)
        total += len(rhs) + 1
    item_rule = [0] * total
    item_dot = [0] * total
    item_next: list[str | None] = [None] * total
    for r, (_, rhs) in enumerate(all_rules):
        for d in range(len(rhs) + 1):
            item_rule[offsets[r] + d] = r
            item_dot[offsets[r] + d] = d
            item_next[offsets[r] + d] = rhs[d] if d < len(rhs) else None
    return offsets, item_rule, item_dot, item_next


def _with(actions: int | tuple[int, ...] | None, code: int, *, first: bool = False) -> int | tuple[int, ...]:
    """A row entry with one more action: the code alone, or a conflict's tuple (a shift first)."""
    if actions is None:
        return code
    rest = actions if isinstance(actions, tuple) else (actions,)
    return (code, *rest) if first else (*rest, code)


def _leftmost_closures(rules: Rules, terminals: set[str], nts: list[str], offsets: list[int]) -> dict[str, frozenset[int]]:
    """Nonterminal -> the initial items of every rule reachable through leftmost nonterminals."""
    by_lhs: dict[str, list[int]] = {}
    for i, (lhs, _) in enumerate(rules):
        by_lhs.setdefault(lhs, []).append(i)
    closure_of: dict[str, frozenset[int]] = {}
    steps = 0
    for nt in nts:
        seen = {nt}
        stack = [nt]
        items: set[int] = set()
        while stack:
            steps += 1
            if steps % 4096 == 0:  # quadratic for long chains of optional members: metered
                check_budget()
            x = stack.pop()
            for r in by_lhs.get(x, []):
                items.add(offsets[r])
                rhs = rules[r][1]
                if rhs and rhs[0] not in terminals and rhs[0] not in seen:
                    seen.add(rhs[0])
                    stack.append(rhs[0])
        closure_of[nt] = frozenset(items)
    return closure_of


def _nullable_and_first(rules: Rules, terminals: set[str], nts: list[str]) -> tuple[set[str], dict[str, set[str]]]:
    """The nullable nonterminals, and each nonterminal's FIRST set (a fixed point)."""
    nullable: set[str] = set()
    first: dict[str, set[str]] = {nt: set() for nt in nts}
    changed = True
    while changed:
        changed = False
        for lhs, rhs in rules:
            before = (lhs in nullable, len(first[lhs]))
            all_null = True
            for sym in rhs:
                if sym in terminals:
                    first[lhs].add(sym)
                    all_null = False
                    break
                first[lhs] |= first.get(sym, set())
                if sym not in nullable:
                    all_null = False
                    break
            if all_null:
                nullable.add(lhs)
            if (lhs in nullable, len(first[lhs])) != before:
                changed = True
    return nullable, first


def _follow(rules: Rules, terminals: set[str], nts: list[str], start: str, nullable: set[str],
            first: dict[str, set[str]]) -> dict[str, set[str]]:
    """FOLLOW sets: each rule adds FIRST of what comes after a nonterminal, and where that is
    nullable, FOLLOW of its lhs (an edge lhs -> nonterminal, propagated with a worklist)."""
    follow: dict[str, set[str]] = {nt: set() for nt in nts}
    follow.setdefault(start, set()).add("$END")
    feeds: dict[str, set[str]] = {}
    for lhs, rhs in rules:
        trailer: set[str] = set()
        open_end = True  # FOLLOW(lhs) still reaches this point
        for sym in reversed(rhs):
            if sym in terminals:
                trailer, open_end = {sym}, False
                continue
            follow[sym] |= trailer
            if open_end and sym != lhs:
                feeds.setdefault(lhs, set()).add(sym)
            if sym in nullable:
                trailer = trailer | first[sym]
            else:
                trailer, open_end = set(first[sym]), False
    work = list(follow)
    while work:
        x = work.pop()
        for y in feeds.get(x, ()):
            size = len(follow[y])
            follow[y] |= follow[x]
            if len(follow[y]) != size:
                work.append(y)
    return follow
