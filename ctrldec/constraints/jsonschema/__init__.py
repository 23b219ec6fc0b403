"""``JSONSchema``: JSON that validates against a schema, as a constraint.

>>> import ctrldec
>>> s = ctrldec.JSONSchema({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
...                         "required": ["n"], "additionalProperties": False})
>>> s.matches('{"n":3}'), s.matches('{"n":0}'), s.matches('{}')
(True, False, False)
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from typing import Any

from ...engine.bytedfa import BudgetExceeded, compile_budget
from ...engine.deep import MAX_DEPTH, deep
from ...engine.grammar import GrammarTables, compile_rules
from ...errors import GrammarError, SchemaError
from ...limits import DEFAULT_LIMITS, Limits
from ..grammar import Constraint
from .compiler import Policy, compile_schema

__all__ = ["JSONSchema"]

_WHITESPACE = {"compact": None, "flexible": None}


class JSONSchema(Constraint):
    """Output must be a JSON document valid against ``schema`` (draft 2020-12 and draft-07 keywords).

    Args:
        schema: a dict, a JSON string, a boolean, or a pydantic model class.
        whitespace: ``"compact"`` (no whitespace: the default, and what keeps small models from
            looping on newlines), ``"flexible"`` (up to ``max_whitespace`` whitespace characters
            around each ``{ } [ ] , :``), or a regex for that whitespace.
        max_whitespace: the bound of ``"flexible"``.
        property_order: ``"schema"`` (default): listed properties appear in the schema's order,
            other properties anywhere between them, no key twice. ``"any"``: any order (objects
            are unordered in JSON), with every required key present; a listed key may then
            repeat (the values stay valid; parsers keep the last). Past
            ``limits.max_any_order_required`` (6) required keys the parser tracks the keys seen
            (rules would take 2^r states); only such an object that also has ``maxProperties``
            keeps the schema's order, with a warning.
        lenient: approximate what cannot be enforced exactly (each relaxation is warned, once
            per instance at its first compile, and listed in ``relaxations``) instead of raising
            ``SchemaError``.
        limits: every resource limit (``ctrldec.limits.Limits``): the compile budget, how far
            counts are exact, the engine's bounds. Past the budget, ``SchemaError`` (never a hang
            or running out of memory); the compile may run in any thread.
        max_seconds, max_states: shorthands for ``limits``' compile budget (they override it).
        extra_properties, max_string_length, max_items: generation policies, below.

    A ``format`` no JSON Schema draft defines (``password``, ``int64``, ``path``, ...) is an
    annotation, as the spec says: validators ignore it, so strict mode accepts any string there
    and lists it in ``annotations``. A format a draft defines that ctrldec cannot enforce (such
    as ``regex``) is still an error in strict mode: a validator may check it.

    Objects are written with the schema's property order; strings with pattern or format
    constraints use raw characters (``\\uXXXX`` only for control characters).

    Generation policies narrow the schema's language and never widen it: every output stays
    valid against the schema, but a small model cannot wander into the room the spec leaves open.

    - ``extra_properties="forbid"`` (the default): an object schema that gives neither
      ``additionalProperties`` nor ``unevaluatedProperties`` (the spec then allows any other key,
      and small models copy the schema back as new keys, without end) gets only the keys it
      names: in ``properties``, matched by ``patternProperties``, or in ``required`` (also through
      ``dependentRequired``). A required key that no property names takes any JSON value, its
      value under the spec: requiring a key declares it, so ``{"required": ["id"]}`` still gives
      ``{"id": ...}`` rather than no object at all (making such objects impossible would turn a
      common, valid schema into an error). ``{"type": "object"}`` alone allows only ``{}`` (as
      xgrammar's ``strict_mode`` and OpenAI's structured outputs do); a schema with no type
      and no object keyword (``{}``, ``true``: any JSON value) keeps any object. An explicit
      ``additionalProperties`` (``true`` or a schema, as pydantic writes for ``dict`` fields) is
      kept: allOf members are merged first, and one member that gives it counts. Where the
      policy leaves no instance (e.g. ``minProperties: 2`` with one named key), ``SchemaError``
      names ``extra_properties`` and the pointer. ``"allow"``: the spec's language, compiled
      exactly as without the policy (what ``bench coverage`` measures).
    - ``max_string_length=N``: a string value whose schema gives no ``maxLength`` (enums and
      consts aside; ``{}`` values included) gets at most ``max(N, minLength)`` characters; a
      format or pattern that needs longer strings keeps its own bound. Keys are not capped.
      At most ``limits.max_length_bound`` (longer caps could not be intersected exactly).
    - ``max_items=N``: an array whose schema gives no ``maxItems`` gets at most
      ``max(N, minItems)`` items (arrays with ``contains`` aside). At most ``limits.max_items``.
    - ``whitespace="compact"`` (or ``"flexible"``, bounded by ``max_whitespace``): no unbounded
      whitespace, already.

    >>> person = {"type": "object", "properties": {"name": {"type": "string"}}}
    >>> forbid, allow = JSONSchema(person), JSONSchema(person, extra_properties="allow")
    >>> forbid.matches('{"name":"Ada"}'), forbid.matches('{"name":"Ada","type":"object"}')
    (True, False)
    >>> allow.matches('{"name":"Ada","type":"object"}')
    True
    >>> JSONSchema(person, max_string_length=3).matches('{"name":"Adam"}')
    False
    """

    def __init__(
        self,
        schema: Any,
        *,
        whitespace: str = "compact",
        max_whitespace: int = 4,
        property_order: str = "schema",
        lenient: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        max_seconds: float | None = None,
        max_states: int | None = None,
        extra_properties: str = "forbid",
        max_string_length: int | None = None,
        max_items: int | None = None,
    ) -> None:
        if hasattr(schema, "model_json_schema"):  # a pydantic model class
            schema = schema.model_json_schema()
        elif isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise SchemaError(f"the schema is not valid JSON: {e}") from None
        if not isinstance(schema, (dict, bool)):
            raise SchemaError(f"a schema must be an object or a boolean, got {type(schema).__name__}")
        if property_order not in ("schema", "any"):
            raise ValueError(f"property_order must be 'schema' or 'any', got {property_order!r}")
        if whitespace == "compact":
            ws = None
        elif whitespace == "flexible":
            if max_whitespace < 1:
                raise ValueError("max_whitespace must be at least 1")
            ws = f"[ \\t\\n\\r]{{0,{max_whitespace}}}"
        else:
            try:
                re.compile(whitespace)
            except re.error as e:
                raise ValueError(f"whitespace must be 'compact', 'flexible' or a regex: {e}") from None
            ws = whitespace
        self.schema = schema
        self.whitespace = ws
        self.lenient = lenient
        self.property_order = property_order
        budget = {k: v for k, v in (("max_seconds", max_seconds), ("max_states", max_states)) if v is not None}
        self.limits = dataclasses.replace(limits, **budget) if budget else limits
        self.policy = Policy(extra_properties, max_string_length, max_items)
        self.policy.check(self.limits)
        self.relaxations: list[str] = []  # filled at the first compile (from the cached tables)
        self.annotations: list[str] = []  # keywords that assert nothing (formats no draft defines), not enforced
        self._reported = False
        self._text = json.dumps(schema, sort_keys=True)

    def __repr__(self) -> str:
        return f"JSONSchema({self._text[:60]}{'...' if len(self._text) > 60 else ''})"

    def _key(self) -> tuple:
        return ("jsonschema", self._text, self.whitespace, self.lenient, self.property_order, self.limits, self.policy)

    def tables(self) -> GrammarTables:
        """The compiled form (cached per schema); the first call on this instance warns about each
        relaxation and restriction the compile made, and lists the relaxations in ``relaxations``."""
        tables = super().tables()
        if not self._reported:
            self._reported = True
            self.relaxations = list(tables.relaxations)
            self.annotations = list(tables.annotations)
            for message in tables.relaxations:
                warnings.warn(f"JSONSchema relaxed {message}", stacklevel=3)
            for message in tables.notes:
                warnings.warn(f"JSONSchema {message}", stacklevel=3)
        return tables

    def _build(self) -> GrammarTables:
        limits = self.limits
        try:
            with compile_budget(limits.max_seconds, limits.max_states, limits.max_memory):
                try:
                    return deep(lambda: self._compile(self.policy), MAX_DEPTH)  # a chain of 3,000 $refs: 4 s
                except GrammarError as e:  # empty, though compile_schema saw no empty object: a recursion
                    if self.policy.extra_properties == "allow":  # e.g. minProperties past the keys allowed
                        raise SchemaError("no JSON value satisfies this schema (at /): every way through it is blocked") from None
                    allow = dataclasses.replace(self.policy, extra_properties="allow")
                    deep(lambda: self._compile(allow), MAX_DEPTH)  # raises if empty too
                    raise SchemaError(f"extra_properties='forbid' leaves no instance of this schema ({e}; with 'allow' it has "
                                      "some): a recursive object ends only with a key it does not name; pass extra_properties='allow'") from None
        except BudgetExceeded as e:
            raise SchemaError(f"compile budget exceeded ({e}); raise max_seconds / max_states / max_memory to allow it") from None
        except RecursionError:
            raise SchemaError(f"the schema nests too deeply to compile (past {MAX_DEPTH} levels of Python recursion)") from None

    def _compile(self, policy: Policy) -> GrammarTables:
        any_order = self.property_order == "any"
        compiled = compile_schema(self.schema, whitespace=self.whitespace, lenient=self.lenient, any_order=any_order, limits=self.limits, policy=policy)
        tables = compile_rules(compiled.rules, compiled.terminals, compiled.start, ambiguous=True, frames=compiled.frames)
        # kept with the cached tables: every JSONSchema of this schema reports them
        tables.relaxations, tables.notes = tuple(compiled.warnings), tuple(compiled.notes)
        tables.annotations = tuple(compiled.annotations)
        return tables
