"""JSONSchema's generation policies: each only narrows the schema's language (checked against
`jsonschema`), ``extra_properties="allow"`` is the spec's language."""

from __future__ import annotations

import doctest
import json
import warnings

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from test_jsonschema import EXACT, compact, json_values

import ctrldec
from ctrldec import SchemaError
from ctrldec.constraints import jsonschema as jsonschema_module

# Objects left open (no additionalProperties): what extra_properties="forbid" narrows.
OPEN = [
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "object", "properties": {"x": {"type": "string"}}}}},
    {"type": "array", "items": {"type": "object", "properties": {"k": {}}, "required": ["k"]}},
    {"anyOf": [{"type": "object", "properties": {"a": {}}}, {"type": "object", "properties": {"b": {}}, "minProperties": 1}]},
    {"$defs": {"t": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/t"}}}}},
     "$ref": "#/$defs/t"},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["zz"]},
    {"type": "object", "properties": {"a": {}}, "unevaluatedProperties": {"type": "integer"}},
    {"type": "object", "allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}], "dependentRequired": {"a": ["k"]}},
    {"type": "object", "properties": {"k": {"type": "integer"}}, "not": {"required": ["x"]}},
    {"type": "object", "oneOf": [{"properties": {"k": {"const": 1}}, "required": ["k"]}, {"properties": {"x": {}}, "required": ["x"]}]},
    {"type": "object", "properties": {"s": {"type": "string"}}, "patternProperties": {"^a": {"type": "integer"}}},
    {"type": ["object", "null"]},
    {},
]  # fmt: skip
POLICIES = [{}, {"max_string_length": 2, "max_items": 2}]


def _valid(schema, value) -> bool:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).is_valid(value)


def _narrowed(schema, **policy) -> ctrldec.JSONSchema | None:
    """The constraint under ``policy`` (forbid by default), None where the policy leaves no instance."""
    c = ctrldec.JSONSchema(schema, property_order="any", **policy)
    try:
        c.tables()
    except SchemaError as e:
        assert "extra_properties='forbid' leaves no instance" in str(e)
        return None
    return c


def test_the_policy_empties_only_schemas_that_need_unnamed_keys():
    emptied = [s for s in EXACT + OPEN if _narrowed(s) is None]
    assert emptied == [EXACT[8]]  # propertyNames and minProperties 1, but no property named


@pytest.mark.parametrize("policy", POLICIES, ids=["forbid", "forbid+caps"])
@pytest.mark.parametrize("index", range(len(EXACT + OPEN)))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_policies_only_narrow(index, policy, value):
    schema = (EXACT + OPEN)[index]
    text = compact(value)
    narrowed = _narrowed(schema, **policy)
    if narrowed is not None and narrowed.matches(text):
        assert _valid(schema, value), (schema, value)
        assert ctrldec.JSONSchema(schema, property_order="any", extra_properties="allow").matches(text)


@pytest.mark.parametrize("index", range(len(OPEN)))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_allow_is_the_spec_language(index, value):
    """Extra keys included: "allow" compiles as the compiler did before policies existed."""
    schema = OPEN[index]
    assert ctrldec.JSONSchema(schema, property_order="any", extra_properties="allow").matches(compact(value)) == _valid(schema, value)


def test_forbid_allows_only_the_keys_a_schema_names():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    forbid, allow = ctrldec.JSONSchema(schema), ctrldec.JSONSchema(schema, extra_properties="allow")
    texts = ['{"a":1}', "{}", '{"a":1,"b":2}']
    assert [forbid.matches(t) for t in texts] == [True, True, False]
    assert [allow.matches(t) for t in texts] == [True, True, True]


def test_explicit_additional_properties_and_pattern_properties_are_kept():
    extra = ctrldec.JSONSchema({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}})
    assert extra.matches('{"a":1,"b":"x"}') and not extra.matches('{"a":1,"b":2}')
    assert ctrldec.JSONSchema({"type": "object", "additionalProperties": True}).matches('{"q":[1]}')
    patterned = ctrldec.JSONSchema({"type": "object", "properties": {"s": {}}, "patternProperties": {"^x_": {"type": "integer"}}})
    assert patterned.matches('{"s":1,"x_1":2,"x_2":3}') and not patterned.matches('{"s":1,"y":2}') and not patterned.matches('{"x_1":"a"}')
    uneval = ctrldec.JSONSchema({"type": "object", "properties": {"a": {}}, "unevaluatedProperties": {"type": "integer"}})
    assert uneval.matches('{"a":1,"c":2}') and not uneval.matches('{"a":1,"c":"x"}')


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "object", "properties": {"o": {"type": "object", "properties": {"a": {}}}}}, '{"o":{"a":1}}', '{"o":{"a":1,"b":2}}'),
        ({"type": "array", "items": {"type": "object", "properties": {"a": {}}}}, '[{"a":1},{}]', '[{"a":1},{"b":2}]'),
        ({"anyOf": [{"type": "object", "properties": {"a": {}}}, {"type": "string"}]}, '{"a":1}', '{"a":1,"b":2}'),
        ({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"},
         '{"next":{"next":{}}}', '{"next":{"next":{"x":1}}}'),
    ],
    ids=["properties", "items", "anyOf", "$ref"],
)
def test_forbid_reaches_nested_objects(schema, good, bad):
    assert ctrldec.JSONSchema(schema).matches(good) and not ctrldec.JSONSchema(schema).matches(bad)
    assert ctrldec.JSONSchema(schema, extra_properties="allow").matches(bad)


