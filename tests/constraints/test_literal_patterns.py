"""Patterns that are an alternation of plain words (``^(a|b)$``, an unanchored ``(az1|az2)``)
are built as a word automaton (``strings._literal_body``), not by interegular: the language must
equal a full match of the pattern's Python translation, which the rest of the compiler uses."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctrldec.constraints.jsonschema.strings import UnsupportedPattern, _literal_body, ecma_to_python, pattern_body

_CHARS = 'ab-.\\"/é😀\n'  # regex and JSON specials, a two-byte and a four-byte character, a control
_META = set("\\^$.|?*+()[]{}")


def _ecma(word: str) -> str:
    return "".join("\\" + c if c in _META else c for c in word)


@st.composite
def _patterns(draw) -> str:
    words = draw(st.lists(st.text(_CHARS, max_size=4), min_size=1, max_size=5))
    head, tail = draw(st.booleans()), draw(st.booleans())
    hat, dollar = "^" if head else "", "$" if tail else ""
    form = draw(st.sampled_from(["group", "each", "nested"]))
    if form == "group":
        return f"{hat}({'|'.join(map(_ecma, words))}){dollar}"
    if form == "each":
        return "|".join(f"{hat}{_ecma(w)}{dollar}" for w in words)
    return f"{hat}(?:({_ecma(words[0])})|({'|'.join(f'(?:{_ecma(w)})' for w in words[1:]) or 'x'})){dollar}"


@settings(max_examples=300, deadline=None)
@given(pattern=_patterns(), text=st.text(_CHARS + "z", max_size=10))
def test_words_language(pattern: str, text: str) -> None:
    dfa = _literal_body(pattern)
    assert dfa is not None, pattern
    body = json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8")
    assert dfa.matches(body) == (re.fullmatch(ecma_to_python(pattern), text) is not None), (pattern, text)


@settings(max_examples=100, deadline=None)
@given(pattern=_patterns(), data=st.data())
def test_words_found_inside_text(pattern: str, data) -> None:
    """Texts made around the pattern's own words, where the search semantics matter."""
    words = [w for w in re.split(r"(?<!\\)[|()^$]|\(\?:", pattern) if w]
    if not words:
        return
    word = re.sub(r"\\(.)", r"\1", data.draw(st.sampled_from(words)))
    text = data.draw(st.text(_CHARS, max_size=3)) + word + data.draw(st.text(_CHARS, max_size=3))
    body = json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8")
    assert _literal_body(pattern).matches(body) == (re.fullmatch(ecma_to_python(pattern), text) is not None)


@pytest.mark.parametrize("pattern", [r"a.b", r"\d+", r"[ab]", r"ab*", r"^a|b$", r"(a)(b)", r"a{2}", r"\x61b"])
def test_other_patterns_are_left_to_the_regex_compiler(pattern: str) -> None:
    assert _literal_body(pattern) is None
    assert pattern_body(pattern).matches(b"ab") == (re.fullmatch(ecma_to_python(pattern), "ab") is not None)


@pytest.mark.parametrize("pattern", [r"(?=a)a", r"\bab"])
def test_unsupported_patterns_still_raise(pattern: str) -> None:
    assert _literal_body(pattern) is None
    with pytest.raises(UnsupportedPattern):
        pattern_body(pattern)
