"""JSONSchema: valid documents accepted, invalid ones rejected, checked against `jsonschema`."""

from __future__ import annotations

import json
import time
import warnings

import jsonschema
import pytest
from helpers import byte_level_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctrldec
from ctrldec import GrammarError, SchemaError
from ctrldec.constraints import tokenizer_info
from ctrldec.constraints.grammar import clear_caches
from ctrldec.limits import Limits

# Schemas whose every keyword ctrldec enforces exactly (no relaxation): the grammar must agree
# with the reference validator on every instance.
EXACT = [
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": -3, "exclusiveMaximum": 7}, "s": {"type": "string", "maxLength": 3}}, "required": ["n"]},
    {"type": "array", "items": {"type": "number", "multipleOf": 0.5}, "minItems": 1, "maxItems": 3},
    {"oneOf": [{"type": "integer"}, {"minimum": 2}]},
    {"anyOf": [{"type": "string", "pattern": "^a"}, {"type": "boolean"}, {"type": "null"}]},
    {"not": {"type": ["string", "array"]}},
    {"enum": [1, "a", None, [1, 2], {"k": True}]},
    {"type": "object", "additionalProperties": {"type": "integer"}, "properties": {"x": {"type": "string"}}},
    {"type": "object", "patternProperties": {"^a": {"type": "integer"}, "b$": {"type": "string"}}, "additionalProperties": False},
    {"type": "object", "propertyNames": {"maxLength": 2}, "minProperties": 1, "maxProperties": 2},
    {"type": "object", "dependentRequired": {"a": ["b"]}},
    {"if": {"properties": {"k": {"const": 1}}, "required": ["k"]}, "then": {"required": ["x"]}, "else": {"required": ["y"]}},
    {"type": "array", "contains": {"type": "string"}, "minContains": 1, "maxContains": 2},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
    {"$defs": {"t": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/t"}}}, "required": ["v"], "additionalProperties": False}}, "$ref": "#/$defs/t"},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"properties": {"a": {"maximum": 5}}}]},
    {"type": "string", "format": "date"},
    {"type": "string", "format": "ipv4"},
    {"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807},
    # allOf: an unknown keyword twice, dependencies in both members, the same anyOf twice
    {"allOf": [
        {"x-note": 1, "properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}, "dependentRequired": {"a": ["b"]}, "dependentSchemas": {"b": {"required": ["x"]}}},
        {"x-note": 2, "properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}, "dependentRequired": {"a": ["k"]}, "dependentSchemas": {"b": {"required": ["n"]}}},
    ]},
    # oneOf objects told apart by a key one requires and the other forbids, or types differently
    {"oneOf": [{"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"], "additionalProperties": False},
               {"type": "object", "properties": {"x": {}}, "required": ["x"], "additionalProperties": False}]},
    {"type": "object", "oneOf": [{"required": ["a", "b"]}, {"required": ["x"], "not": {"required": ["b"]}}]},
    {"type": "object", "oneOf": [{"properties": {"k": {"type": "integer"}}, "required": ["k"]}, {"properties": {"k": {"type": "string"}}, "required": ["k"]}]},
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.sampled_from([0.5, 2.5, 7.0, -1.25, 1e3])
    | st.sampled_from(["", "a", "ab", "abc", "ba", "x", "2024-02-29", "2023-02-29", "1.2.3.4", "256.1.1.1"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["n", "s", "x", "a", "b", "ab", "k", "y", "v", "kids", "zz"]), inner, max_size=4),
    max_leaves=10,
)


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("index", range(len(EXACT)))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_schema_agrees_with_the_reference_validator(index, value):
    schema = EXACT[index]
    constraint = ctrldec.JSONSchema(schema, property_order="any", extra_properties="allow")
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    assert constraint.matches(compact(value)) == validator.is_valid(value), (schema, value)


def test_no_relaxation_in_the_exact_schemas():
    for schema in EXACT:
        c = ctrldec.JSONSchema(schema, property_order="any", extra_properties="allow")
        c.tables()
        assert c.relaxations == []


def test_json_schema_test_suite_regression_floor(shared_data):
    """The official suite (draft2020-12, the files `bench coverage` uses): at least 295 of 347."""
    from ctrldec.bench.coverage import run_suite

    report = run_suite(str(shared_data / "json-schema-test-suite" / "tests" / "draft2020-12"), byte_level_tokenizer(), engines=["ctrldec"])
    assert report["groups"] == 347
    assert report["totals"]["ctrldec"] >= 295


def test_schema_order_is_the_default():
    s = ctrldec.JSONSchema({"type": "object", "properties": {"a": {}, "b": {}}})
    assert s.matches('{"a":1,"b":2}') and not s.matches('{"b":2,"a":1}')
    assert ctrldec.JSONSchema(s.schema, property_order="any").matches('{"b":2,"a":1}')


def test_additional_properties_default_true_and_no_duplicate_known_keys():
    s = ctrldec.JSONSchema({"type": "object", "properties": {"a": {"type": "integer"}}}, extra_properties="allow")
    assert s.matches('{"a":1,"zz":"anything"}')
    assert not s.matches('{"a":1,"a":2}')  # in schema order a listed key appears once


def test_whitespace_modes():
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}}
    assert not ctrldec.JSONSchema(schema).matches('{"a": [1, 2]}')
    flexible = ctrldec.JSONSchema(schema, whitespace="flexible", max_whitespace=2)
    assert flexible.matches('{ "a": [1, 2] }') and flexible.matches('{"a":[1,2]}')
    assert not flexible.matches('{"a":     [1]}')  # bounded: at most 2 + 2 around ':'
    custom = ctrldec.JSONSchema(schema, whitespace=r"\n?")
    assert custom.matches('{\n"a":\n[1]}')


def test_strict_errors_name_the_keyword():
    cases = {
        "/properties/tags/uniqueItems": {"properties": {"tags": {"type": "array", "uniqueItems": True}}},
        "/properties/pw/format": {"properties": {"pw": {"type": "string", "format": "regex"}}},
        "/type": {"type": "strung"},
    }
    for pointer, schema in cases.items():
        with pytest.raises(SchemaError) as info:
            ctrldec.JSONSchema(schema).tables()
        assert info.value.pointer == pointer


def test_lenient_warns_and_names_each_relaxation():
    schema = {"type": "array", "items": {"type": "string", "format": "regex"}, "uniqueItems": True}
    c = ctrldec.JSONSchema(schema, lenient=True)
    with pytest.warns(UserWarning, match="uniqueItems"):
        c.tables()
    assert any("regex" in r for r in c.relaxations) and any("uniqueItems" in r for r in c.relaxations)


def test_formats_no_draft_defines_are_annotations():
    """``password`` or ``int64`` assert nothing (validators ignore them): strict mode compiles
    them, accepts any string there, and lists them in ``annotations``; nothing is relaxed."""
    schema = {"type": "object", "properties": {"pw": {"type": "string", "format": "password"},
                                               "n": {"type": "string", "format": "int64"}}, "required": ["pw"]}
    _agrees(schema, [({"pw": "x y"}, True), ({"pw": "", "n": "not a number"}, True), ({"pw": 1}, False), ({}, False)])
    c = ctrldec.JSONSchema(schema)
    c.tables()
    assert [a.split(" at ")[0] for a in c.annotations] == ["format 'password'", "format 'int64'"]
    assert "/properties/pw/format" in c.annotations[0]


def test_unsatisfiable_schema():
    with pytest.raises(SchemaError, match="no JSON value"):
        ctrldec.JSONSchema({"type": "integer", "minimum": 3, "maximum": 2}).tables()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not ctrldec.JSONSchema(False, lenient=True).matches("1")


def test_remote_references_are_refused():
    with pytest.raises(SchemaError, match="remote"):
        ctrldec.JSONSchema({"$ref": "https://example.com/other.json"}).tables()


def test_compile_budget_turns_blowups_into_errors():
    deep = {"type": "string", "pattern": "(a|b)*a(a|b){14}"}  # the classic exponential DFA
    start = time.perf_counter()
    with pytest.raises(SchemaError, match="budget"):
        ctrldec.JSONSchema(deep, max_states=2000, max_seconds=5).tables()
    assert time.perf_counter() - start < 30


def test_bad_schema_text():
    with pytest.raises(SchemaError, match="not valid JSON"):
        ctrldec.JSONSchema("{not json")


def test_pydantic_model_class():
    pydantic = pytest.importorskip("pydantic")

    class Cat(pydantic.BaseModel):
        name: str
        age: int
        indoor: bool = True

    c = ctrldec.JSONSchema(Cat)
    assert c.matches('{"name":"Tom","age":3}') and c.matches('{"name":"Tom","age":3,"indoor":false}')
    assert not c.matches('{"name":"Tom"}') and not c.matches('{"name":"Tom","age":"3"}')


def test_mask_agrees_with_accepts_on_a_schema_grammar():
    """The ambiguous (GLR-style) path: full masks equal token-by-token checks on prefixes."""
    info = tokenizer_info(byte_level_tokenizer())
    schema = EXACT[3] | {}
    for schema in (EXACT[0], EXACT[3], EXACT[11], EXACT[13]):
        compiled = ctrldec.JSONSchema(schema, property_order="any").compile(info)
        fresh = ctrldec.JSONSchema(schema, property_order="any", max_states=199_999).compile(info)
        docs = {0: {"n": 5, "s": "ab"}, 3: "abc", 11: ["x", 1, "y"], 13: {"v": 1, "kids": [{"v": 2}]}}
        doc = compact(docs[EXACT.index(schema)])
        ids = info.encode(doc)
        for cut in range(len(ids) + 1):
            a, b = compiled.matcher(), fresh.matcher()
            for t in ids[:cut]:
                a.advance(t)
                b.advance(t)
            allowed = set(a.allowed_token_ids().tolist())
            assert allowed == {t for t in range(info.vocab_size) if b.accepts(t)}, (schema, cut)
            assert (ids[cut] if cut < len(ids) else info.eos_token_ids[0]) in allowed


def _agrees(schema, cases, validator=jsonschema.Draft202012Validator):
    """The constraint (strict: nothing relaxed) and the reference validator agree on every case."""
    c = ctrldec.JSONSchema(schema, property_order="any", extra_properties="allow")
    check = validator(schema, format_checker=jsonschema.FormatChecker())
    for value, valid in cases:
        assert check.is_valid(value) == valid, (schema, value)
        assert c.matches(compact(value)) == valid, (schema, value)
    assert c.relaxations == []


def test_oneof_branch_of_another_type_does_not_remove_objects():
    """JSONSchemaBench component_spec: a string branch beside object branches meant 'every
    object fails it', but was read as 'every object passes it', so no object was accepted."""
    schema = {"oneOf": [{"type": "string"}, {"type": "object", "required": ["a"]}, {"type": "object", "required": ["b"]}]}
    _agrees(schema, [({"a": 1}, True), ({"b": 1}, True), ({"a": 1, "b": 2}, False), ({}, False), ("x", True), (1, False)])
    enum_branch = {"oneOf": [{"enum": ["x", 1]}, {"type": "object", "required": ["a"]}, {"type": "object", "required": ["b"]}]}
    _agrees(enum_branch, [({"a": 1}, True), ({"a": 1, "b": 2}, False), ("x", True), ("y", False)])


def test_draft07_ref_ignores_its_siblings():
    """JSONSchemaBench o38538: under draft-07 a $ref's siblings are ignored; in 2020-12 they apply."""
    inner = {"type": "object", "properties": {"p": {"type": "boolean"}}}
    schema = {"definitions": {"o": inner}, "$ref": "#/definitions/o", "additionalProperties": False}
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", **schema}
    _agrees(draft7, [({"p": True}, True), ({"q": 1}, True), ({"p": 1}, False)], jsonschema.Draft7Validator)
    _agrees(schema, [({"p": True}, False), ({}, True)])
    nested = {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"o": inner},
              "type": "array", "items": {"$ref": "#/definitions/o", "additionalProperties": False}}
    _agrees(nested, [([{"p": True}], True), ([{"p": 1}], False)], jsonschema.Draft7Validator)


def test_draft04_integers_have_no_fraction():
    """Held-out data: under draft-04 (and 3) an integer is written without a fraction, so
    ``"type": "integer"`` rejects 12345.0; from draft 6 on it is accepted."""
    d4 = {"$schema": "http://json-schema.org/draft-04/schema#"}
    v4 = jsonschema.Draft4Validator
    _agrees({**d4, "type": "integer"}, [(12345, True), (12345.0, False), (-7, True), (1.5, False)], v4)
    _agrees({**d4, "type": "integer", "minimum": 1, "maximum": 9}, [(3, True), (3.0, False), (10, False)], v4)
    _agrees({**d4, "type": "integer", "multipleOf": 2}, [(4, True), (4.0, False), (3, False)], v4)
    _agrees({**d4, "type": "integer", "enum": [2, 3.0]}, [(2, True), (2.0, False), (3, True), (3.0, False)], v4)
    _agrees({**d4, "enum": [2]}, [(2, True), (2.0, True)], v4)
    _agrees({**d4, "type": ["integer", "string"]}, [(5, True), (5.0, False), ("x", True)], v4)
    _agrees({**d4, "type": "object", "properties": {"n": {"type": "integer"}}}, [({"n": 1}, True), ({"n": 1.0}, False)], v4)
    d7 = {"$schema": "http://json-schema.org/draft-07/schema#"}
    _agrees({**d7, "type": "integer"}, [(12345, True), (12345.0, True)], jsonschema.Draft7Validator)
    _agrees({"type": "integer", "enum": [2]}, [(2, True), (2.0, True)])


def test_numbers_with_an_exponent_under_sign_bounds():
    """JSONSchemaBench o57716: `minimum: 0` rejected 1e-06 (Python's float repr)."""
    _agrees({"type": "number", "minimum": 0}, [(1e-06, True), (2.5e20, True), (0.0, True), (-1e-06, False), (-2.5e20, False)])
    _agrees({"type": "number", "exclusiveMaximum": 0}, [(-1e-06, True), (1e-06, False), (0.0, False)])
    c = ctrldec.JSONSchema({"type": "number", "exclusiveMinimum": 0})
    assert c.matches("1E+3") and c.matches("0.5e-7") and not c.matches("0e5") and not c.matches("0.0e1")
    # a bound away from 0 would need digit comparisons: exponents stay out (never wrongly in)
    bounded = ctrldec.JSONSchema({"type": "number", "minimum": 0, "maximum": 1})
    assert bounded.matches("0.000001") and not bounded.matches("2e0") and not bounded.matches("1e-06")


def test_pattern_anchors_inside_a_top_level_group():
    """JSONSchemaBench o27402: `(^gs://.+)|(^https?://.+)` was relaxed (the anchors sat inside groups)."""
    _agrees(
        {"type": "string", "pattern": "(^gs://(.+))|(?:(^https?://.+))"},
        [("gs://b/x", True), ("http://x", True), ("https://x", True), ("ftp://x", False), ("xgs://b", False), ("gs://", False)],
    )
    with pytest.raises(SchemaError, match="anchor"):  # not a group that spans the alternative
        ctrldec.JSONSchema({"type": "string", "pattern": "(^a)(b)"}).tables()


def test_iri_formats():
    """JSONSchemaBench o76630: format "iri" was unknown (not enforced); "not-an-iri" has no scheme."""
    c = ctrldec.JSONSchema({"type": "string", "format": "iri"})
    assert c.matches('"https://example.com"') and c.matches('"http://例え.jp/パス?q=ü"') and c.matches('"urn:x:😀"')
    assert not c.matches('"not-an-iri"') and not c.matches('"http://a b"') and not c.matches('"http://a/\x85"')
    ref = ctrldec.JSONSchema({"type": "string", "format": "iri-reference"})
    assert ref.matches('"not-an-iri"') and ref.matches('"/パス"') and not ref.matches('"a b"')
    assert c.relaxations == [] and ref.relaxations == []


def test_max_items_beyond_64_is_exact():
    """JSONSchemaBench o9940 / o56004: maxItems 1000 and 254 were refused (one rule per position)."""
    c = ctrldec.JSONSchema({"type": "array", "items": {"type": "integer"}, "minItems": 70, "maxItems": 100})
    for n, ok in ((69, False), (70, True), (100, True), (101, False)):
        assert c.matches(compact(list(range(n)))) is ok, n
    assert c.relaxations == []


def test_negated_escape_inside_a_class():
    """JSONSchemaBench o48073: `^[\\S]+$` was refused; `[a\\S]` is `a` or any non-space."""
    _agrees({"type": "string", "pattern": "^[\\S]+$"}, [("ab", True), ("a b", False), ("", False), ("\u00e9", True)])
    _agrees({"type": "string", "pattern": "^[\\d\\W]$"}, [("1", True), ("-", True), ("a", False), ("_", False)])
    with pytest.raises(SchemaError, match="negated character class"):
        ctrldec.JSONSchema({"type": "string", "pattern": "^[^\\S]$"}).tables()


@pytest.mark.parametrize(
    ("fmt", "cases"),
    [
        ("idn-email", [("joe@example.com", True), ("用户@例子.广告", True), ("@x.com", False), ("a@", False), ("a b@c", False)]),
        ("idn-hostname", [("例子.广告", True), ("a-b.c", True), ("-a.com", False), ("a..b", False)]),
        ("uri-template", [("http://example.com/{user}{?q,lang}", True), ("/x/{+path:6}/y{#frag*}", True), ("{bad", False), ("{}", False), ("a b", False)]),
        ("json-pointer", [("", True), ("/a/b~0c/~1", True), ("a", False), ("/~2", False)]),
        ("relative-json-pointer", [("0", True), ("1/a", True), ("2#", True), ("01", False), ("-1", False), ("", False)]),
        ("url", [("https://example.com/a?b#c", True), ("HTTP://EX.COM", True), ("ftp://x.org", True), ("example.com", False), ("http://", False), ("mailto:a@b", False)]),
    ],
)
def test_more_formats(fmt, cases):
    """The spec's remaining string formats (regex aside: not a regular language) and ajv-formats'
    "url", which real schemas use (JSONSchemaBench: o55355, o50667, ...)."""
    c = ctrldec.JSONSchema({"type": "string", "format": fmt})
    for text, ok in cases:
        assert c.matches(compact(text)) is ok, (fmt, text)
    assert c.relaxations == []


@pytest.mark.parametrize("pattern", ["\\d{2}-x", "ab|é", "[0-9]{4}-[0-9]{2}", "[0-9a-f]{40}"])
def test_unanchored_pattern_masks_equal_token_checks(default_info, pattern):
    """Before an unanchored pattern matches, every safe character keeps the string alive: masks
    settle safe tokens without walking them (``LexerAutomaton.safe_closed``), exactly."""
    schema = {"type": "object", "properties": {"p": {"type": "string", "pattern": pattern}}}
    compiled = ctrldec.JSONSchema(schema, extra_properties="allow").compile(default_info)  # any order may repeat a key: "allow" keeps the two languages equal
    for body in ["", "q", "1", "12", "12-", "12-x", "a", "é", "2024-1", "x 2024-11 y", 'z\\"1', "0123456789abcdef" * 2 + "01", "é" + "f" * 39]:
        prefix = ('{"p":"' + body).encode()
        m = compiled.matcher()
        assert m.advance_bytes(prefix), body
        allowed = set(m.allowed_token_ids().tolist())
        if pattern == "[0-9a-f]{40}" and len(body) < 20:  # past 64 states to search, the shortcut still applies
            ((_, lex),) = m._configs
            assert compiled.lexer.safe_closed(lex), body
        fresh = ctrldec.JSONSchema(schema, property_order="any", extra_properties="allow").compile(default_info).matcher()
        assert fresh.advance_bytes(prefix)
        expected = {t for t in range(default_info.vocab_size) if fresh.accepts(t)}
        assert allowed == expected, (pattern, body, sorted(allowed ^ expected)[:10])


def test_relaxations_reach_every_instance_once():
    info = tokenizer_info(byte_level_tokenizer())
    schema = {"type": "array", "uniqueItems": True}
    clear_caches()  # the first instance compiles, the second is served the cached tables
    for _ in range(2):
        s = ctrldec.JSONSchema(schema, lenient=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s.compile(info)
            s.matcher(info)
            s.matches("[1]")
        assert [str(w.message) for w in caught] == ["JSONSchema relaxed uniqueItems (duplicates are not prevented) at /uniqueItems"]
        assert s.relaxations == ["uniqueItems (duplicates are not prevented) at /uniqueItems"]


def test_limits_change_what_is_exact_and_are_part_of_the_cache_key():
    schema = {"type": "array", "maxItems": 10}
    assert ctrldec.JSONSchema(schema).matches("[" + ",".join(["1"] * 10) + "]")
    with pytest.raises(SchemaError, match="maxItems 10 beyond 4"):
        ctrldec.JSONSchema(schema, limits=Limits(max_items=4)).tables()
    loose = ctrldec.JSONSchema(schema, lenient=True, limits=Limits(max_items=4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert loose.matches("[" + ",".join(["1"] * 11) + "]") and loose.relaxations


def test_budget_shorthands_override_the_limits():
    s = ctrldec.JSONSchema({}, limits=Limits(max_seconds=3.0), max_states=500)
    assert (s.limits.max_seconds, s.limits.max_states, s.limits.max_items) == (3.0, 500, Limits().max_items)


def test_lark_analysis_input_is_bounded():
    text = "start: a | b\na: \"x\"\nb: \"y\"\n"
    assert ctrldec.Grammar(text).matches("x")
    with pytest.raises(GrammarError, match="max_grammar_rules"):
        ctrldec.Grammar(text, limits=Limits(max_grammar_rules=2)).tables()


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_items"):
        Limits(max_items=0)


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        # draft-04: ``id`` sets the base URI, a relative $ref resolves against it
        ({"$schema": "http://json-schema.org/draft-04/schema#", "id": "http://x.test/root.json",
          "definitions": {"n": {"id": "sub/", "definitions": {"s": {"type": "string"}}, "type": "object",
                                "properties": {"a": {"$ref": "#/definitions/s"}}}},
          "$ref": "#/definitions/n"}, '{"a":"x"}', '{"a":1}'),
        # draft-07: a plain-name fragment in $id is an anchor
        ({"$schema": "http://json-schema.org/draft-07/schema#",
          "definitions": {"i": {"$id": "#int", "type": "integer"}}, "items": {"$ref": "#int"}, "type": "array"},
         "[1,2]", '["a"]'),
        # 2020-12: $anchor inside an embedded resource, reached through the resource's URI
        ({"$id": "https://x.test/a", "$defs": {"b": {"$id": "b", "$defs": {"c": {"$anchor": "leaf", "enum": [7]}}}},
          "$ref": "b#leaf"}, "7", "8"),
    ],
)  # fmt: skip
def test_references_resolve_as_the_draft_says(schema, good, bad):
    """``$ref`` goes through ``referencing`` with the schema's draft (issue 17)."""
    c = ctrldec.JSONSchema(schema)
    assert c.matches(good) and not c.matches(bad)


def test_a_reference_to_a_drafts_meta_schema_resolves_offline():
    c = ctrldec.JSONSchema({"$schema": "http://json-schema.org/draft-07/schema#",
                            "properties": {"s": {"$ref": "http://json-schema.org/draft-07/schema#/definitions/nonNegativeInteger"}}})  # fmt: skip
    assert c.matches('{"s":3}') and not c.matches('{"s":-1}')
    with pytest.raises(SchemaError, match="points to nothing"):
        ctrldec.JSONSchema({"$ref": "#/$defs/missing"}).tables()
    with pytest.raises(SchemaError, match="no anchor"):
        ctrldec.JSONSchema({"$ref": "#nowhere"}).tables()


ESCAPED_KEYS = [
    {"type": "object", "properties": {"a": {"type": "integer"}, "/": {"type": "integer"}, "é": {"type": "integer"}}, "additionalProperties": True},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "patternProperties": {"^b$": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "dependentRequired": {"b": ["x"]}},
    {"type": "object", "propertyNames": {"anyOf": [{"not": {"const": "a"}}, {"pattern": "^b"}]}},
    {"not": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}},
]


@pytest.mark.parametrize("index", range(len(ESCAPED_KEYS)))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.dictionaries(st.sampled_from(["a", "b", "/", "é", "ba", "x"]), st.sampled_from([1, "s", None]), max_size=3), seed=st.integers(0, 2**32))
def test_keys_written_with_escapes_are_never_accepted_wrongly(index, value, seed):
    """A key spelled with escapes names the same key: ctrldec writes one spelling of each key,
    so it may refuse an escaped spelling of a valid object, but never accepts an invalid one
    (an escaped listed key read as an extra key was accepted until 2026-12-05)."""
    import random

    from ctrldec.bench.fuzz import _respelled

    schema = ESCAPED_KEYS[index]
    c = ctrldec.JSONSchema(schema, extra_properties="allow", property_order="any")
    text = _respelled(compact(value), random.Random(seed), share=0.5)
    valid = jsonschema.Draft202012Validator(schema).is_valid(value)
    assert not c.matches(text) or valid, text
    assert c.matches(compact(value)) is valid


def test_property_names_past_the_length_bound_keep_their_pattern_when_lenient():
    """Only the bound is relaxed: the pattern still applies to every key (strict mode refuses)."""
    schema = {"type": "object", "propertyNames": {"pattern": "^x", "maxLength": 1000}}
    with pytest.warns(UserWarning, match="of a property name"):
        c = ctrldec.JSONSchema(schema, lenient=True, extra_properties="allow")
        assert c.matches('{"xy":1}') and not c.matches('{"y":1}')
    with pytest.raises(SchemaError, match="of a property name"):
        ctrldec.JSONSchema(schema, extra_properties="allow").tables()
