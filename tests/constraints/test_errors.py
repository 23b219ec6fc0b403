"""Bad grammars and regexes: a GrammarError naming the rule or terminal and the line."""

from __future__ import annotations

import pytest

import ctrldec
from ctrldec import GrammarError


def error(text: str) -> GrammarError:
    with pytest.raises(GrammarError) as info:
        ctrldec.Grammar(text).tables()
    return info.value


def test_syntax_error_names_the_line():
    e = error('start: "a"\nb: "x" %%\n')
    assert e.line == 2 and "syntax" in str(e).lower() or "Unexpected" in str(e)


def test_undefined_rule_names_it_and_its_line():
    e = error('start: "a" item\n')
    assert "item" in str(e) and e.line == 1


def test_lookaround_terminal_names_terminal_and_line():
    e = error('start: WORD\n\nWORD: /(?<=x)a+/\n')
    assert "WORD" in str(e) and "lookaround" in str(e) and e.line == 3


def test_backreference_terminal_is_refused():
    e = error('start: TWICE\nTWICE: /(a)\\1/\n')
    assert "TWICE" in str(e) and e.line == 2


def test_empty_language_is_refused():
    e = error('start: "a" loop\nloop: loop "b"\n')
    assert "empty" in str(e) and e.line == 1


def test_terminal_matching_empty_string_is_refused():
    e = error("start: A\nA: /a*/\n")
    assert "A" in str(e) and "empty string" in str(e) and e.line == 2


def test_reduce_reduce_conflict_is_reported():
    e = error('start: a | b\na: "x"\nb: "x"\n')
    assert "LALR" in str(e)


def test_regex_errors():
    with pytest.raises(GrammarError, match="lookaround"):
        ctrldec.Regex(r"a(?=b)").tables()
    with pytest.raises(GrammarError, match="invalid regex"):
        ctrldec.Regex(r"[a").tables()


def test_nested_repetition_hits_the_compile_budget():
    """A regex whose automaton takes minutes to build fails within the budget, naming it."""
    from ctrldec.limits import Limits

    with pytest.raises(GrammarError, match=r"regex /\(\(a\{1,50\}.* exceeds the compile budget"):
        ctrldec.Regex("((a{1,50}){1,50}){1,50}b", limits=Limits(max_seconds=1.0)).tables()
    text = 'start: A "b"\nA: /((a{1,50}){1,50}){1,50}/\n'
    with pytest.raises(GrammarError, match="exceeds the compile budget"):
        ctrldec.Grammar(text, limits=Limits(max_seconds=1.0)).tables()


def test_empty_grammar_is_refused():
    assert "no rule 'start'" in str(error(""))


def test_missing_grammar_file():
    with pytest.raises(GrammarError, match="cannot read"):
        ctrldec.Grammar.from_file("/no/such/file.lark")


def test_grammar_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.lark"
    path.write_text('start: "a" missing\n')
    with pytest.raises(GrammarError, match="bad.lark"):
        ctrldec.Grammar.from_file(path).tables()


def test_a_long_chain_of_rules_compiles():
    """Lark's LALR analysis recurses once per link of a chain of rules: 1,500 chained rules used
    to end in a bare RecursionError (Python's limit is 1,000); it now runs with a deeper limit."""
    from ctrldec.bench.memory import big_grammar

    g = ctrldec.Grammar(big_grammar(1_500))
    assert g.matches("w0w1x2") and g.matches("w0" + "".join(f"w{i}" for i in range(1, 1_499)) + "end")
    assert not g.matches("w0w2")


def test_a_long_chain_of_refs_compiles():
    """1,000 ``$defs`` each referring to the next used to fail as "nests too deeply"."""
    from ctrldec.bench.memory import deep_schema

    c = ctrldec.JSONSchema(deep_schema(1_000))
    assert c.matches('{"v":1,"next":{"v":2}}') and not c.matches('{"next":{"v":2}}')


def test_the_compile_budget_bounds_memory():
    """A schema whose grammar grows quadratically (optional properties in schema order: each
    position's LR item set lists every later key) stops at the memory bound, not at the
    machine's."""
    from ctrldec.engine.bytedfa import resident_bytes
    from ctrldec.limits import Limits

    if resident_bytes() is None:
        pytest.skip("this platform does not report the resident set")
    schema = {"type": "object", "properties": {f"p{i:05d}": {"type": "integer"} for i in range(40_000)}}
    with pytest.raises(ctrldec.SchemaError, match="memory budget"):
        ctrldec.JSONSchema(schema, limits=Limits(max_memory=64 << 20, max_seconds=60)).tables()
