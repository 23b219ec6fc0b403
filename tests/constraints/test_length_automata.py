"""``minLength`` / ``maxLength`` string bodies (``strings._length_dfa``), built as one array:
the language is every JSON string body of ``lo`` to ``hi`` characters, an escape counting as the
one character it stands for (a character past U+FFFF is written raw: its surrogate-pair escape
is left out by design, ``bytedfa.json_char``)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ctrldec.constraints.jsonschema.strings import _length_dfa


def _escaped(text: str, ascii_only: bool) -> bytes:
    """``text`` as a JSON string body, escaped as ``json.dumps`` does; with ``ascii_only``, every
    non-ASCII character below U+10000 as ``\\uXXXX`` too."""
    parts = (json.dumps(c, ensure_ascii=ascii_only and ord(c) < 0x10000)[1:-1] for c in text)
    return "".join(parts).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=12),
    ascii_only=st.booleans(),
    lo=st.integers(0, 8),
    width=st.one_of(st.none(), st.integers(0, 8)),
)
def test_length_language(text: str, ascii_only: bool, lo: int, width: int | None) -> None:
    hi = None if width is None else lo + width
    body = _escaped(text, ascii_only)
    want = lo <= len(text) and (hi is None or len(text) <= hi)
    assert _length_dfa(lo, hi).matches(body) == want


@given(st.integers(0, 6), st.one_of(st.none(), st.integers(0, 6)))
def test_length_trimmed(lo: int, width: int | None) -> None:
    """Every state is reached from the start and can still reach a final state (a trim DFA, as
    the rest of the engine assumes)."""
    dfa = _length_dfa(lo, None if width is None else lo + width)
    n = dfa.n_states
    reach, stack = {0}, [0]
    while stack:
        for x in set(dfa.trans[stack.pop()].tolist()) - {-1} - reach:
            reach.add(x)
            stack.append(x)
    live = set(dfa.accepting.nonzero()[0].tolist())
    changed = True
    while changed:
        changed = False
        for s in range(n):
            if s not in live and live & set(dfa.trans[s].tolist()):
                live.add(s)
                changed = True
    assert reach == set(range(n)) == live
