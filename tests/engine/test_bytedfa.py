"""Byte DFAs agree with Python's regex engine on whole-string matches, over UTF-8 bytes."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ctrldec.engine.bytedfa import compile_regex, without_empty

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
