"""Each grammar in grammars/: strings it must accept and reject, checked against Lark too."""

from __future__ import annotations

from pathlib import Path

import lark
import pytest

import ctrldec

GRAMMARS = Path(__file__).resolve().parents[2] / "grammars"

CASES = {
    "json": (
        ['{"a": [1, 2.5e3, "x\\u00e9"], "b": null}', ' [true, false] ', '"héllo ☃"', "-0.0", '{}'],
        ['{"a": }', "[1,]", "01", "{'a': 1}", '"\\x"', "tru", '"a\nb"'],
    ),
    "json_compact": (
        ['{"a":[1,2,{"b":null}]}', '"x"', "-0.5e+3", "[]"],
        ['{"a": 1}', "[1,]", "01", '{"a"}', " 1"],
    ),
    "arithmetic": (
        ["1+2*3", "-(4.5 - 2) ^ 2 / 3", "((1))", "2^3^2", "--1"],
        ["1+", "(1", "1..2", "01", "1 2", "*3"],
    ),
    "csv": (
        ["a,b,c\n1,2,3", 'name,"quoted, with comma","a ""quote"""\r\nx,,z\n', ",,", "single", ""],
        ['a,"b', 'a,"b"c', '"a"b'],
    ),
    "sql_select": (
        [
            "SELECT * FROM users",
            "select name, count(*) as n from users as u join orders as o on u.id = o.user_id "
            "where age >= 18 and name like 'A%' group by name order by n desc limit 10;",
            "SELECT a FROM t WHERE b IS NOT NULL OR c IN (1, 2, 'x')",
            "select fromage from t",
        ],
        ["SELECT FROM t", "SELECT a b FROM t", "select * from", "SELECT * FROM t LIMIT x", "SELECT * FROM t u"],
    ),
    "python_expr": (
        ["f(x, y=2)[0].attr", "a if b else c", "not x in [1, 2, 'a']", '{1: (2,), "k": ()}', "x ** -2 // 3", "a is not None"],
        ["f(", "x +", "lambda: 1", "a = 1", "[1,,2]", "1 2"],
    ),
    "chess": (
        ["1. e4 e5 2. Nf3 Nc6 3. Bb5 a6", "1. d4 d5 2. c4 dxc4 3. e8=Q+ Kxe8 4. O-O-O O-O 1-0", "1. Qh5#"],
        ["1. e9", "1.", "e4", "1. Nf3 Nc6 Bb5", "1. O-O-O-O", "1. Rxh3h3", "1.e4"],
    ),
}


def test_every_shipped_grammar_has_cases():
    assert {p.stem for p in GRAMMARS.glob("*.lark")} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_grammar_accepts_and_rejects(name):
    good, bad = CASES[name]
    g = ctrldec.Grammar.builtin(name)
    reference = lark.Lark((GRAMMARS / f"{name}.lark").read_text(), parser="lalr")
    for text in good:
        assert g.matches(text), f"{name} should accept {text!r}"
        reference.parse(text)  # ctrldec's language stays inside Lark's
        for cut in range(len(text) + 1):
            assert g.is_prefix(text[:cut])
    for text in bad:
        assert not g.matches(text), f"{name} should reject {text!r}"


def test_builtin_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ctrldec.GrammarError, match="json_compact"):
        ctrldec.Grammar.builtin("nope")


def test_regex_constraint_common_uses():
    date = ctrldec.Regex(r"\d{4}-\d{2}-\d{2}")
    assert date.matches("2026-11-27") and not date.matches("2026-1-27")
    phone = ctrldec.Regex(r"^\+?[0-9]{1,3}[ -]?[0-9]{3}[ -]?[0-9]{4}$")
    assert phone.matches("+1 555 1234") and not phone.matches("555")
    assert ctrldec.Regex(r"(yes|no)?").matches("")  # a pattern that matches the empty string
    assert ctrldec.Regex(r"a\$").matches("a$")  # an escaped dollar is not an anchor
