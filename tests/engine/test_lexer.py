"""The lexer automaton's tables against a plain construction: every built row steps each alive
terminal's DFA, and exactly the states reachable from the lexeme starts exist."""

from __future__ import annotations

from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ctrldec.engine import lexer as lexer_module
from ctrldec.engine.bytedfa import compile_regex, literal, minus_strings, successor_lists, without_empty
from ctrldec.engine.lexer import LexerAutomaton, Terminal

PATTERNS = ['"[a-z]*"', '"name"', '"nam[e-f]"', "[0-9]+", "-?[0-9]+(\\.[0-9]+)?", "true|tr", "[ \\t\\n]+", "[^\\x00-\\x1f\"]{2,40}", "é+|e"]


def _lexer(picks: list[int], contexts: list[list[int]]) -> LexerAutomaton:
    terminals = [Terminal(f"T{i}", without_empty(compile_regex(PATTERNS[p])), 0, False, False, (i,)) for i, p in enumerate(picks)]
    return LexerAutomaton(terminals, contexts)


def _reachable_members(lexer: LexerAutomaton) -> set[tuple]:
    """The alive sets a breadth-first walk from the lexeme starts meets (starts included)."""
    seen, todo = set(), [(True, lexer._members[s]) for s in set(lexer.start)]
    while todo:
        start, members = todo.pop()
        if (start, members) in seen:
            continue
        seen.add((start, members))
        for b in range(256):
            alive = tuple((t, int(lexer.terminals[t].dfa.trans[s, b])) for t, s in members if lexer.terminals[t].dfa.trans[s, b] >= 0)
            if alive:
                todo.append((False, alive))
    return seen


@settings(max_examples=60, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(PATTERNS) - 1), min_size=1, max_size=5),
    data=st.data(),
)
def test_lexer_rows_step_every_alive_terminal(picks, data):
    n = len(picks)
    contexts = data.draw(st.lists(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True), min_size=1, max_size=3))
    _check_rows(_lexer(picks, contexts))


LITERALS = [b'"name"', b'"names"', b'"nam"', b'"n"', b'"id"', b'"\\u0041"', b'"\xc3\xa9"', b"if", b"in", b"true", b'"a"']


@settings(max_examples=80, deadline=None)
@given(
    words=st.lists(st.sampled_from(LITERALS), min_size=1, max_size=6, unique=True),
    picks=st.lists(st.integers(0, len(PATTERNS) - 1), max_size=2),
    minus=st.booleans(),
    data=st.data(),
)
def test_literal_states_are_built_as_stepping_every_alive_terminal(words, picks, minus, data):
    """Literals (property names) beside at most one other automaton are built a trie at a time
    (``_build_literal_tree``); their rows must be those of stepping each terminal, as any other
    state's: here with a JSON string minus the literals (an object's other keys) or patterns."""
    dfas = [literal(w) for w in words] + [without_empty(compile_regex(PATTERNS[p])) for p in picks]
    if minus:
        dfas.append(minus_strings(without_empty(compile_regex(PATTERNS[0])), words))
    terminals = [Terminal(f"T{i}", dfa, 0, False, False, (i,)) for i, dfa in enumerate(dfas) if not dfa.empty]
    n = len(terminals)
    contexts = data.draw(st.lists(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True), min_size=1, max_size=3))
    with mock.patch.object(lexer_module, "_GATHER_ROWS", data.draw(st.sampled_from([1, 3, 4096]))):  # slices of the gather
        lexer = LexerAutomaton(terminals, contexts)
    _check_rows(lexer)


def _check_rows(lexer: LexerAutomaton) -> None:
    assert {(lexer.is_start[s], m) for s, m in enumerate(lexer._members)} == _reachable_members(lexer)
    for state, members in enumerate(lexer._members):
        assert lexer.built[state]
        row = lexer.trans_list[state]
        assert list(row) == lexer.trans[state].tolist()
        for b in range(256):
            alive = tuple((t, int(lexer.terminals[t].dfa.trans[s, b])) for t, s in members if lexer.terminals[t].dfa.trans[s, b] >= 0)
            assert (lexer._members[row[b]] if row[b] >= 0 else ()) == alive
            assert row[b] < 0 or not lexer.is_start[row[b]]
        assert lexer.eager[state] == (lexer.accept[state] >= 0 and max(row) < 0)
        assert lexer.eager_np[state] == lexer.eager[state] and lexer.accept_np[state] == lexer.accept[state]
        successors = {x for x in row if x >= 0}
        want = ((1 << lexer.end_bit) if lexer.is_start[state] else 0) | sum(1 << t for t in set(lexer.accepts[state]))
        for x in successors:
            want |= lexer.completable[x]
        assert lexer.completable[state] == want
    assert np.array_equal(lexer.completable_id, [lexer.completable_values.index(c) for c in lexer.completable])


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=12))
def test_a_literals_successors_are_its_chain(data):
    dfa = literal(data)
    assert lexer_module._all_successors(dfa) == successor_lists(dfa.trans)
