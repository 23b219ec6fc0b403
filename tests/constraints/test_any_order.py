"""``property_order="any"`` past ``limits.max_any_order_required`` required keys: the parser
carries the set of required keys seen in each open object (``engine.lalr.RequiredMembers``)
instead of 2^r rule states. JSONSchemaBench o78043 lists 15 required keys out of order."""

from __future__ import annotations

import json
import random

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ctrldec
from ctrldec.limits import Limits

KEYS = [f"k{i}" for i in range(15)]
FLAT = {"type": "object", "properties": {k: {"type": "integer"} for k in KEYS}, "required": KEYS}
# an object holding itself: each level is its own frame (what one level has seen says nothing of another)
NESTED = {
    "$defs": {"t": {"type": "object", "properties": {**{k: {"type": "integer"} for k in KEYS[:8]}, "c": {"$ref": "#/$defs/t"}},
                    "required": KEYS[:8]}},
    "$ref": "#/$defs/t",
}


def _text(members: list[tuple[str, object]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in members) + "}"


def _valid(schema, text: str) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(json.loads(text))


@pytest.fixture(scope="module")
def flat():
    c = ctrldec.JSONSchema(FLAT, property_order="any", extra_properties="allow")
    assert c.tables().parse.required is not None and not c.tables().notes
    return c


@settings(max_examples=300, deadline=None, derandomize=True)
@given(order=st.permutations(range(15)), dropped=st.sets(st.integers(0, 14), max_size=2),
       repeated=st.lists(st.integers(0, 14), max_size=2), extra=st.booleans(), wrong=st.booleans())
def test_any_order_of_fifteen_required_keys_agrees_with_the_validator(flat, order, dropped, repeated, extra, wrong):
    members: list[tuple[str, object]] = [(KEYS[i], i) for i in order if i not in dropped]
    members += [(KEYS[i], "x" if wrong else 7) for i in repeated]
    if extra:
        members.insert(len(members) // 2, ("other", [1, {"k0": 2}]))
    text = _text(members)
    expected = _valid(FLAT, text) and not (wrong and repeated)  # a repeated key's every value must be valid
    assert flat.matches(text) is expected, text


def test_each_level_of_a_recursive_object_needs_its_own_keys():
    c = ctrldec.JSONSchema(NESTED, property_order="any")
    full = [(k, 1) for k in reversed(KEYS[:8])]
    inner_short = _text(full[:-1])
    assert c.matches(_text([*full, ("c", json.loads(_text(full)))]))
    assert not c.matches(_text([*full, ("c", json.loads(inner_short))]))  # the outer level's keys do not count inside
    assert not c.matches(_text([*full[:-1], ("c", json.loads(_text(full)))]))  # nor the inner level's outside
    inner = _text([*full[2:], ("c", json.loads(_text(full))), *full[:2]])
    assert c.matches(_text([*full[:3], ("c", json.loads(inner)), *full[3:]]))
    assert not c.matches(_text([*full[:3], ("c", json.loads(inner.replace('"k0":1,', ""))), *full[3:]]))


def test_const_objects_and_flexible_whitespace():
    const = {"const": {k: i for i, k in enumerate(KEYS[:9])}}
    c = ctrldec.JSONSchema(const, property_order="any")
    shuffled = list(const["const"].items())
    random.Random(0).shuffle(shuffled)
    assert c.matches(_text(shuffled)) and not c.matches(_text(shuffled[1:]))
    loose = ctrldec.JSONSchema(FLAT, property_order="any", whitespace="flexible")
    def spaced(keys):
        return "{ " + " ,\n".join(f'"{k}" : {i}' for i, k in keys) + " }"

    assert loose.matches(spaced(reversed(list(enumerate(KEYS))))) and not loose.matches(spaced(reversed(list(enumerate(KEYS))[1:])))


def test_max_properties_keeps_the_schema_order_with_a_warning(default_info):
    """With a maximum, a repeated key could spend the count before every required key is written
    (a dead end), so such an object keeps the schema's order, warned."""
    keys = KEYS[:8]
    schema = {"type": "object", "properties": {"o": {"type": "object", "properties": {k: {"type": "integer"} for k in keys},
                                                     "required": keys, "maxProperties": 9}}}
    shuffled = '{"o":{' + ",".join(f'"{k}":{i}' for i, k in enumerate(reversed(keys))) + "}}"
    ordered = '{"o":{' + ",".join(f'"{k}":1' for k in keys) + "}}"
    with pytest.warns(UserWarning, match="keeps the schema's property order at /properties/o: .* this object has 8"):
        kept = ctrldec.JSONSchema(schema, property_order="any")
        kept.compile(default_info)
    assert kept.matches(ordered) and not kept.matches(shuffled)
    wide = ctrldec.JSONSchema(schema, property_order="any", limits=Limits(max_any_order_required=8))
    assert wide.matches(shuffled) and not wide.matches(shuffled.replace(',"k0":7', ""))


def test_a_required_key_no_value_can_fill_empties_its_object():
    """A required member whose value never finishes (a recursion with no way out) leaves its object
    no instance: the object is pruned, not left open to a dead end."""
    loop = {"type": "object", "properties": {"a": {"$ref": "#/$defs/loop"}}, "required": ["a"]}
    obj = {"type": "object", "properties": {**{k: {"type": "integer"} for k in KEYS[:7]}, "z": {"$ref": "#/$defs/loop"}},
           "required": [*KEYS[:7], "z"]}
    c = ctrldec.JSONSchema({"$defs": {"loop": loop}, "type": "object", "properties": {"o": obj, "p": {"type": "integer"}}},
                           property_order="any")
    assert c.matches('{"p":1}') and not c.matches('{"o":{}}')
    assert c.tables().parse.required is None  # no tracked object is left


def _allowed(matcher, words: np.ndarray, n: int) -> np.ndarray:
    return np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little")[:n])


@pytest.mark.parametrize("schema", [FLAT, NESTED], ids=["flat", "nested"])
def test_masks_are_exact_and_budgeted_walks_end_valid(tok, schema):
    """Random walks through the masks: every allowed token is accepted and leads somewhere that
    can still finish (a finite completion bound, whose completion replays); a sample of the
    others is refused; under a budget the walk ends valid within it."""
    from ctrldec.constraints import tokenizer_info

    info = tokenizer_info(tok)
    g = ctrldec.JSONSchema(schema, property_order="any").compile(info)
    n = len(info.token_bytes)
    rng = random.Random(3)
    for walk in range(3):
        m, out, budget = g.matcher(), [], 120 + 60 * walk
        for step in range(budget):
            allowed = _allowed(m, m.budget_mask(budget - step - 1), n)
            assert allowed.size, tok.decode(out)
            everything = set(_allowed(m, m.mask(), n).tolist())
            for t in rng.sample(range(n), 40):
                assert m.accepts(t) is (t in everything), (tok.decode(out), t)
            t = int(rng.choice(allowed))
            if t in info.eos_token_ids:
                break
            assert m.completion_bound_after(t) < budget - step
            m.advance(t)
            out.append(t)
            if step % 15 == 0:
                tail = m.shortest_completion()
                assert tail is not None and _valid(schema, tok.decode(out) + tail.decode()), tok.decode(out)
        assert m.is_accepting() and _valid(schema, tok.decode(out)), tok.decode(out)


def test_completions_write_the_members_of_nested_frames(tok):
    """The fuzzer's case (tests/fuzz_corpus): a required member whose shortest value is a const
    object that is itself tracked; a completion must write the inner object's members too."""
    from ctrldec.constraints import tokenizer_info

    schema = {"type": "object", "properties": {"a": {"const": [{}, {"x": False, "a": 5}, []]}, "c": {"minimum": -1},
                                               "x": {"type": "string", "minLength": 1, "maxLength": 4}}, "required": ["a", "x"]}
    c = ctrldec.JSONSchema(schema, property_order="any", extra_properties="allow", limits=Limits(max_any_order_required=1))
    start = c.compile(tokenizer_info(tok)).matcher()
    for prefix in ["", "{", '{"c":1', '{"a":[{},{', '{"x":"ab","a":[{},{"a":5', '{"a":[{},{"a":5,"x":false},[]],"c":2']:
        m = start.fork()
        assert m.advance_bytes(prefix.encode()), prefix
        tail = m.shortest_completion()
        assert tail is not None and _valid(schema, prefix + tail.decode()), (prefix, tail)
        assert m.completion_bound() <= len(tail)