def test_type_object_alone_allows_only_the_empty_object_and_any_value_stays_open():
    assert ctrldec.JSONSchema({"type": "object"}).matches("{}") and not ctrldec.JSONSchema({"type": "object"}).matches('{"a":1}')
    assert ctrldec.JSONSchema({}).matches('{"a":{"b":1}}') and ctrldec.JSONSchema(True).matches('{"a":1}')
    assert ctrldec.JSONSchema({"type": "object", "properties": {"p": {}}}).matches('{"p":{"any":[1]}}')


def test_a_required_key_no_property_names_takes_any_value():
    s = ctrldec.JSONSchema({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["id"]})
    assert s.matches('{"a":"x","id":{"k":[1]}}') and s.matches('{"id":1}')
    assert not s.matches("{}") and not s.matches('{"id":1,"b":2}')
    dependent = ctrldec.JSONSchema({"type": "object", "properties": {"a": {}}, "dependentRequired": {"a": ["q"]}})
    assert dependent.matches('{"a":1,"q":2}') and not dependent.matches('{"q":2}')


def test_allof_members_are_merged_before_the_policy():
    named = {"type": "object", "allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]}
    assert ctrldec.JSONSchema(named).matches('{"a":1,"b":2}') and not ctrldec.JSONSchema(named).matches('{"a":1,"c":2}')
    explicit = {"type": "object", "allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}, "additionalProperties": {"type": "integer"}}]}
    c = ctrldec.JSONSchema(explicit)
    assert c.matches('{"b":1,"c":2}') and not c.matches('{"b":1,"c":"x"}')
    assert not c.matches('{"a":"x"}')  # a is not one of the second member's properties: it must be an integer
    assert c.matches('{"a":1}')


def test_a_policy_that_leaves_no_instance_is_an_error_naming_it():
    one_key = {"type": "object", "properties": {"a": {}}, "minProperties": 2}
    assert ctrldec.JSONSchema(one_key, extra_properties="allow").matches('{"a":1,"b":2}')
    for lenient in (False, True):
        with pytest.raises(SchemaError, match="extra_properties='forbid' leaves no instance.*minProperties 2") as info:
            ctrldec.JSONSchema(one_key, lenient=lenient).tables()
        assert info.value.pointer == "/"
    nested = {"type": "object", "properties": {"o": one_key}, "required": ["o"]}
    with pytest.raises(SchemaError, match="extra_properties") as info:
        ctrldec.JSONSchema(nested).tables()
    assert info.value.pointer == "/properties/o"
    assert ctrldec.JSONSchema({"type": "object", "properties": {"o": one_key}}).matches("{}")  # optional: o just never appears
    endless = {"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}, "minProperties": 1}}, "$ref": "#/$defs/n"}
    with pytest.raises(SchemaError, match="extra_properties='forbid' leaves no instance"):
        ctrldec.JSONSchema(endless).tables()
    with pytest.raises(SchemaError, match="no JSON value satisfies"):  # empty under the spec too: not the policy's doing
        ctrldec.JSONSchema({"type": "object", "properties": {"a": {}}, "minProperties": 2, "maxProperties": 1}).tables()


def test_the_policy_is_part_of_the_cache_key():
    schema = {"type": "object", "properties": {"a": {}}}
    forbid, allow = ctrldec.JSONSchema(schema), ctrldec.JSONSchema(schema, extra_properties="allow")
    assert forbid._key() != allow._key() and forbid.tables() is not allow.tables()
    assert ctrldec.JSONSchema(schema, max_items=3)._key() != forbid._key()
    assert allow.matches('{"b":1}') and not forbid.matches('{"b":1}')


def test_max_string_length_caps_values_but_not_keys_enums_or_explicit_bounds():
    schema = {"type": "object", "properties": {"long_key": {"type": "string"}, "e": {"enum": ["abcdef"]}, "m": {"type": "string", "maxLength": 6}}}
    c = ctrldec.JSONSchema(schema, max_string_length=3)
    assert c.matches('{"long_key":"abc","e":"abcdef","m":"abcdef"}')
    assert not c.matches('{"long_key":"abcd"}')
    assert ctrldec.JSONSchema({"type": "string", "pattern": "^a+$"}, max_string_length=40).matches(json.dumps("a" * 40))
    assert not ctrldec.JSONSchema({"type": "string", "pattern": "^a+$"}, max_string_length=40).matches(json.dumps("a" * 41))


def test_max_string_length_never_goes_below_what_the_schema_needs():
    at_least_five = ctrldec.JSONSchema({"type": "string", "minLength": 5}, max_string_length=3)
    assert at_least_five.matches('"abcde"') and not at_least_five.matches('"abcdef"') and not at_least_five.matches('"abc"')
    date = ctrldec.JSONSchema({"type": "string", "format": "date"}, max_string_length=3)  # needs 10: keeps its own bound
    assert date.matches('"2024-01-31"')


def test_max_items_caps_arrays_never_below_min_items():
    assert ctrldec.JSONSchema({"type": "array"}, max_items=2).matches("[1,2]")
    assert not ctrldec.JSONSchema({"type": "array"}, max_items=2).matches("[1,2,3]")
    at_least_four = ctrldec.JSONSchema({"type": "array", "minItems": 4}, max_items=2)
    assert at_least_four.matches("[1,2,3,4]") and not at_least_four.matches("[1,2,3,4,5]")
    assert ctrldec.JSONSchema({"type": "array", "maxItems": 5}, max_items=2).matches("[1,2,3,4,5]")
    tuple_ = ctrldec.JSONSchema({"type": "array", "prefixItems": [{}, {}, {}], "minItems": 3}, max_items=1)
    assert tuple_.matches("[1,2,3]") and not tuple_.matches("[1,2,3,4]")


def test_caps_reach_any_json_value():
    c = ctrldec.JSONSchema({}, max_string_length=3, max_items=2)
    assert c.matches('{"long key":["abc",[1,2]]}')
    assert not c.matches('"abcd"') and not c.matches("[1,2,3]") and not c.matches('[[1,2,3]]') and not c.matches('{"k":"abcd"}')


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"extra_properties": "deny"}, "'forbid' or 'allow'"),
        ({"max_string_length": -1}, "max_string_length must be an int >= 0"),
        ({"max_items": 2.5}, "max_items must be an int >= 0"),
        ({"max_items": True}, "max_items must be an int >= 0"),
        ({"max_items": 5000}, "limits.max_items"),
        ({"max_string_length": 1000}, "limits.max_length_bound"),
    ],
)
def test_bad_policy_values_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ctrldec.JSONSchema({}, **kwargs)


