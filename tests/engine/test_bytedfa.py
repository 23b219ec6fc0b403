"""Byte DFAs agree with Python's regex engine on whole-string matches, over UTF-8 bytes."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

import numpy as np

from ctrldec.engine.bytedfa import (
    _Builder, _trim, class_ranges, compile_regex, concat_bytes, fsm_to_dfa, minus_strings, parse_fsm, product, strings, utf8_sequences, without_empty,
)

PATTERNS = [
    r'"([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"',
    r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?",
    r"[^a]+",
    r"[α-ω]+x?",
    r"(?i:select)",
    r"[😀-😂]{2}",
    r"é|ab|東京",
    r"[^\n]*",
    r"(ab|a)(bc|c)?",
]
ALPHABET = 'ab"\\u01239.eE+-é αβωxSELECTselect_\x00\n😀😁😂東京\U0010ffff'


@settings(max_examples=300, deadline=None)
@given(pattern=st.sampled_from(PATTERNS), text=st.text(alphabet=ALPHABET, max_size=10))
def test_dfa_matches_like_python_re(pattern, text):
    assert compile_regex(pattern).matches(text.encode("utf-8")) == bool(re.fullmatch(pattern, text))


@settings(max_examples=200, deadline=None)
@given(pattern=st.sampled_from(PATTERNS), text=st.text(alphabet=ALPHABET, max_size=6), cut=st.integers(0, 30))
def test_dfa_never_dies_on_a_prefix_of_a_match(pattern, text, cut):
    """A byte prefix of a matching string (even cut inside a character) keeps the DFA alive."""
    if not re.fullmatch(pattern, text):
        return
    data = text.encode("utf-8")[:cut]
    dfa = compile_regex(pattern)
    state = 0
    for b in data:
        state = int(dfa.trans[state, b])
        assert state >= 0


def test_invalid_utf8_is_rejected():
    dfa = compile_regex(r"[^a]*")
    assert not dfa.matches(b"\xff")
    assert not dfa.matches(b"\xc3")  # a lead byte with no continuation
    assert not dfa.matches("\ud800".encode("utf-8", "surrogatepass"))  # a surrogate


def test_without_empty_removes_only_the_empty_string():
    dfa = without_empty(compile_regex(r"(ab)*"))
    assert not dfa.matches(b"")
    assert dfa.matches(b"ab") and dfa.matches(b"abab")


def _reference_trim(trans, accepting, start):
    """``_trim`` by its definition, with Python sets: the reachable states that reach an accepting
    one, the start first and the others in their order."""
    n = len(accepting)
    succ = [{int(x) for x in trans[s] if x >= 0} for s in range(n)]
    reach, todo = {start}, [start]
    while todo:
        for x in succ[todo.pop()] - reach:
            reach.add(x)
            todo.append(x)
    live = {s for s in reach if accepting[s]}
    grew = True
    while grew:
        grew = False
        for s in reach - live:
            if succ[s] & live:
                live.add(s)
                grew = True
    if start not in live:
        return np.zeros((0, 256), dtype=np.int32), np.zeros(0, dtype=bool)
    order = [start] + sorted(live - {start})
    number = {s: i for i, s in enumerate(order)}
    table = np.array([[number.get(int(x), -1) for x in trans[s]] for s in order], dtype=np.int32)
    return table, np.asarray(accepting)[order]


@st.composite
def _tables(draw):
    """A random automaton table over a few bytes, with some states unreachable or dead."""
    n = draw(st.integers(1, 12))
    trans = np.full((n, 256), -1, dtype=np.int32)
    for s in range(n):
        for b in draw(st.lists(st.sampled_from([0, 1, 97, 98, 255]), max_size=4, unique=True)):
            trans[s, b] = draw(st.integers(-1, n - 1))
        if draw(st.booleans()):  # a run of bytes to one target, like a character class
            lo = draw(st.integers(0, 250))
            trans[s, lo : lo + draw(st.integers(1, 5))] = draw(st.integers(0, n - 1))
    accepting = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return trans, accepting, draw(st.integers(0, n - 1))


@settings(max_examples=300, deadline=None)
@given(_tables())
def test_trim_keeps_the_reachable_live_states_in_order(table):
    trans, accepting, start = table
    got, want = _trim(trans, accepting, start), _reference_trim(trans, accepting, start)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


OPS = {"and": lambda x, y: x and y, "or": lambda x, y: x or y, "diff": lambda x, y: x and not y}


@settings(max_examples=200, deadline=None)
@given(a=st.sampled_from(PATTERNS), b=st.sampled_from(PATTERNS), op=st.sampled_from(sorted(OPS)), texts=st.lists(st.text(alphabet=ALPHABET, max_size=8), max_size=8))
def test_products_match_like_python_re_and_are_trim(a, b, op, texts):
    dfa = product(compile_regex(a), compile_regex(b), op)
    for text in texts:
        assert dfa.matches(text.encode()) == OPS[op](bool(re.fullmatch(a, text)), bool(re.fullmatch(b, text)))
    if dfa.empty:
        return
    trimmed = _trim(dfa.trans, dfa.accepting, 0)
    assert np.array_equal(trimmed[0], dfa.trans) and np.array_equal(trimmed[1], dfa.accepting)


@settings(max_examples=100, deadline=None)
@given(pattern=st.sampled_from(PATTERNS), text=st.text(alphabet=ALPHABET, max_size=8))
def test_concat_bytes_is_trim_and_matches_the_concatenation(pattern, text):
    body = compile_regex(pattern)
    # a suffix whose first byte no match continues with (none where every byte may continue one)
    ends = np.flatnonzero((body.trans[body.accepting] < 0).all(axis=0))
    suffix = bytes([int(ends[0]), 62]) if len(ends) else b""
    dfa = concat_bytes(b"<", body, suffix)
    assert dfa.matches(b"<" + text.encode() + suffix) == bool(re.fullmatch(pattern, text))
    trimmed = _trim(dfa.trans, dfa.accepting, 0)
    assert np.array_equal(trimmed[0], dfa.trans) and np.array_equal(trimmed[1], dfa.accepting)


@settings(max_examples=200, deadline=None)
@given(
    pattern=st.sampled_from(PATTERNS),
    values=st.lists(st.text(alphabet='ab"\\é', max_size=5), max_size=6),
    quoted=st.booleans(),
    texts=st.lists(st.text(alphabet='ab"\\é', max_size=7), max_size=8),
)
def test_minus_strings_is_the_difference_product_and_trim(pattern, values, quoted, texts):
    """``minus_strings`` (an object's other keys: a string minus its declared names) builds the
    same language as ``product(dfa, strings(values), "diff")``, trimmed, with as many states."""
    dfa = compile_regex(pattern)
    words = [f'"{v}"'.encode() if quoted else v.encode() for v in values]
    fast, slow = minus_strings(dfa, words), product(dfa, strings(words), "diff")
    assert fast.n_states == slow.n_states
    assert product(fast, slow, "diff").empty and product(slow, fast, "diff").empty
    for text in texts + values:
        data = (f'"{text}"' if quoted else text).encode()
        assert fast.matches(data) == (dfa.matches(data) and data not in words)
    if not fast.empty:
        trans, accepting = _trim(fast.trans, fast.accepting, 0)
        assert len(accepting) == fast.n_states


def _plain_fsm_to_dfa(fsm, encode=None):
    """``fsm_to_dfa`` with every state filled by ``_Builder.fill``, no templates."""
    states = sorted(fsm.states)
    index = {s: i for i, s in enumerate(states)}
    sequences = {cls: (encode or utf8_sequences)(rs) for cls, rs in class_ranges(fsm).items()}
    builder = _Builder(len(states))
    for s in states:
        builder.fill(builder.rows[index[s]], [(seq, index[t]) for cls, t in fsm.map.get(s, {}).items() for seq in sequences.get(cls, [])])
    trans = np.stack(builder.rows)
    accepting = np.zeros(len(trans), dtype=bool)
    accepting[[index[s] for s in fsm.finals]] = True
    return _trim(trans, accepting, index[fsm.initial])


_UNITS = [r"\S+\s+", r"[α-ω]", r"[^\"\\]\d", r"(?:ab|é)", r"[a-z]*[🙂-🙏]", r"\w", r"[^x]"]


@settings(max_examples=60, deadline=None)
@given(unit=st.sampled_from(_UNITS), lo=st.integers(0, 3), extra=st.integers(0, 6), tail=st.sampled_from(["", r"\S+", "x", r"[^a]?"]), json=st.booleans())
def test_templates_build_the_table_a_plain_fill_builds(unit, lo, extra, tail, json):
    """States of one shape (a counted repetition's copies) are stamped from one template; the
    table is the plain builder's, state for state, with UTF-8 and with the JSON encoding."""
    from ctrldec.constraints.jsonschema.strings import _json_encode

    fsm = parse_fsm(f"(?:{unit}){{{lo},{lo + extra}}}{tail}")
    encode = _json_encode if json else None
    trans, accepting = _plain_fsm_to_dfa(fsm, encode)
    dfa = fsm_to_dfa(fsm, encode)
    assert np.array_equal(dfa.trans, trans) and np.array_equal(dfa.accepting, accepting)
