"""The mask is exactly the set of tokens after which a sentence can still be completed.

Oracle, independent of the engine: small grammars with finite languages are enumerated by
expanding their rules; each candidate string is lexed by a plain reference lexer (greedy, one
character of lookahead, contextual: only the terminals Lark's parser can take next, as
``Grammar`` documents) and parsed by **Lark's own interactive parser**. For random prefixes of
the resulting sentences, the mask must equal {t : prefix + bytes(t) starts some sentence}, plus
EOS exactly when the prefix is a sentence, over the whole vocabulary.
"""

from __future__ import annotations

import itertools
import os
import re

import lark
import pytest
from helpers import byte_level_tokenizer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lark.exceptions import LarkError, UnexpectedInput

import ctrldec
from ctrldec.constraints import tokenizer_info

LITERAL = st.text(alphabet='ab ,"{}', min_size=1, max_size=3)
MAX_SENTENCES = 3000


@st.composite
def finite_grammars(draw):
    """(lark text, {terminal name: literal}) for an acyclic grammar (so its language is finite)."""
    literals = draw(st.lists(LITERAL, min_size=1, max_size=5, unique=True))
    n_rules = draw(st.integers(1, 3))
    lines = []
    for r in range(n_rules):
        symbols = [f"T{i}" for i in range(len(literals))] + [f"r{k}" for k in range(r + 1, n_rules)]
        alts = draw(
            st.lists(
                st.lists(st.tuples(st.sampled_from(symbols), st.booleans()), min_size=1, max_size=3),
                min_size=1,
                max_size=3,
            )
        )
        body = " | ".join(" ".join(s + ("?" if opt else "") for s, opt in alt) for alt in alts)
        lines.append(f"{'start' if r == 0 else f'r{r}'}: {body}")
    lines += [f"T{i}: {lark_literal(lit)}" for i, lit in enumerate(literals)]
    return "\n".join(lines) + "\n", {f"T{i}": lit for i, lit in enumerate(literals)}


def lark_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def expansions(grammar: lark.Lark, literal_of: dict[str, str]) -> set[str]:
    """Every string the (acyclic) rules derive, by concatenating terminal literals."""
    by_origin: dict[str, list] = {}
    for rule in grammar.rules:
        by_origin.setdefault(rule.origin.name, []).append(rule.expansion)
    memo: dict[str, set[str]] = {}

    def strings(name: str) -> set[str]:
        if name in literal_of:
            return {literal_of[name]}
        if name not in memo:
            out: set[str] = set()
            for expansion in by_origin[name]:
                for parts in itertools.product(*(strings(s.name) for s in expansion)):
                    out.add("".join(parts))
                    if len(out) > MAX_SENTENCES:
                        raise OverflowError
            memo[name] = out
        return memo[name]

    return strings("start")


def reference_accepts(grammar: lark.Lark, literal_of: dict[str, str], text: str) -> bool:
    """Greedy contextual lexing with one character of lookahead, parsed by Lark's LALR parser."""
    parser = grammar.parse_interactive("")
    pos = 0
    while pos < len(text):
        choices = {n: lit for n, lit in literal_of.items() if n in parser.choices()}
        end = pos
        while end < len(text) and any(lit.startswith(text[pos : end + 1]) for lit in choices.values()):
            end += 1
        names = [n for n, lit in choices.items() if lit == text[pos:end]]
        if not names:
            return False
        try:
            parser.feed_token(lark.Token(names[0], text[pos:end]))
        except UnexpectedInput:
            return False
        pos = end
    try:
        parser.feed_eof()
    except UnexpectedInput:
        return False
    return True


def check_mask(constraint, info, sentences: set[bytes], prefix: bytes) -> None:
    prefixes = {s[:i] for s in sentences for i in range(len(s) + 1)}
    m = constraint.matcher(info)
    assert m.advance_bytes(prefix), f"viable prefix {prefix!r} rejected"
    allowed = set(m.allowed_token_ids().tolist())
    expected = {t for t, b in enumerate(info.token_bytes) if b and prefix + b in prefixes}
    if prefix in sentences:
        expected |= set(info.eos_token_ids)
    missing, extra = sorted(expected - allowed), sorted(allowed - expected)
    assert not missing and not extra, (
        f"prefix {prefix!r}: missing {[info.token_bytes[t] for t in missing[:10]]}, "
        f"extra {[info.token_bytes[t] for t in extra[:10]]}"
    )


@pytest.fixture(scope="module", params=["default", "built"])
def any_info(request):
    if request.param == "default":
        return request.getfixturevalue("default_info")
    return tokenizer_info(byte_level_tokenizer())