def test_docstring_examples_hold():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testmod(jsonschema_module)
    assert result.attempted >= 5 and result.failed == 0


# The spec's language is one option away: with extra_properties="allow" every mask along these
# texts is what the compiler before the policies (commit cdffaf2) gave, digest for digest, so
# generation under "allow" (same masks at every step) is unchanged.
_PINNED_SCHEMAS = [
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 5}}, "required": ["a"]},
    {"type": "object", "properties": {"x": {"type": "object", "properties": {"y": {"type": "boolean"}}}}},
    {"type": "object", "patternProperties": {"^n_": {"type": "number"}}, "minProperties": 1},
    {"type": "array", "items": {"type": "object", "properties": {"k": {"enum": ["a", "b"]}}, "required": ["k"]}, "minItems": 1},
    {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "next": {"$ref": "#/$defs/node"}}}},
     "$ref": "#/$defs/node"},
    {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id", "extra"]},
    {"type": "object"},
    {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "string"}},
]
_PINNED_TEXTS = ['{"a":1,"b":"xy","zz":[1,{"q":null}],"type":"object"}', '{"x":{"y":true,"extra":"v"},"n_1":2}',
                 '[{"k":"a","description":"The k"},{"k":"b"}]', '{"v":3,"next":{"v":4,"next":{},"w":"x"}}',
                 '{"id":7,"extra":{"properties":{}},"more":1}', '{"n_x":1.5e3,"other":[]}']
_PINNED_DIGESTS = ["ac7536da28f7", "19f30b277a72", "1a715211e2ec", "70e2f7776fcb", "17521e35cc2d", "6f093ef2423b",
                   "486b1430b956", "43005d894ad3"]


def _mask_digest(constraint, info) -> str:
    import hashlib

    g = constraint.compile(info)
    h = hashlib.sha256()
    for text in _PINNED_TEXTS:
        m = g.matcher()
        for t in info.encode(text):
            h.update(m.mask().tobytes())
            if not m.accepts(t):
                break
            m.advance(t)
        h.update(b"|")
    return h.hexdigest()[:12]


@pytest.mark.parametrize("i", range(len(_PINNED_SCHEMAS)))
def test_allow_keeps_every_mask_of_the_spec_language_as_before_the_policies(i):
    from helpers import byte_level_tokenizer

    from ctrldec.vocab import tokenizer_info

    info = tokenizer_info(byte_level_tokenizer())
    for order in ("schema", "any"):
        allow = ctrldec.JSONSchema(_PINNED_SCHEMAS[i], property_order=order, extra_properties="allow")
        assert _mask_digest(allow, info) == _PINNED_DIGESTS[i]
    if i != 7:  # every schema but the last leaves extra keys open: forbid narrows it
        assert _mask_digest(ctrldec.JSONSchema(_PINNED_SCHEMAS[i]), info) != _PINNED_DIGESTS[i]
