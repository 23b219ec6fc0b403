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
from ...engine.grammar import GrammarTables, compile_rules
from ...errors import SchemaError
from ...limits import DEFAULT_LIMITS, Limits
from ..grammar import Constraint
from .compiler import compile_schema

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
            repeat (the values stay valid; parsers keep the last). Objects with more required
            keys than ``limits.max_any_order_required`` (6) keep the schema's order.
        lenient: approximate what cannot be enforced exactly (each relaxation is warned, once
            per instance at its first compile, and listed in ``relaxations``) instead of raising
            ``SchemaError``.
        limits: every resource limit (``ctrldec.limits.Limits``): the compile budget, how far
            counts are exact, the engine's bounds. Past the budget, ``SchemaError`` (never a hang
            or running out of memory); the compile may run in any thread.
        max_seconds, max_states: shorthands for ``limits``' compile budget (they override it).

    Objects are written with the schema's property order; strings with pattern or format
    constraints use raw characters (``\\uXXXX`` only for control characters).
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
        self.relaxations: list[str] = []  # filled at the first compile (from the cached tables)
        self._reported = False
        self._text = json.dumps(schema, sort_keys=True)

    def __repr__(self) -> str:
        return f"JSONSchema({self._text[:60]}{'...' if len(self._text) > 60 else ''})"

    def _key(self) -> tuple:
        return ("jsonschema", self._text, self.whitespace, self.lenient, self.property_order, self.limits)

    def tables(self) -> GrammarTables:
        """The compiled form (cached per schema); the first call on this instance warns about each
        relaxation and restriction the compile made, and lists the relaxations in ``relaxations``."""
        tables = super().tables()
        if not self._reported:
            self._reported = True
            self.relaxations = list(tables.relaxations)
            for message in tables.relaxations:
                warnings.warn(f"JSONSchema relaxed {message}", stacklevel=3)
            for message in tables.notes:
                warnings.warn(f"JSONSchema {message}", stacklevel=3)
        return tables

    def _build(self) -> GrammarTables:
        limits = self.limits
        try:
            with compile_budget(limits.max_seconds, limits.max_states):
                compiled = compile_schema(
                    self.schema, whitespace=self.whitespace, lenient=self.lenient, any_order=self.property_order == "any", limits=limits
                )
                tables = compile_rules(compiled.rules, compiled.terminals, compiled.start, ambiguous=True)
        except BudgetExceeded as e:
            raise SchemaError(f"compile budget exceeded ({e}); raise max_seconds / max_states to allow it") from None
        except RecursionError:
            raise SchemaError("the schema nests too deeply to compile") from None
        # kept with the cached tables: every JSONSchema of this schema reports them
        tables.relaxations, tables.notes = tuple(compiled.warnings), tuple(compiled.notes)
        return tables