@settings(max_examples=int(os.environ.get("CTRLDEC_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(spec=finite_grammars(), data=st.data())
def test_mask_equals_enumerated_oracle_on_finite_grammars(any_info, spec, data):
    text, literal_of = spec
    try:
        grammar = lark.Lark(text, parser="lalr")
        sentences = {s.encode() for s in expansions(grammar, literal_of) if reference_accepts(grammar, literal_of, s)}
    except (LarkError, OverflowError):
        assume(False)
    assume(sentences)
    constraint = ctrldec.Grammar(text)
    prefixes = sorted({s[:i] for s in sentences for i in range(len(s) + 1)})
    for prefix in data.draw(st.lists(st.sampled_from(prefixes), min_size=1, max_size=4, unique=True)):
        check_mask(constraint, any_info, sentences, prefix)
    for s in sentences:
        assert constraint.matches(s)


ATOMS = {"a": {"a"}, "b": {"b"}, " ": {" "}, "ab": {"ab"}, "é": {"é"}, "[ab]": {"a", "b"}, "[a-c]": {"a", "b", "c"}, r"\{": {"{"}, '"': {'"'}, ",": {","}}


@st.composite
def finite_regexes(draw, depth=0):
    """(pattern, its language): a regex without repetition, built with its language alongside."""
    if depth >= 3 or draw(st.booleans()):
        atom = draw(st.sampled_from(sorted(ATOMS)))
        return atom, ATOMS[atom]
    kind = draw(st.sampled_from(["cat", "alt", "opt"]))
    left, left_lang = draw(finite_regexes(depth + 1))
    if kind == "opt":
        return f"({left})?", left_lang | {""}
    right, right_lang = draw(finite_regexes(depth + 1))
    if kind == "cat":
        return f"({left}{right})", {x + y for x in left_lang for y in right_lang}
    return f"({left}|{right})", left_lang | right_lang


@settings(max_examples=int(os.environ.get("CTRLDEC_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=finite_regexes(), data=st.data())
def test_regex_mask_equals_enumerated_oracle(any_info, spec, data):
    pattern, language = spec
    assert all(re.fullmatch(pattern, s) for s in language)  # the oracle agrees with Python's re
    sentences = {s.encode() for s in language}
    constraint = ctrldec.Regex(pattern)
    prefixes = sorted({s[:i] for s in sentences for i in range(len(s) + 1)})
    for prefix in data.draw(st.lists(st.sampled_from(prefixes), min_size=1, max_size=3, unique=True)):
        check_mask(constraint, any_info, sentences, prefix)


def test_tokens_spanning_several_terminals_are_checked_terminal_by_terminal():
    """`":1` closes a string, shifts ':' and starts a number: each part must fit where it falls."""
    vocab = [b"{", b'"a', b'"', b'":', b'":1', b"1}", b"}", b"1", b""]
    info = ctrldec.TokenizerInfo(vocab, special_ids={8}, eos_token_ids=[8])
    g = ctrldec.Grammar('start: "{" STRING ":" NUMBER "}"\nSTRING: /"[a-z]*"/\nNUMBER: /[0-9]+/')
    m = g.matcher(info)
    m.advance(0)
    m.advance(1)  # {"a
    assert [vocab[t] for t in m.allowed_token_ids()] == [b'"', b'":', b'":1']
    m.advance(3)  # {"a":
    assert [vocab[t] for t in m.allowed_token_ids()] == [b"1}", b"1"]
    m.advance(5)  # {"a":1}
    assert m.allowed_token_ids().tolist() == [8] and m.is_done()


# -- ambiguous grammars (GLR-style configuration sets) ------------------------------------------

DELIMITED = ["a;", "b;", "ab;", "ba;", "aa;"]  # every literal ends with ';' and has no other ';'
OVERLAPPING = {"RA": "a{1,3};", "RB": "[ab];"}  # regexes that overlap each other and the literals


@st.composite
def ambiguous_grammars(draw):
    """An acyclic grammar, ambiguous at will, over self-delimiting terminals (so that greedy
    lexing never matters): its language is every concatenation its rules derive."""
    literals = draw(st.lists(st.sampled_from(DELIMITED), min_size=1, max_size=4, unique=True))
    regexes = draw(st.lists(st.sampled_from(sorted(OVERLAPPING)), max_size=2, unique=True))
    n_rules = draw(st.integers(1, 3))
    terms = [f"T{i}" for i in range(len(literals))] + regexes
    lines = []
    for r in range(n_rules):
        symbols = terms + [f"r{k}" for k in range(r + 1, n_rules)]
        alts = draw(st.lists(st.lists(st.sampled_from(symbols), min_size=1, max_size=3), min_size=1, max_size=4))
        lines.append(f"{'start' if r == 0 else f'r{r}'}: " + " | ".join(" ".join(a) for a in alts))
    lines += [f'T{i}: "{lit}"' for i, lit in enumerate(literals)] + [f"{n}: /{OVERLAPPING[n]}/" for n in regexes]
    return "\n".join(lines) + "\n", {f"T{i}": {lit} for i, lit in enumerate(literals)} | {
        n: {s for s in ("a;", "b;", "aa;", "aaa;") if re.fullmatch(OVERLAPPING[n], s)} for n in regexes
    }


def derive(text: str, languages: dict[str, set[str]]) -> set[str]:
    rules: dict[str, list[list[str]]] = {}
    for line in text.strip().splitlines():
        name, _, body = line.partition(":")
        if name.strip() not in languages:
            rules[name.strip()] = [alt.split() for alt in body.split("|")]

    def strings(sym: str) -> set[str]:
        if sym in languages:
            return languages[sym]
        return {"".join(p) for alt in rules[sym] for p in itertools.product(*(strings(s) for s in alt))}

    return strings("start")


@settings(max_examples=int(os.environ.get("CTRLDEC_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=ambiguous_grammars(), data=st.data())
def test_ambiguous_grammar_mask_equals_derived_language(any_info, spec, data):
    text, languages = spec
    sentences = {s.encode() for s in derive(text, languages)}
    constraint = ctrldec.Grammar(text, ambiguous=True)
    prefixes = sorted({s[:i] for s in sentences for i in range(len(s) + 1)})
    for prefix in data.draw(st.lists(st.sampled_from(prefixes), min_size=1, max_size=4, unique=True)):
        check_mask(constraint, any_info, sentences, prefix)
    for s in sentences:
        assert constraint.matches(s)


def test_ambiguous_grammar_that_lalr_refuses():
    text = 'start: a "x" | b "x" | b "y"\na: "k"\nb: "k"\n'  # "kx" has two parses: reduce/reduce
    with pytest.raises(ctrldec.GrammarError, match="LALR"):
        ctrldec.Grammar(text).tables()
    g = ctrldec.Grammar(text, ambiguous=True)
    assert g.matches("kx") and g.matches("ky") and not g.matches("kz")
