"""Compiling a Lark grammar into tokenizer-independent tables: terminal DFAs, LALR tables, lexer.

This is the per-constraint part of compilation (DESIGN.md lifetimes); ``CompiledGrammar`` adds the
tokenizer. Lark does the grammar analysis (its grammar loader and LALR(1) construction); ctrldec
replaces Lark's regex-based lexer with byte DFAs built by ``interegular``, so that a prefix that
stops in the middle of a terminal, or of a UTF-8 character, can be continued.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lark.common import ParserConf
from lark.exceptions import GrammarError as LarkGrammarError
from lark.exceptions import LarkError
from lark.lexer import PatternStr
from lark.load_grammar import load_grammar
from lark.parsers.lalr_analysis import LALR_Analyzer, Shift

from ..errors import GrammarError
from ..limits import DEFAULT_LIMITS, Limits
from .bytedfa import ByteDFA, RegexCompileError, check_budget, compile_regex, literal
from .lalr import ROOT, ParseTables, RequiredMembers
from .deep import deep
from .lexer import LexerAutomaton, Terminal
from .slr import slr_tables

__all__ = ["GrammarTables", "MemberFrames", "compile_lark"]

_LINE = re.compile(r"\bline (\d+)")
# Estimated bytes of one cache or table entry keyed by an int (or of one interned stack), for the
# ``memory_size_bytes`` estimates: tracemalloc over replaying 60 JSONSchemaBench Github schemas'
# instances with json.lark counted 231 KB for 1,312 new stacks and 1,592 new cache entries.
ENTRY_BYTES = 80


@dataclass(frozen=True)
class MemberFrames:
    """Rules whose required members the parser tracks (``lalr.RequiredMembers``), by name: the
    terminals of ``{``, ``}`` and ``,``, and each frame rule's required unit rules (a unit:
    one member, ``key : value``). A frame may close only once each unit was reduced in it."""

    opener: str
    closer: str
    separator: str
    units: dict[str, list[str]]


@dataclass
class GrammarTables:
    """Everything about a grammar that does not depend on a tokenizer.

    ``relaxations`` and ``notes``: what the front end that wrote the grammar approximated
    (``JSONSchema(lenient=True)``) or restricted, kept with the tables so that every constraint
    served these tables from the cache reports them. ``lock`` guards what grows as the tables are
    used (the lazily built lexer states, and the caches of every grammar built over them).
    """

    source: str
    parse: ParseTables
    lexer: LexerAutomaton
    relaxations: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    annotations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        dfas = sum(t.dfa.trans.nbytes + t.dfa.accepting.nbytes for t in self.terminals if isinstance(t.dfa, ByteDFA))
        entries = sum(len(row) for row in self.parse.actions) + sum(len(row) for row in self.parse.goto)
        entries += sum(1 + len(rhs) for _, rhs in self.parse.rules or ()) + sum(len(k) for k in self.parse.kernels or ())
        self._fixed_bytes = dfas + entries * ENTRY_BYTES

    @property
    def terminals(self) -> list[Terminal]:
        return self.lexer.terminals

    @property
    def lock(self) -> Any:
        """The re-entrant lock of everything built over these tables (the lexer automaton's)."""
        return self.lexer.lock

    def memory_size_bytes(self) -> int:
        """Estimated bytes: the lexer automaton as built so far (``LexerAutomaton.memory_size_bytes``),
        the terminals' dense DFA tables, and ``ENTRY_BYTES`` per parse-table entry. Grows as
        lazily built lexer states are added; O(1), read without the lock (an estimate)."""
        return self._fixed_bytes + self.lexer.memory_size_bytes()


def _find_line(text: str, *needles: str) -> int | None:
    """The first line of ``text`` containing one of ``needles`` as a whole word, else any match."""
    for needle in needles:
        if not needle:
            continue
        word = re.compile(r"(?<![\w$])" + re.escape(needle) + r"(?![\w])")
        for i, line in enumerate(text.splitlines(), 1):
            if word.search(line):
                return i
    return None


def _definition_line(text: str, name: str) -> int | None:
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(r"\s*[?!]?" + re.escape(name) + r"(\.\-?\d+)?\s*:", line):
            return i
    return None


def _terminal_line(text: str, term) -> int | None:
    raw = getattr(term.pattern, "raw", None)
    return _definition_line(text, term.name) or (_find_line(text, raw) if raw else None)


def _load(text: str, start: str):
    try:
        grammar, _ = load_grammar(text, "<grammar>", None, False)
        return grammar.compile([start], set())
    except LarkGrammarError as e:
        message = str(e).strip().splitlines()[0]
        m = _LINE.search(str(e))
        line = int(m.group(1)) if m else None
        undefined = re.search(r"(?:Rule|Terminal) '([^']+)' used but not defined", message)
        if undefined and line is None:
            line = _find_line(text, undefined.group(1))
        raise GrammarError(f"grammar error: {message}", line=line) from None
    except LarkError as e:
        m = _LINE.search(str(e))
        raise GrammarError(
            f"grammar syntax error: {str(e).strip().splitlines()[0]}", line=int(m.group(1)) if m else None
        ) from None


def _check_productive(text: str, rules, terminal_ok: set[str], start: str) -> None:
    """Raise if the start rule can never derive a finished sentence (the language is empty)."""
    productive: set[str] = set()
    changed = True
    while changed:
        changed = False
        for rule in rules:
            lhs = rule.origin.name
            if lhs in productive:
                continue
            if all(s.name in terminal_ok if s.is_term else s.name in productive for s in rule.expansion):
                productive.add(lhs)
                changed = True
    if start not in productive:
        raise GrammarError(
            f"the grammar's language is empty: rule '{start}' can never be completed "
            "(every alternative needs a rule that never finishes, or a terminal that matches nothing)",
            line=_definition_line(text, start),
        )


def _prune(
    rules: list[tuple[str, list[str]]], terminal_ok: set[str], terminals: set[str], start: str, units: dict[str, list[str]] | None = None
) -> list[tuple[str, list[str]]]:
    """Drop every alternative that can never finish (it uses a rule with no finite derivation, or
    a terminal matching nothing) and every rule unreachable from ``start``. A frame
    (``MemberFrames``) finishes only if each of its required units does.

    LR parsing alone would happily shift into such a dead end; removing them keeps "the parser
    can shift this terminal" equivalent to "the text can still be completed".
    """

    def ok(sym: str, productive: set[str]) -> bool:
        return sym in terminal_ok if sym in terminals else sym in productive

    units = units or {}
    productive: set[str] = set()
    changed = True
    while changed:
        changed = False
        for lhs, rhs in rules:
            if lhs not in productive and all(ok(x, productive) for x in rhs) and all(u in productive for u in units.get(lhs, ())):
                productive.add(lhs)
                changed = True
    live = [(lhs, rhs) for lhs, rhs in rules if lhs in productive and all(ok(x, productive) for x in rhs)]
    by_lhs: dict[str, list[list[str]]] = {}
    for lhs, rhs in live:
        by_lhs.setdefault(lhs, []).append(rhs)
    reachable = {start}
    frontier = [start]
    while frontier:
        for rhs in by_lhs.get(frontier.pop(), []):
            for x in rhs:
                if x not in terminals and x not in reachable:
                    reachable.add(x)
                    frontier.append(x)
    return [(lhs, rhs) for lhs, rhs in live if lhs in reachable]


def _inline_units(rules: dict[str, list[list[str]]], terminals: set[str], start: str) -> dict[str, list[list[str]]]:
    """Replace every rule ``A -> B`` (one alternative, one nonterminal) by ``B`` where A is used.

    Generated grammars are full of such aliases; each costs LR states and a reduction per use.
    """
    alias = {
        lhs: alts[0][0]
        for lhs, alts in rules.items()
        if lhs != start and len(alts) == 1 and len(alts[0]) == 1 and alts[0][0] not in terminals and alts[0][0] != lhs
    }

    def target(x: str) -> str:
        seen = set()
        while x in alias and x not in seen:
            seen.add(x)
            x = alias[x]
        return x

    return {lhs: [[target(x) for x in alt] for alt in alts] for lhs, alts in rules.items() if lhs not in alias or target(lhs) == lhs}


def compile_lark(
    text: str,
    start: str = "start",
    *,
    terminal_dfas: dict[str, ByteDFA] | None = None,
    ambiguous: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> GrammarTables:
    """Compile Lark grammar text (LALR(1)) into ``GrammarTables``.

    ``terminal_dfas`` replaces the automaton of named terminals after Lark's analysis (``Regex``
    uses it for patterns Lark would refuse).
    ``ambiguous``: keep LALR conflicts and let the parser follow every action, and lex a text
    that several terminals match as each of them (a GLR-style configuration set per sequence).
    Raises ``GrammarError`` naming the rule or terminal and its line; more than
    ``limits.max_grammar_rules`` rules is refused before Lark's LALR analysis (which cannot be
    interrupted) sees them.
    """
    terms, rules, ignore = _load(text, start)
    check_budget()  # Lark's loader ran unmetered: stop here if it used the time up
    if len(rules) > limits.max_grammar_rules:
        raise GrammarError(f"the grammar has {len(rules)} rules, more than Limits.max_grammar_rules ({limits.max_grammar_rules})")
    if not any(r.origin.name == start for r in rules):
        raise GrammarError(f"the grammar has no rule '{start}' to start from")
    given = terminal_dfas or {}
    terminals: list[Terminal] = []
    for t in terms:
        pattern = t.pattern.to_regexp()
        try:
            if t.name in given:
                dfa = given[t.name]
            elif isinstance(t.pattern, PatternStr) and not t.pattern.flags and t.pattern.value:
                dfa = literal(t.pattern.value.encode("utf-8"))  # no regex round trip (10,000 literals: 11.2 s -> 5.5 s)
            else:
                re.compile(pattern)
                dfa = compile_regex(pattern)
        except re.error as e:
            raise GrammarError(f"terminal {t.name} has an invalid regex /{pattern}/: {e}", line=_terminal_line(text, t)) from None
        except RegexCompileError as e:
            raise GrammarError(
                f"terminal {t.name} uses a regex feature ctrldec cannot compile to an automaton "
                f"(lookarounds and backreferences are not supported): /{pattern}/ ({e})",
                line=_terminal_line(text, t),
            ) from None
        if not dfa.empty and dfa.accepting[0]:
            raise GrammarError(f"terminal {t.name} matches the empty string", line=_terminal_line(text, t))
        is_literal = isinstance(t.pattern, PatternStr)
        max_width = min(t.pattern.max_width, 1 << 30)
        order = (-t.priority, 0 if is_literal else 1, -max_width, -len(t.pattern.value), t.name)
        terminals.append(Terminal(t.name, dfa, t.priority, is_literal, t.name in ignore, order))
    _check_productive(text, rules, {t.name for t in terminals if not t.dfa.empty}, start)
    plain = [(r.origin.name, [x.name for x in r.expansion]) for r in rules]
    return build_tables(text, plain, terminals, start, ambiguous=ambiguous)


def compile_rules(
    rules: dict[str, list[list[str]]],
    terminals: dict[str, ByteDFA],
    start: str = "start",
    *,
    ambiguous: bool = True,
    frames: MemberFrames | None = None,
) -> GrammarTables:
    """Compile grammar rules built in Python: ``{lhs: [[symbol, ...], ...]}`` with terminal
    automata by name (a symbol is a terminal iff it is in ``terminals``). No rules at all gives
    the empty language: every matcher starts at a dead end. ``frames``: objects whose required
    members the parser tracks (their rules must not be aliases, which are inlined)."""
    if not rules:
        parse = ParseTables([], 0, [{}], [{}], [], [], 0, -1, ambiguous=True)
        return GrammarTables("", parse, LexerAutomaton([], [[]], ambiguous=True))
    rules = _inline_units(rules, set(terminals), start)
    plain = [(lhs, list(alt)) for lhs, alts in rules.items() for alt in alts]
    terms = [Terminal(name, dfa, 0, False, False, (0, 1, 0, 0, name)) for name, dfa in terminals.items()]
    return build_tables("", plain, terms, start, ambiguous=ambiguous, frames=frames)


def _lalr_rows(rules: list[tuple[str, list[str]]], term_names: set[str], start: str) -> tuple[list, int, int, list]:
    """Lark's LALR(1) table in ``slr_tables``' form: ``rows[state][symbol]`` is a state to shift
    to (or go to) or ``-1 - rule index`` to reduce by, with the start and end states and each
    state's kernel items as (rule index, dot)."""
    from lark.grammar import NonTerminal, Rule
    from lark.grammar import Terminal as LarkTerminal

    lark_rules = [
        Rule(NonTerminal(lhs), [LarkTerminal(x) if x in term_names else NonTerminal(x) for x in rhs], order=i)
        for i, (lhs, rhs) in enumerate(rules)
    ]
    analyzer = LALR_Analyzer(ParserConf(lark_rules, None, [start]), strict=False)
    try:
        # Lark's lookahead propagation recurses once per link of a chain of rules (5,000 chained
        # rules passed Python's default limit of 1,000 with a bare RecursionError)
        deep(analyzer.compute_lalr, 20 * len(rules) + 1_000)
    except RecursionError:
        raise GrammarError(f"the grammar's rules chain too deeply for Lark's LALR analysis ({len(rules)} rules)") from None
    except LarkGrammarError as e:
        detail = " ".join(line.strip() for line in str(e).strip().splitlines() if line.strip())
        raise GrammarError(f"grammar is not LALR(1): {detail}") from None
    check_budget()  # the analysis ran unmetered (its input is bounded by max_grammar_rules)
    table = analyzer.parse_table
    # Lark keeps each rule's index as its order; its own start rule is never reduced
    rows = [{sym: arg if act is Shift else -1 - arg.order for sym, (act, arg) in table.states[state].items()}
            for state in range(len(table.states))]
    # Lark numbers the states in the order of its LR(0) item sets (distinct closures)
    kernels: dict[Any, list[tuple[int, int]]] = {}
    for itemset in analyzer.lr0_itemsets:
        kernels.setdefault(itemset.closure, sorted(
            (len(rules) if p.rule.origin.name.startswith("$root") else p.rule.order, p.index) for p in itemset.kernel))
    return rows, table.start_states[start], table.end_states[start], list(kernels.values())


def _coded_items(rules: list[tuple[str, list[str]]], kernels: list | None, term_id: dict[str, int], nonterms: dict[str, int],
                 start: str) -> tuple[list[tuple[int, tuple[int, ...]]], list | None]:
    """The rules and kernel items in ``ParseTables``' integer form (a terminal id, or ``-1 -``
    a nonterminal id; kernel items as (dot, lhs, the rule's symbols), ``ROOT`` for the added
    start rule: the symbols after the dot are sliced where completions need them, not here). ``nonterms`` gains the nonterminals no goto names."""

    def symbol(x: str) -> int:
        return term_id[x] if x in term_id else -1 - nonterms.setdefault(x, len(nonterms))

    coded = [(-1 - symbol(lhs), tuple(symbol(x) for x in rhs)) for lhs, rhs in rules]
    if kernels is None:
        return coded, None
    with_root = [*coded, (ROOT, (symbol(start),))]
    return coded, [tuple((dot, *with_root[r]) for r, dot in items) for items in kernels]


def build_tables(
    source: str, rules: list[tuple[str, list[str]]], terminals: list[Terminal], start: str, *, ambiguous: bool, frames: MemberFrames | None = None
) -> GrammarTables:
    """Parse tables (Lark's LALR(1), or for an ambiguous grammar SLR(1) with every conflict kept)
    and the lexer automaton."""
    term_names = {t.name for t in terminals}
    rules = _prune(rules, {t.name for t in terminals if not t.dfa.empty}, term_names, start, frames.units if frames else None)
    if not any(lhs == start for lhs, _ in rules):
        raise GrammarError("the grammar's language is empty")
    used = {x for _, rhs in rules for x in rhs if x in term_names}
    terminals = [t for t in terminals if t.name in used or t.ignore]
    names = [t.name for t in terminals]
    if ambiguous:
        rows, start_state, end_state, kernels = slr_tables(rules, set(names) | {"$END"}, start)
    else:
        rows, start_state, end_state, kernels = _lalr_rows(rules, term_names, start)
        if len(kernels) != len(rows):
            kernels = None  # not the numbering assumed: no shortest completions from the grammar
    term_id = {n: i for i, n in enumerate(names)}
    end = len(names)
    term_id["$END"] = end
    nonterms: dict[str, int] = {}
    rule_index: dict[object, int] = {}  # (lhs, rhs) -> rule number in the tables (equal rules share one)
    rule_code: dict[int, int] = {}  # reduce by a rule index -> reduce by its rule number
    rule_lhs: list[int] = []
    rule_len: list[int] = []
    n_states = len(rows)
    actions: list[dict[int, int | tuple[int, ...]]] = [{} for _ in range(n_states)]
    goto: list[dict[int, int]] = [{} for _ in range(n_states)]

    def numbered(action: int) -> int:  # a reduce by rule index becomes one by rule number
        if action >= 0:
            return action
        code = rule_code.get(action)
        if code is None:
            lhs, rhs = rules[-1 - action]
            r = rule_index.setdefault((lhs, tuple(rhs)), len(rule_lhs))
            if r == len(rule_lhs):
                rule_lhs.append(nonterms.setdefault(lhs, len(nonterms)))
                rule_len.append(len(rhs))
            code = rule_code[action] = -1 - r
        return code

    for state, row in enumerate(rows):
        for symbol, acts in row.items():
            if symbol not in term_id:
                goto[state][nonterms.setdefault(symbol, len(nonterms))] = acts  # type: ignore[assignment]
            elif isinstance(acts, tuple):
                actions[state][term_id[symbol]] = tuple(numbered(a) for a in acts)
            else:
                actions[state][term_id[symbol]] = acts if acts >= 0 else numbered(acts)
    coded, kernel_items = _coded_items(rules, kernels, term_id, nonterms, start)
    parse = ParseTables(  # tuples: the cyclic GC stops scanning them (a list of n states costs n visits)
        terminal_names=names,
        end=end,
        actions=tuple(actions),
        goto=tuple(goto),
        rule_lhs=tuple(rule_lhs),
        rule_len=tuple(rule_len),
        start_state=start_state,
        end_state=end_state,
        ambiguous=ambiguous,
        rules=coded if coded is None else tuple(coded),
        kernels=kernel_items if kernel_items is None else tuple(kernel_items),
    )
    if frames is not None:
        parse.required = _required_members(frames, rules, rule_index, term_id, nonterms, kernel_items)
    contexts = [tuple([t for t in row if t != end]) for row in actions]  # tuples: no list per state for the GC
    return GrammarTables(source, parse, LexerAutomaton(terminals, contexts, ambiguous=ambiguous))


def _required_members(frames: MemberFrames, rules: list[tuple[str, list[str]]], rule_index: dict[object, int], term_id: dict[str, int],
                      nonterms: dict[str, int], kernels: list | None) -> RequiredMembers | None:
    """``MemberFrames`` in the tables' integer form; None if no frame is left after pruning."""
    live = {lhs for lhs, _ in rules}
    units = {nonterms[f]: tuple(nonterms.setdefault(u, len(nonterms)) for u in us) for f, us in frames.units.items() if f in live and f in nonterms}
    if not units:
        return None
    if kernels is None or frames.closer not in term_id:
        raise GrammarError("tracked object members need parse tables with kernel items")  # SLR tables have them
    bit = {u: 1 << i for us in units.values() for i, u in enumerate(us)}
    need = {f: (1 << len(us)) - 1 for f, us in units.items()}
    opener, closer = term_id.get(frames.opener, -1), term_id[frames.closer]
    opens = frozenset(r for key, r in rule_index.items() if frames.opener in key[1])  # type: ignore[index]
    close_needs = {}
    for state, items in enumerate(kernels):
        needs = tuple((lhs if lhs in need else -1, need.get(lhs, 0)) for dot, lhs, rhs in items if dot < len(rhs) and rhs[dot] == closer)
        if any(n for _, n in needs):
            close_needs[state] = needs
    return RequiredMembers(opener, closer, term_id.get(frames.separator, -1), units, bit, need, opens, close_needs)
