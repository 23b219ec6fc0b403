"""Length-counted strings built on demand (``CountedString``): the same masks as the tabulated
automaton, whatever the count, near both bounds and far from them."""

from __future__ import annotations

import json

import jsonschema
import pytest
from helpers import byte_level_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctrldec
from ctrldec.constraints import tokenizer_info
from ctrldec.constraints.jsonschema import compiler
from ctrldec.engine import lexer as lexer_module
from ctrldec.engine.bytedfa import CountedString, LazyDFA
from ctrldec.engine.lexer import VIRTUAL


def _schema(lo: int, hi: int | None, hi2: int, extra: dict | None = None) -> dict:
    d = {"type": "string", "minLength": lo} | ({"maxLength": hi} if hi is not None else {}) | (extra or {})
    return {"type": "object", "properties": {"d": d, "e": {"type": ["string", "null"], "maxLength": hi2}}, "required": ["d"]}


@pytest.fixture
def counted_everywhere(monkeypatch):
    """Every length bound past 2 characters counted lazily, so small bounds exercise it."""
    monkeypatch.setattr(compiler, "LAZY_LENGTH_FROM", 2)


def _uncached(schema: dict, info):
    """Compiled afresh (compiled grammars are cached by schema, not by the module's bounds)."""
    from ctrldec.constraints import grammar

    grammar.clear_caches()
    return ctrldec.JSONSchema(schema).compile(info)


def _texts(lo: int, hi: int | None) -> list[str]:
    """Documents whose string sits at, before and after both bounds, in several encodings."""
    out = []
    top = hi if hi is not None else lo + 30
    for n in sorted({0, 1, lo - 1, lo, lo + 1, (lo + top) // 2, top - 1, top, top + 1}):
        if n < 0:
            continue
        for unit in ("a", "é", "\\n", "\\u00e9", "😀", "ab c"):
            body = (unit * n)[: n * len(unit)]
            out.append('{"d":"' + body + '","e":null}')
    return out


def _same_masks(lazy, dense, info, text: str) -> int:
    """Compare masks token by token; how many of the lazy matcher's states were folded."""
    ids = info.encode(text)
    a, b = lazy.matcher(), dense.matcher()
    folded = 0
    for i, t in enumerate(ids + [None]):
        folded += any(x >= VIRTUAL for _, x in a._configs)
        assert (a.mask() == b.mask()).all(), (text, i)
        assert a.is_accepting() == b.is_accepting() and a.completion_bound() == b.completion_bound(), (text, i)
        if t is None or not b.accepts(t):
            assert t is None or not a.accepts(t), (text, i)
            return folded
        a.advance(t)
        b.advance(t)
    return folded


@pytest.mark.parametrize(
    ("lo", "hi", "extra"),
    [(0, 40, None), (5, 60, None), (12, 150, None), (30, None, None),
     (0, 60, {"pattern": "^[a-z ]*$"}), (9, 120, {"pattern": "^(?:\\S+\\s)*\\S+$"}), (3, 80, {"format": "email"})],
)  # fmt: skip
def test_lazy_masks_equal_the_tabulated_ones(counted_everywhere, lo, hi, extra):
    info = tokenizer_info(byte_level_tokenizer())
    lazy = ctrldec.JSONSchema(_schema(lo, hi, 20, extra)).compile(info)
    assert lazy.lexer.lazy
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compiler, "LAZY_LENGTH_FROM", 10**9)
        dense = _uncached(_schema(lo, hi, 20, extra), info)
    assert not dense.lexer.lazy
    texts = _texts(lo, hi)
    if extra and "format" in extra:
        texts = [t.replace('"d":"', '"d":"x@') for t in texts]
    for text in texts:
        _same_masks(lazy, dense, info, text)


@pytest.mark.parametrize("ahead", [0, 1, 5])
@pytest.mark.parametrize(
    ("lo", "hi", "extra"),
    [(0, 40, None), (5, 60, None), (0, 60, {"pattern": "^[a-z ]*$"}), (9, 120, {"pattern": "^(?:\\S+\\s)*\\S+$"})],
)  # fmt: skip
def test_folded_counters_equal_the_tabulated_ones(counted_everywhere, monkeypatch, ahead, lo, hi, extra):
    """Folded states (no table state per character) with a look-ahead shorter than the longest
    token: masks come from unfolding them again near the upper bound, steps shift the base's
    rows, completion bounds come from the base. All must equal the tabulated automaton's."""
    monkeypatch.setattr(lexer_module, "FOLD_AHEAD", ahead)
    info = tokenizer_info(byte_level_tokenizer())
    lazy = _uncached(_schema(lo, hi, 20, extra), info)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compiler, "LAZY_LENGTH_FROM", 10**9)
        dense = _uncached(_schema(lo, hi, 20, extra), info)
    folded = 0
    for text in _texts(lo, hi):
        m = lazy.matcher()  # scalar steps first, before masks build the levels they reach
        m.advance_bytes(text[: len(text) // 2].encode())
        folded += any(x >= VIRTUAL for _, x in m._configs)
        folded += _same_masks(lazy, dense, info, text)
    assert folded  # the test reaches folded states


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lo=st.integers(0, 10), width=st.integers(0, 14), ahead=st.integers(0, 4), body=st.text(max_size=30),
       cut=st.integers(1, 7))  # fmt: skip
def test_folded_counters_agree_with_the_validator(lo, width, ahead, body, cut):
    """Any split of the text into steps, any look-ahead: the verdict is the validator's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compiler, "LAZY_LENGTH_FROM", 2)
        mp.setattr(lexer_module, "FOLD_AHEAD", ahead)
        schema = {"type": "string", "minLength": lo, "maxLength": lo + width}
        g = ctrldec.JSONSchema(schema).tables()
        text = json.dumps(body, ensure_ascii=False).encode()
        automaton = _byte_automaton(g)
        run, node, lex = automaton._start()
        configs = ((node, lex),)
        for i in range(0, len(text), cut):
            configs = tuple(c for c in run.step_all(configs, text[i : i + cut]) if run.viable(*c))
        ok = any(run.is_accepting(*c) for c in configs)
        assert ok == (lo <= len(body) <= lo + width), (lo, width, body)


def _byte_automaton(tables):
    from ctrldec.engine.compiled import ByteAutomaton

    return ByteAutomaton(tables)


def test_a_string_of_100000_characters_costs_no_table_state_per_character(default_info):
    """Issue 17's bound: generating a string under ``maxLength: 100000`` to its full length
    grows neither the lexer's tables nor the grammar's caches with the length (it used to add
    ~9 lexer states, 12 KB, per character). Exact at the bound: one more character is refused."""
    g = ctrldec.JSONSchema({"type": "string", "maxLength": 100_000}).compile(default_info)
    (unit,) = default_info.encode("aaaa")
    m = g.matcher()
    m.advance(default_info.encode('"')[0])
    for n in range(0, 2_000, 4):
        m.mask()
        m.advance(unit)
    states, cached = g.lexer.n_states, g.memory_size_bytes()
    for n in range(2_000, 100_000, 4):
        assert m.accepts(unit)
        m.advance(unit)
        if n % 5_000 == 0:
            m.mask()
            m.completion_bound()
    assert not m.accepts(unit) and not m.mask()[unit >> 5] >> (unit & 31) & 1
    assert g.lexer.n_states - states < 3_000 and g.memory_size_bytes() - cached < 20 * 2**20
    assert m.accepts(default_info.encode('"')[0])


def test_lazy_masks_with_the_default_tokenizer(counted_everywhere, default_info):
    """81-byte tokens: the canonical (count-free) region starts only far from the bounds."""
    lazy = ctrldec.JSONSchema(_schema(3, 200, 10)).compile(default_info)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compiler, "LAZY_LENGTH_FROM", 10**9)
        dense = _uncached(_schema(3, 200, 10), default_info)
    for text in ['{"d":"' + "word " * 40 + '"}', '{"d":"' + "é" * 199 + 'x"}', '{"d":"' + "xy" * 100 + 'z"}', '{"d":"ab","e":"' + "q" * 11 + '"}']:
        _same_masks(lazy, dense, default_info, text)


def test_shift_of_lazy_states_is_known_once_built_and_interns_no_chain(counted_everywhere):
    """A lazy state's shift (the next count) is asked of its automaton when the state is built:
    every built one knows it, and reading the table again adds no states. (Asked of every new
    state, it had interned the next count each time, one more per read, 25,000 times over 500
    schemas' masks.)"""
    info = tokenizer_info(byte_level_tokenizer())
    grammar = _uncached(_schema(0, 400, 20), info)  # far from the bound: the chain would go on
    lexer = grammar.lexer
    assert lexer.lazy
    m = grammar.matcher()
    for b in '{"d":"abcdefgh'.encode():
        m.mask()
        m.advance_bytes(bytes([b]))
    shift = lexer.shift()
    n = lexer.n_states
    for _ in range(3):
        assert lexer.shift() is shift and lexer.n_states == n  # no state interned by reading it
    lazy = [s for s in range(n) if lexer._single_lazy(s) and lexer.built[s]]
    assert lazy, "the text no longer reaches a lazy state"
    for s in lazy:
        assert shift[s] == lexer._lazy_shift(s)

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lo=st.integers(0, 12), width=st.integers(0, 12), body=st.text(max_size=30))
def test_counted_string_agrees_with_the_validator(lo, width, body):
    hi = lo + width
    dfa = CountedString(lo, hi)
    text = json.dumps(body, ensure_ascii=False).encode()
    assert dfa.matches(text) == (lo <= len(body) <= hi), (lo, hi, body)
    assert CountedString(lo, None).matches(text) == (len(body) >= lo)
    escaped = json.dumps(body).encode()  # every non-ASCII character as \\uXXXX
    surrogates = any(ord(ch) > 0xFFFF for ch in body)
    assert dfa.matches(escaped) == (lo <= len(body) <= hi and not surrogates), (lo, hi, body)


def test_long_bounds_compile_without_relaxation(default_info):
    """JSONSchemaBench: maxLength 1000, 65535 and 1,000,000, minLength 1000 (sp_205, o42568,
    string2, ...) were refused; now enforced exactly, and only the reached part is built."""
    schema = {"type": "object", "properties": {
        "a": {"type": "string", "maxLength": 1_000_000}, "b": {"type": ["string", "null"], "maxLength": 65535},
        "c": {"type": "string", "minLength": 1000}}}  # fmt: skip
    c = ctrldec.JSONSchema(schema)
    g = c.compile(default_info)
    assert c.relaxations == [] and g.lexer.n_states < 20_000
    check = jsonschema.Draft202012Validator(schema)
    for doc in ({"a": "x" * 3000}, {"b": None, "c": "y" * 1000}, {"c": "y" * 999}, {"b": "z" * 5000}):
        text = json.dumps(doc, separators=(",", ":"))
        m = g.matcher()
        ok = all(m.accepts(t) and (m.advance(t) or True) for t in default_info.encode(text)) and m.is_accepting()
        assert ok == check.is_valid(doc), doc


def test_counted_pattern_and_format():
    """A pattern or format with long bounds (JSONSchemaBench o6232: an email of at most 320)."""
    _agrees_long({"type": "string", "format": "email", "maxLength": 320},
                 ["a@b.co", "x" * 300 + "@e.org", "x" * 310 + "@e.org", "no-at-sign", ""])
    _agrees_long({"type": "string", "pattern": "^(ab)+$", "minLength": 5, "maxLength": 1000},
                 ["ab", "abab", "ababab", "ab" * 500, "ab" * 501, "aba"])
    _agrees_long({"type": "string", "pattern": "^[a-z]+$", "minLength": 300}, ["a" * 299, "a" * 300, "a" * 900 + "B"])
    with pytest.raises(ctrldec.SchemaError, match="no JSON value"):  # no word of odd length
        ctrldec.JSONSchema({"type": "string", "pattern": "^(ab)+$", "minLength": 1001, "maxLength": 1001}).tables()
    with pytest.raises(ctrldec.SchemaError, match="minimum length over 1024"):
        ctrldec.JSONSchema({"type": "string", "pattern": "^a", "minLength": 2000}).tables()


def _agrees_long(schema: dict, values: list[str]) -> None:
    c = ctrldec.JSONSchema(schema)
    check = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for v in values:
        assert c.matches(json.dumps(v)) == check.is_valid(v), (schema, v[:20], len(v))
    assert c.relaxations == []


def test_oneof_of_two_counted_strings_is_refused_in_strict_mode():
    schema = {"oneOf": [{"type": "string", "maxLength": 1000}, {"type": "string", "minLength": 500}]}
    with pytest.raises(ctrldec.SchemaError, match="length-counted string"):
        ctrldec.JSONSchema(schema).tables()
    assert isinstance(CountedString(1, 2), LazyDFA)


@pytest.mark.parametrize(
    "schema",
    [{"type": "string", "pattern": "ab", "minLength": 60, "maxLength": 300},
     {"type": "string", "pattern": "^[a-z\\\\n é]*$", "minLength": 40, "maxLength": 200},
     {"type": "array", "items": {"type": "string", "maxLength": 90}}],
)  # fmt: skip
def test_masks_agree_with_token_checks_between_scalar_steps(schema):
    """Scalar steps (``advance_bytes``) and first visits (``safe_closed``) build lexer states
    outside the mask walk: masks computed after them must still equal token-by-token checks
    (a review found a walk reading tables grown under it)."""
    import random

    info = tokenizer_info(byte_level_tokenizer())
    rng = random.Random(0)
    pieces = ["\\n", "\\u00e9", "a", "b", "é", " ", "ab", "zz", "😀"]
    for trial in range(4):
        m = _uncached(schema, info).matcher()
        oracle = _uncached(schema, info)
        text = b'["' if schema["type"] == "array" else b'"'
        assert m.advance_bytes(text)
        for _ in range(40):
            piece = rng.choice(pieces).encode()
            if not m.advance_bytes(piece):
                continue
            text += piece
            check = oracle.matcher()
            assert check.advance_bytes(text)
            expected = {t for t in range(info.vocab_size) if check.accepts(t)}
            assert set(m.allowed_token_ids().tolist()) == expected, (schema, text)
