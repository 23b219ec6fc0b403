"""JSON Schema -> grammar rules and terminal automata, for the (ambiguous-capable) grammar engine.

The compiler walks the schema once. Scalars become byte automata (``numbers.py``, ``strings.py``)
so that unions and intersections of scalar constraints are exact; arrays and objects become
grammar rules; ``anyOf`` becomes alternatives (overlap is fine: the engine follows every
reading); ``allOf`` is merged keyword by keyword into one schema; ``$ref`` (recursive included)
becomes a shared rule. What cannot be expressed raises ``SchemaError`` with the JSON pointer, or,
with ``lenient=True``, is relaxed with a warning that names it. A ``Policy`` narrows the language
for generation (extra object keys, string lengths, array lengths); the default is the spec's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urljoin

from ...engine.grammar import MemberFrames
from ...engine.bytedfa import ByteDFA, LazyDFA, LazyUnion, UnboundedProduct, check_budget, compile_regex, literal, minus_strings, product, strings, union_all
from ...errors import SchemaError
from ...limits import DEFAULT_LIMITS, Limits
from .numbers import ANY_INTEGER, ANY_INTEGER_DRAFT4, ANY_NUMBER, NONCANONICAL_NUMBER, integer_dfa, number_dfa
from .strings import FORMATS, LAZY_LENGTH_FROM, UnsupportedPattern, check_pattern, counted_string, ecma_to_python, string_dfa, tabulated

__all__ = ["compile_schema", "CompiledSchema", "Policy"]

TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")

# Keywords with no effect on validity: ignored without a word.
_ANNOTATIONS = {
    "$schema", "$id", "id", "$comment", "$anchor", "$dynamicAnchor", "$vocabulary", "title", "description",
    "default", "examples", "example", "readOnly", "writeOnly", "deprecated", "$defs", "definitions",
    "contentMediaType", "contentEncoding", "contentSchema", "nullable",
}  # fmt: skip
_OBJECT_KW = {"properties", "required", "additionalProperties", "patternProperties", "propertyNames",
              "minProperties", "maxProperties", "dependentRequired", "dependencies", "dependentSchemas",
              "unevaluatedProperties", "$ctrldec:absent"}  # fmt: skip
_ARRAY_KW = {"items", "prefixItems", "additionalItems", "minItems", "maxItems", "contains", "minContains",
             "maxContains", "uniqueItems", "unevaluatedItems"}  # fmt: skip
_STRING_KW = {"minLength", "maxLength", "pattern", "format"}
_NUMBER_KW = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
_HANDLED = _OBJECT_KW | _ARRAY_KW | _STRING_KW | _NUMBER_KW | {
    "type", "enum", "const", "allOf", "anyOf", "oneOf", "not", "$ref", "if", "then", "else", "$dynamicRef",
}  # fmt: skip

_REF_ALONE_DRAFTS = ("draft-03/", "draft-04/", "draft-06/", "draft-07/")  # $ref siblings are ignored there
_WHOLE_INTEGER_DRAFTS = ("draft-03/", "draft-04/")  # an integer has no fraction there: 1.0 is not one
NEVER = None  # a rule for an unsatisfiable schema
ALL = "<all>"  # the object (or array) part of a schema that puts no constraint on them
ABSENT = "$ctrldec:absent"  # internal keyword: these object keys must not appear


@dataclass
class _Values:
    """The values a schema allows: scalars (one automaton over their JSON text), objects and
    arrays (a rule, ALL, or None for none)."""

    scalar: ByteDFA | None = None
    obj: str | None = None
    arr: str | None = None


def _pointer_escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class Policy:
    """Generation policies: each only narrows the schema's language, so every output stays valid
    (``JSONSchema`` documents what each removes). The default is the spec's language."""

    extra_properties: str = "allow"
    """``"forbid"``: an object schema that leaves extra keys open (gives neither
    ``additionalProperties`` nor ``unevaluatedProperties``) gets only the keys it names."""
    max_string_length: int | None = None
    """Characters of a string value whose schema gives no ``maxLength`` (never below ``minLength``)."""
    max_items: int | None = None
    """Items of an array whose schema gives no ``maxItems`` (never below ``minItems``)."""

    def __post_init__(self) -> None:
        if self.extra_properties not in ("forbid", "allow"):
            raise ValueError(f"extra_properties must be 'forbid' or 'allow', got {self.extra_properties!r}")
        for name in ("max_string_length", "max_items"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"{name} must be an int >= 0 or None, got {v!r}")

    def check(self, limits: Limits) -> None:
        """Refuse caps past what ``limits`` counts exactly (they would need relaxations)."""
        for name, bound in (("max_items", "max_items"), ("max_string_length", "max_length_bound")):
            cap, most = getattr(self, name), getattr(limits, bound)
            if cap is not None and cap > most:
                raise ValueError(f"{name}={cap} is past limits.{bound} ({most}); raise it with limits=Limits({bound}={cap})")


SPEC = Policy()

# Every format a JSON Schema draft (3 to 2020-12) defines. Validators may check these (jsonschema's
# FormatChecker does, given its optional packages); any other format is an annotation they ignore.
SPEC_FORMATS = frozenset({
    "date-time", "date", "time", "duration", "utc-millisec", "email", "idn-email", "hostname", "host-name",
    "idn-hostname", "ipv4", "ip-address", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uri-template",
    "json-pointer", "relative-json-pointer", "uuid", "regex", "color", "style", "phone",
})


@dataclass
class CompiledSchema:
    """Rules (lhs -> list of alternatives, each a list of symbols) and terminal automata."""

    start: str
    rules: dict[str, list[list[str]]]
    terminals: dict[str, ByteDFA]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # restrictions (nothing invalid admitted), warned
    annotations: list[str] = field(default_factory=list)  # keywords that assert nothing (unknown formats)
    frames: MemberFrames | None = None  # objects whose required keys the parser tracks (any order)


class _Compiler:
    def __init__(
        self, root: Any, *, whitespace: str | None, lenient: bool, any_order: bool = False, limits: Limits = DEFAULT_LIMITS, policy: Policy = SPEC
    ) -> None:
        self.root = root
        self.lenient = lenient
        self.limits = limits
        self.any_order = any_order
        self.policy = policy
        self.emptied: list[tuple[str, str]] = []  # (pointer, why): objects extra_properties="forbid" left empty
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.annotations: list[str] = []
        self.rules: dict[str, list[list[str]]] = {}
        self.terminals: dict[str, ByteDFA] = {}
        self.frames: dict[str, list[str]] = {}  # object rule -> its required members' rules, tracked by the parser
        self._literal_names: dict[bytes, str] = {}
        self._dfa_names: dict[bytes | tuple, str] = {}
        self._ref_rules: dict[int, str | None] = {}
        self._base_of: dict[int, str] = {}
        self._pointer_of: dict[int, str] = {}
        declared = root.get("$schema") if isinstance(root, dict) else None
        self._spec = _specification(declared)
        root_id = _id_of(self._spec, root) if isinstance(root, dict) else None
        self._root_base = root_id.split("#")[0] if isinstance(root_id, str) else ""
        # draft-07 and earlier: "all other properties in a $ref object MUST be ignored"
        self._ref_alone = isinstance(declared, str) and any(d in declared for d in _REF_ALONE_DRAFTS)
        self._whole_integers = isinstance(declared, str) and any(d in declared for d in _WHOLE_INTEGER_DRAFTS)
        self._ws = whitespace
        self._any: str | None = None
        self._names = 0
        self._memo: dict[str, str | None] = {}
        self._validator: Any = None
        self._index_ids(root, "", self._root_base)
        self._resolver = _registry(root, self._spec, self._root_base)

    # -- bookkeeping ------------------------------------------------------------------------------

    def relax(self, pointer: str, what: str) -> None:
        """Raise in strict mode; otherwise record (and warn) that ``what`` was relaxed."""
        message = f"{what} at {pointer or '/'}"
        if not self.lenient:
            plain = re.sub(r" \((not enforced|contains not enforced|read as anyOf|duplicates are not prevented)\)", "", what)
            raise SchemaError(
                f"cannot enforce {plain} exactly at {pointer or '/'}; pass lenient=True (CLI: --lenient) to relax it with a warning",
                pointer=pointer or "/",
            )
        self.warnings.append(message)

    def fresh(self) -> str:
        self._names += 1
        return f"r{self._names}"

    def rule(self, alternatives: list[list[str | None]], name: str | None = None) -> str | None:
        """A new rule from alternatives; alternatives with a NEVER symbol are dropped.

        A rule may name itself in its alternatives (pass ``name`` from ``fresh()``); rules that can
        never finish are pruned later, with every alternative that uses them.
        """
        alts = [list(alt) for alt in alternatives if all(s is not None for s in alt)]
        if not alts:
            return NEVER
        name = name or self.fresh()
        self.rules[name] = alts  # type: ignore[assignment]
        return name

    def loop(self, unit: list[str | None]) -> str | None:
        """``unit+`` as a left-recursive rule (constant parser stack depth)."""
        name = self.fresh()
        return self.rule([unit, [name, *unit]], name=name)

    def lit(self, text: bytes) -> str:
        """A terminal for exact bytes (punctuation padded with whitespace in flexible mode)."""
        name = self._literal_names.get(text)
        if name is None:
            name = self._literal_names[text] = f"L{len(self._literal_names)}"
            if self._ws is not None and text in (b"{", b"}", b"[", b"]", b",", b":"):
                ws = self._ws
                self.terminals[name] = compile_regex(f"(?:{ws}){re.escape(text.decode())}(?:{ws})")
            else:
                self.terminals[name] = literal(text)
        return name

    def term(self, dfa: ByteDFA) -> str | None:
        """A terminal for an automaton (deduplicated by content)."""
        if dfa.empty:
            return NEVER
        key = dfa.key if isinstance(dfa, LazyDFA) else dfa.trans.tobytes() + dfa.accepting.tobytes()
        name = self._dfa_names.get(key)
        if name is None:
            name = self._dfa_names[key] = f"D{len(self._dfa_names)}"
            self.terminals[name] = dfa
        return name

    # -- references -------------------------------------------------------------------------------

    def _index_ids(self, node: Any, pointer: str, base: str = "") -> None:
        """Record every subschema's base URI (``$id``, or ``id`` under draft-04, as the draft's
        ``referencing`` specification reads it) and its JSON pointer."""
        if isinstance(node, dict):
            ident = _id_of(self._spec, node)
            if isinstance(ident, str) and not ident.startswith("#"):
                base = urljoin(base, ident).split("#")[0]
            self._base_of[id(node)] = base
            self._pointer_of.setdefault(id(node), pointer)
            for k, v in node.items():
                if k not in ("enum", "const", "default", "examples", "example"):
                    self._index_ids(v, f"{pointer}/{_pointer_escape(k)}", base)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                self._index_ids(v, f"{pointer}/{i}", base)

    def resolve(self, ref: str, pointer: str, where: Any = None) -> tuple[Any, str]:
        """(target schema, its pointer) for a $ref found in schema ``where`` (for its base URI),
        resolved by ``referencing`` (the jsonschema project's resolver) under the schema's draft:
        embedded resources, anchors, JSON pointers, and the drafts' own meta-schemas."""
        from referencing.exceptions import NoSuchAnchor, PointerToNowhere, Unresolvable

        base = self._base_of.get(id(where), self._root_base)
        try:
            node = self._resolver(base).lookup(ref).contents
        except PointerToNowhere:
            raise SchemaError(f"$ref {ref!r} points to nothing", pointer=pointer) from None
        except NoSuchAnchor:
            raise SchemaError(f"$ref {ref!r}: no anchor {ref.partition('#')[2]!r} in this schema", pointer=pointer) from None
        except Unresolvable:
            raise SchemaError(f"remote $ref {ref!r} is not supported (only references inside the schema)", pointer=pointer) from None
        return node, self._pointer_of.get(id(node), ref)

    # -- values -----------------------------------------------------------------------------------

    def value(self, schema: Any, pointer: str) -> str | None:
        """The rule for a JSON value valid against ``schema`` (NEVER if none is)."""
        check_budget(len(self.rules))
        if schema is True or schema == {}:
            return self.any_value()
        if schema is False:
            return NEVER
        if not isinstance(schema, dict):
            raise SchemaError(f"a schema must be an object or a boolean, got {type(schema).__name__}", pointer=pointer)
        if "$ref" in schema and (self._ref_alone or set(schema) - _ANNOTATIONS == {"$ref"}):
            return self.ref_rule(schema["$ref"], pointer, schema)
        # Equal schemas (the same text: $refs resolve against the one root) share one rule, and a
        # schema met again while it is being expanded (recursion through $ref + siblings, or
        # through allOf) refers to the placeholder instead of expanding forever.
        key = self._base_of.get(id(schema), self._root_base) + json.dumps(
            {k: v for k, v in schema.items() if k not in _ANNOTATIONS}, sort_keys=True, default=str
        )
        if key in self._memo:
            return self._memo[key]
        name = self._memo[key] = self.fresh()
        inner = self.flat_value(self.flatten(schema, pointer), pointer)
        if inner is NEVER:
            self._memo[key] = NEVER  # earlier references to ``name`` are pruned as unproductive
            return NEVER
        self.rules[name] = [[inner]]
        return name

    def ref_rule(self, ref: str, pointer: str, where: Any = None) -> str | None:
        if not isinstance(ref, str):
            raise SchemaError("$ref must be a string", pointer=pointer)
        target, target_ptr = self.resolve(ref, pointer, where)
        key = id(target)
        if key in self._ref_rules:
            name = self._ref_rules[key]
            return name
        name = f"ref{len(self._ref_rules)}"
        self._ref_rules[key] = name  # placeholder first: recursive references point here
        inner = self.value(target, target_ptr or "#")
        if inner is NEVER:
            self._ref_rules[key] = NEVER
            self.rules.pop(name, None)
            return NEVER
        self.rules[name] = [[inner]]
        return name

    def any_object(self) -> str:
        self.any_value()
        return "any_object"

    def any_array(self) -> str:
        self.any_value()
        return "any_array"

    def any_value(self) -> str:
        """Any JSON value (the schema ``true``); the length policies bound its strings and arrays,
        ``extra_properties`` leaves its objects open (the schema asked for any value)."""
        if self._any is None:
            self._any = "any_value"
            self.rules["any_value"] = []
            string = self.term(string_dfa())
            member = self.rule([[string, self.lit(b":"), "any_value"]])
            member_list = self.rule([[member], ["any_members", self.lit(b","), member]], name="any_members")
            if self.policy.max_items is None:
                items = self.rule([["any_value"], ["any_items", self.lit(b","), "any_value"]], name="any_items")
                self.rules["any_array"] = [[self.lit(b"["), self.lit(b"]")], [self.lit(b"["), items, self.lit(b"]")]]  # type: ignore[list-item]
            else:
                self.rules["any_array"] = [[self.array({"maxItems": self.policy.max_items}, "")]]  # type: ignore[list-item]
            self.rules["any_object"] = [[self.lit(b"{"), self.lit(b"}")], [self.lit(b"{"), member_list, self.lit(b"}")]]  # type: ignore[list-item]
            value_string = self._string_automaton(self._string_cap({}), "")
            scalars = union_all([literal(b"null"), strings([b"true", b"false"]), compile_regex(ANY_NUMBER), value_string])
            self.rules["any_value"] = [[self.term(scalars)], ["any_array"], ["any_object"]]  # type: ignore[list-item]
        return self._any

    # -- allOf / $ref merging ---------------------------------------------------------------------

    def flatten(self, schema: dict, pointer: str, depth: int = 0) -> dict:
        """Merge allOf members and a $ref with siblings into one schema (an intersection).

        Under a draft-07 (or earlier) ``$schema``, a $ref stands alone: its siblings are ignored.
        """
        if depth > self.limits.max_ref_depth:
            raise SchemaError(f"allOf/$ref nesting deeper than {self.limits.max_ref_depth} (a reference cycle through allOf?)", pointer=pointer)
        alone = "$ref" in schema and self._ref_alone
        parts = [] if alone else [{k: v for k, v in schema.items() if k not in ("allOf", "$ref")}]
        if "$ref" in schema:
            target, target_ptr = self.resolve(schema["$ref"], pointer, schema)
            if target is False:
                return {"not": True}
            if isinstance(target, dict):
                parts.append(self.flatten(target, target_ptr, depth + 1))
        for i, sub in enumerate([] if alone else schema.get("allOf", [])):
            if sub is True:
                continue
            if sub is False:
                return {"not": True}
            if not isinstance(sub, dict):
                raise SchemaError("allOf members must be schemas", pointer=f"{pointer}/allOf/{i}")
            parts.append(self.flatten(sub, f"{pointer}/allOf/{i}", depth + 1))
        out: dict = {}
        for part in parts:
            if "if" in part:  # each allOf member's condition stays with its own then/else
                part = self.if_then_else(part, pointer)
            else:
                part = {k: v for k, v in part.items() if k not in ("then", "else")}
            out = _merge(out, part, pointer, self)
        return out

    def flat_value(self, s: dict, pointer: str) -> str | None:
        """The rule for a flattened schema (no allOf / $ref at its top)."""
        return self.emit(self.values(s, pointer))

    def emit(self, v: _Values) -> str | None:
        alts: list[list[str | None]] = []
        if v.scalar is not None and not v.scalar.empty:
            alts.append([self.term(v.scalar)])
        for part, make in ((v.obj, self.any_object), (v.arr, self.any_array)):
            if part is ALL:
                alts.append([make()])
            elif part is not None:
                alts.append([part])
        return self.rule(alts)

    def values(self, s: dict, pointer: str) -> _Values:
        """What a flattened schema allows: scalars as one automaton, objects and arrays as rules.

        Keeping scalars as an automaton is what makes oneOf, not and if/then/else exact for them
        (set algebra on automata); objects get exact negation for properties/required schemas.
        """
        if s.get("not") is True:
            return _Values()
        if "if" in s:
            return self.values(self.if_then_else(s, pointer), pointer)
        if "anyOf" in s or "oneOf" in s:
            return self.union(s, pointer)
        nots = s.get("not")
        nots = [] if nots is None else nots if isinstance(nots, list) else [nots]
        rest = {k: v for k, v in s.items() if k != "not"}
        doubled = [n for n in nots if isinstance(n, dict) and set(n) - _ANNOTATIONS == {"not"}]
        if doubled:  # not: {not: X} is X
            kept = [n for n in nots if not any(n is d for d in doubled)]
            merged = {**rest, "not": kept} if kept else rest
            for i, d in enumerate(doubled):
                inner = d["not"]
                if inner is False:
                    return _Values()
                if inner is not True:
                    merged = _merge(merged, self.flatten(inner, f"{pointer}/not/not"), pointer, self)
            return self.values(merged, pointer)
        if "const" in rest or "enum" in rest:
            # a finite set: its arrays and objects are checked against the whole schema, the
            # nots included, value by value (``_composite_ok``); its scalars by automata
            v = self.enum_values(s, pointer)
            scalars = _Values(scalar=v.scalar)
            for n in nots:
                scalars = self.subtract(scalars, rest, n, f"{pointer}/not")
            v.scalar = scalars.scalar
            return v
        v = self.by_type(rest, pointer)
        for n in nots:
            v = self.subtract(v, rest, n, f"{pointer}/not")
        return v

    def if_then_else(self, s: dict, pointer: str) -> dict:
        """(if and then) or (not if and else), as an anyOf the rest of the compiler handles."""
        rest = {k: v for k, v in s.items() if k not in ("if", "then", "else")}
        cond = s["if"]
        then, other = s.get("then", True), s.get("else", True)
        branches = [{"allOf": [cond, then]}, {"allOf": [{"not": cond}, other]}]
        return _merge(rest, {"anyOf": branches}, pointer, self)

    def union(self, s: dict, pointer: str) -> _Values:
        """anyOf / oneOf: the common keywords intersected with each branch."""
        key = "anyOf" if "anyOf" in s else "oneOf"
        rest = {k: v for k, v in s.items() if k != key}
        branches = []
        for i, branch in enumerate(s[key]):
            if branch is False:
                continue
            sub = {} if branch is True else branch
            if not isinstance(sub, dict):
                raise SchemaError(f"{key} members must be schemas", pointer=f"{pointer}/{key}/{i}")
            merged = _merge(rest, self.flatten(sub, f"{pointer}/{key}/{i}"), pointer, self)
            branches.append((merged, self.values(merged, f"{pointer}/{key}/{i}")))
        out = _Values()
        scalars = [v.scalar for _, v in branches]
        if key == "oneOf":
            exact = []
            for i, x in enumerate(scalars):
                if x is None:
                    continue
                others = [y for j, y in enumerate(scalars) if j != i and y is not None]
                exact.append(self.subtract_scalars(x, union_all(others), f"{pointer}/oneOf/{i}") if others else x)
            scalars = exact
            for part in ("obj", "arr"):
                present = [(m, getattr(v, part)) for m, v in branches if getattr(v, part) is not None]
                if len(present) > 1 and not _disjoint([m for m, _ in present], self, part):
                    exact = self.exactly_one_object(rest, s["oneOf"], branches, pointer) if part == "obj" else None
                    if exact is not None:
                        for (_, v), rule in zip(branches, exact):
                            v.obj = rule
                        continue
                    self.relax(f"{pointer}/oneOf", f"oneOf branches whose {'objects' if part == 'obj' else 'arrays'} may overlap (read as anyOf)")
        out.scalar = union_all([x for x in scalars if x is not None]) if any(x is not None for x in scalars) else None
        for part in ("obj", "arr"):
            present = [getattr(v, part) for _, v in branches if getattr(v, part) is not None]
            setattr(out, part, ALL if ALL in present else self.rule([[p] for p in present]) if present else None)
        return out

    def exactly_one_object(self, rest: dict, raw: list, branches: list, pointer: str) -> list | None:
        """For each oneOf branch, its objects that fail every other branch (None if a branch
        cannot be negated: only properties/required schemas can)."""
        raws = [b for b in raw if b is not False]
        negations = []
        for b in raws:
            flat = {} if b is True else self.flatten(b, pointer)
            negations.append(_negate_object(flat))
        out = []
        for i, (merged, v) in enumerate(branches):
            if v.obj is None:
                out.append(None)
                continue
            variants = [{**merged, "type": "object"}]
            for j, alts in enumerate(negations):
                if j == i:
                    continue
                if alts is None or len(variants) * max(len(alts), 1) > self.limits.max_union_product:
                    return None
                if not alts:  # the other branch accepts every object: none is left
                    variants = []
                    break
                variants = [_merge(x, a, pointer, self) for x in variants for a in alts]
            rules = [self.values(x, pointer).obj for x in variants]
            out.append(self.rule([[r if r is not ALL else self.any_object()] for r in rules if r is not None]))
        return out

    def subtract_scalars(self, a: ByteDFA, b: ByteDFA, pointer: str) -> ByteDFA:
        """``a`` minus ``b``; a length-counted string minus another string is a relaxation.

        Bounded number automata leave out exponents and ``-0`` (``numbers.py``), counted strings
        surrogate escapes (``json_char``), patterned strings and literals the second forms of a
        character (``\\u0078`` for ``x``, ``\\/``): they are exact only on the other texts, so
        the complement leaves out numbers with an exponent or ``-0`` and strings with such an
        escape (``_OTHER_FORM``). So where ``b`` has numbers (strings), the difference drops those texts as
        well; otherwise ``not: {minimum: 2}`` would admit ``1e9`` (fuzzing found it).
        """
        def written(x: ByteDFA) -> ByteDFA:
            for kind, unwritten in _UNWRITTEN.items():
                if _has(b, kind):
                    x = product(x, _dfa(unwritten), "diff")
            return x

        try:
            # a lazy ``a`` passes only where its first byte settles it: no text in common with b
            return product(a if isinstance(a, LazyDFA) else written(a), b, "diff")
        except UnboundedProduct as e:
            dense_a, dense_b = tabulated(a, self.limits.max_length_bound), tabulated(b, self.limits.max_length_bound)
            if dense_a is not None and dense_b is not None:  # short enough to tabulate after all
                return product(written(dense_a), dense_b, "diff")  # (a lazy a skipped ``written``: fuzzing found it)
            self.relax(pointer, f"{e} (not enforced)")
            return a

    def subtract(self, v: _Values, rest: dict, n: Any, pointer: str) -> _Values:
        """``v`` minus the values of schema ``n`` (``rest`` is the schema ``v`` came from)."""
        if n is False:
            return v
        if n is True:
            return _Values()
        neg = self.values(self.flatten(n, pointer), pointer)
        if v.scalar is not None and neg.scalar is not None:
            v.scalar = self.subtract_scalars(v.scalar, neg.scalar, pointer)
        if v.obj is not None and neg.obj is not None:
            if neg.obj is ALL:
                v.obj = None
            else:
                alternatives = _negate_object(self.flatten(n, pointer))
                if alternatives is None:
                    self.relax(pointer, "'not' of an object schema beyond properties/required (not enforced)")
                elif len(alternatives) > self.limits.max_union_product:
                    self.relax(pointer, "'not' with too many alternatives (not enforced)")
                else:
                    base = {**{k: x for k, x in rest.items() if k not in ("type", "enum", "const")}, "type": "object"}
                    rules = [self.emit(self.values(_merge(base, alt, pointer, self), pointer)) for alt in alternatives]
                    v.obj = self.rule([[r] for r in rules])
        if v.arr is not None and neg.arr is not None:
            if neg.arr is ALL:
                v.arr = None
            else:
                self.relax(pointer, "'not' of an array schema (not enforced)")
        return v

    # -- by type ----------------------------------------------------------------------------------

    def allowed_types(self, s: dict, pointer: str) -> list[str]:
        t = s.get("type", list(TYPES))
        types = [t] if isinstance(t, str) else list(t)
        for x in types:
            if x not in TYPES:
                raise SchemaError(f"unknown type {x!r}", pointer=f"{pointer}/type")
        if "number" in types and "integer" in types:
            types.remove("integer")
        if s.get("nullable") is True and "null" not in types:
            types.append("null")
        return [x for x in TYPES if x in types]

    def by_type(self, s: dict, pointer: str) -> _Values:
        types = self.allowed_types(s, pointer)
        scalars = []
        builders = {
            "null": lambda: literal(b"null"),
            "boolean": lambda: strings([b"true", b"false"]),
            "integer": lambda: self._number_automaton(s, pointer, integer=True),
            "number": lambda: self._number_automaton(s, pointer, integer=False),
            "string": lambda: self._value_string(s, pointer),
        }
        for t in types:
            if t in builders:
                dfa = builders[t]()
                if dfa is not None and not dfa.empty:
                    scalars.append(dfa)
        out = _Values(scalar=union_all(scalars) if scalars else None)
        if "object" in types:
            # under extra_properties="forbid", {"type": "object"} names no key: it allows only {}
            typed = "type" in s and self.policy.extra_properties == "forbid"
            out.obj = ALL if not set(s) & _OBJECT_KW and not typed else self.object(s, pointer)
        if "array" in types:
            out.arr = ALL if not set(s) & _ARRAY_KW else self.array(s, pointer)
        return out

    def enum_values(self, s: dict, pointer: str) -> _Values:
        values = [s["const"]] if "const" in s else s["enum"]
        if "const" in s and "enum" in s:
            values = [v for v in s["enum"] if _json_equal(v, s["const"])]
        if not isinstance(values, list):
            raise SchemaError("enum must be an array", pointer=f"{pointer}/enum")
        types = self.allowed_types(s, pointer)
        rest = {k: v for k, v in s.items() if k not in ("enum", "const")}
        literals: list[bytes] = []
        numbers: list[str] = []  # regexes: every decimal spelling of each number
        arrays: list[list[str | None]] = []
        objects: list[list[str | None]] = []
        for v in values:
            kind = _json_type(v, types)
            if kind is None or not self._value_ok(v, rest, pointer):
                continue
            if kind in ("array", "object"):  # rules, so that they sit with the other arrays and objects
                (arrays if kind == "array" else objects).append([self._literal_rule(v, pointer)])
                continue
            if _is_number(v):  # drafts 3 and 4: 2.0 is not an integer
                numbers.append(_spelling_regex(v, whole=kind == "integer" and "number" not in types and self._whole_integers))
            else:
                literals.append(_dumps(v))
        scalars = ([strings(literals)] if literals else []) + ([compile_regex("|".join(f"(?:{n})" for n in numbers))] if numbers else [])
        return _Values(
            scalar=union_all(scalars) if scalars else None,
            obj=self.rule(objects) if objects else None,
            arr=self.rule(arrays) if arrays else None,
        )

    def _literal_rule(self, v: Any, pointer: str) -> str | None:
        """One JSON value as rules: its punctuation through ``lit`` (so flexible whitespace applies),
        an object's members in any order (with ``property_order="any"``, else up to
        ``limits.max_any_order_required`` keys), numbers in every equal spelling (``2``, ``2.0``)."""
        if isinstance(v, list):
            seq: list[str | None] = [self.lit(b"[")]
            for i, x in enumerate(v):
                seq += [self.lit(b","), self._literal_rule(x, pointer)] if i else [self._literal_rule(x, pointer)]
            return self.rule([seq + [self.lit(b"]")]])
        if isinstance(v, dict):
            members = [(k, self._literal_rule(x, pointer), True) for k, x in v.items()]
            if len(members) <= self.limits.max_any_order_required or self.any_order:
                return self._object_any_order(members, None, (0, None))
            return self._object_rules(members, None)
        return self.term(_spelled(v))

    def _keep_order(self, pointer: str, n_required: int) -> None:
        """``property_order="any"`` is not kept for an object with more required keys than the
        limit (2^r rule states) *and* a ``maxProperties``: it keeps the schema's order. (Without
        a maximum, the parser tracks the keys seen instead: ``_object_any_order``; with one, a
        repeated key could use up the count before every required key is written.) Not a
        relaxation (nothing invalid gets in) but a restriction (a valid instance with its keys in
        another order is rejected), warned."""
        limit = self.limits.max_any_order_required
        self.notes.append(f"keeps the schema's property order at {pointer or '/'}: property_order='any' with maxProperties "
                          f"tracks up to {limit} required keys, this object has {n_required}")

    def _value_ok(self, v: Any, s: dict, pointer: str = "") -> bool:
        """Does ``v`` satisfy the other keywords of ``s``? (enum values are filtered by them).
        Scalars are matched by the automata; arrays and objects by the ``jsonschema`` validator of
        the schema's draft (a concrete value: the reference decides it exactly)."""
        if isinstance(v, (list, dict)):
            return self._composite_ok(v, s, pointer)
        if isinstance(v, str) and set(s) & _STRING_KW:
            try:
                return self._string_automaton(s, "").matches(_dumps(v))
            except SchemaError:
                return True
        if isinstance(v, (int, float)) and not isinstance(v, bool) and set(s) & _NUMBER_KW:
            dfa = self._number_automaton(s, "", integer=False)
            return dfa.matches(_dumps(v)) if dfa is not None else True
        return True

    def _composite_ok(self, v: Any, s: dict, pointer: str) -> bool:
        if not set(s) - _ANNOTATIONS - {"type"}:
            return True
        schema = {k: x for k, x in s.items() if k not in ("not", ABSENT)}
        extra = []
        nots = s.get("not")
        if nots is not None:
            extra += [{"not": n} for n in (nots if isinstance(nots, list) else [nots])]
        if s.get(ABSENT):
            extra.append({"properties": {k: False for k in s[ABSENT]}})
        if extra:
            schema["allOf"] = [*schema.get("allOf", []), *extra]
        try:
            return bool(self._reference().evolve(schema=schema).is_valid(v))
        except Exception as e:  # noqa: BLE001 - a reference the validator cannot follow
            self.relax(f"{pointer}/enum", f"an enum or const value checked against the rest of its schema ({e}) (not enforced)")
            return True

    def _reference(self) -> Any:
        """The ``jsonschema`` validator of the root's draft (2020-12 if it names none)."""
        if self._validator is None:
            import jsonschema

            cls = jsonschema.validators.validator_for(self.root, default=jsonschema.Draft202012Validator)
            self._validator = cls(self.root, format_checker=cls.FORMAT_CHECKER)
        return self._validator

    # -- numbers ----------------------------------------------------------------------------------

    def _number_automaton(self, s: dict, pointer: str, *, integer: bool) -> ByteDFA | None:
        def dec(key: str) -> Decimal | None:
            v = s.get(key)
            if v is None or isinstance(v, bool):
                return None
            if not isinstance(v, (int, float)):
                raise SchemaError(f"{key} must be a number", pointer=f"{pointer}/{key}")
            try:
                return Decimal(str(v)) if isinstance(v, float) else Decimal(v)
            except InvalidOperation:
                raise SchemaError(f"{key} is not a finite number", pointer=f"{pointer}/{key}") from None

        lo, hi = dec("minimum"), dec("maximum")
        lo_x, hi_x = False, False
        for key, is_lo in (("exclusiveMinimum", True), ("exclusiveMaximum", False)):
            v = s.get(key)
            if isinstance(v, bool):  # draft-04: a flag on minimum/maximum
                if v:
                    lo_x, hi_x = (True, hi_x) if is_lo else (lo_x, True)
                continue
            d = dec(key)
            if d is None:
                continue
            if is_lo and (lo is None or d >= lo):
                lo, lo_x = d, True
            elif not is_lo and (hi is None or d <= hi):
                hi, hi_x = d, True
        multiples = s.get("multipleOf")
        mult = None
        if multiples is not None:
            items = multiples if isinstance(multiples, list) else [multiples]
            for m in items:
                if isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0:
                    raise SchemaError("multipleOf must be a number > 0", pointer=f"{pointer}/multipleOf")
            decs = [Decimal(str(m)) for m in items]
            mult = decs[0]
            for d in decs[1:]:
                mult = _lcm(mult, d)
        try:
            if integer:
                ilo = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
                ihi = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
                if lo is None and hi is None and mult is None:
                    return compile_regex(ANY_INTEGER_DRAFT4 if self._whole_integers else ANY_INTEGER)
                return integer_dfa(ilo, ihi, mult, max_modulus=self.limits.max_modulus, zero_fraction=not self._whole_integers)
            return number_dfa(lo, hi, lo_exclusive=lo_x, hi_exclusive=hi_x, multiple_of=mult, max_modulus=self.limits.max_modulus)
        except OverflowError as e:
            self.relax(f"{pointer}/multipleOf", f"multipleOf too fine to enforce exactly ({e})")
            s2 = {k: v for k, v in s.items() if k != "multipleOf"}
            return self._number_automaton(s2, pointer, integer=integer)

    # -- strings ----------------------------------------------------------------------------------

    def _string_cap(self, s: dict) -> dict:
        """``s`` with ``Policy.max_string_length`` as its maxLength when it gives none."""
        cap = self.policy.max_string_length
        if cap is None or "maxLength" in s:
            return s
        return {**s, "maxLength": max(cap, int(s.get("minLength", 0) or 0))}

    def _value_string(self, s: dict, pointer: str) -> ByteDFA:
        """The string values of ``s``, capped by the policy unless no string fits under the cap
        (a format or pattern that needs longer ones keeps the schema's own bound)."""
        capped = self._string_cap(s)
        dfa = self._string_automaton(capped, pointer)
        return self._string_automaton(s, pointer) if dfa.empty and capped is not s else dfa

    def _string_automaton(self, s: dict, pointer: str, *, counted: bool = True) -> ByteDFA:
        """The JSON text of the strings ``s`` allows. Length bounds past ``LAZY_LENGTH_FROM`` are
        counted by a lazy automaton (built as far as the text goes); where it cannot be used
        (``counted=False``: property names; a pattern with a minimum past
        ``Limits.max_counted_min``), bounds up to ``Limits.max_length_bound`` are tabulated and
        longer ones are a relaxation."""
        patterns = s.get("pattern")
        patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
        usable = []
        for p in patterns:
            try:
                check_pattern(p)
                usable.append(p)
            except UnsupportedPattern as e:
                self.relax(f"{pointer}/pattern", f"pattern {p!r} ({e})")
        formats = s.get("format")
        formats = [formats] if isinstance(formats, str) else list(formats or [])
        known = []
        for f in formats:
            if f in FORMATS:
                known.append(f)
            elif f in SPEC_FORMATS:  # a validator may check it: not enforcing it would admit what it rejects
                self.relax(f"{pointer}/format", f"unknown format {f!r} (not enforced)")
            else:
                self.annotations.append(f"format {f!r} at {pointer}/format: no JSON Schema draft defines it, so it "
                                        "is an annotation (validators ignore it)")
        lo = max(0, int(s.get("minLength", 0) or 0))
        hi = s.get("maxLength")
        hi = None if hi is None else int(hi)
        if hi is not None and hi < lo:
            return ByteDFA(*_empty_tables())
        why = "of a property name"
        if counted and ((hi is not None and hi > LAZY_LENGTH_FROM) or lo > LAZY_LENGTH_FROM):
            try:  # counted as far as the text goes, not tabulated
                return counted_string(pattern=usable, fmt=known, min_length=lo, max_length=hi, max_counted_min=self.limits.max_counted_min)
            except UnboundedProduct as e:  # tabulated below if short enough
                why = str(e)
        if (hi is not None and hi > self.limits.max_length_bound) or lo > self.limits.max_length_bound:
            self.relax(f"{pointer}", f"string length bounds beyond {self.limits.max_length_bound}, {why} (not enforced)")
            lo, hi = (lo if lo <= self.limits.max_length_bound else 0), (hi if hi is not None and hi <= self.limits.max_length_bound else None)
        return string_dfa(pattern=usable, fmt=known, min_length=lo, max_length=hi)

    # -- arrays -----------------------------------------------------------------------------------

    def array(self, s: dict, pointer: str) -> str | None:
        items = s.get("items", True)
        prefix = list(s.get("prefixItems", []))
        rest: Any = items
        if isinstance(items, list):  # draft-07 tuple form
            prefix, rest = items, s.get("additionalItems", True)
        lo = int(s.get("minItems", 0) or 0)
        hi = s.get("maxItems")
        hi = None if hi is None else int(hi)
        if s.get("uniqueItems") is True:
            self.relax(f"{pointer}/uniqueItems", "uniqueItems (duplicates are not prevented)")
        if "items" not in s and "unevaluatedItems" in s and not isinstance(items, list):
            rest = s["unevaluatedItems"]  # the items past prefixItems that nothing else evaluates
        elem = [self.value(p, f"{pointer}/prefixItems/{i}") for i, p in enumerate(prefix)]
        rest_rule = self.value(rest, f"{pointer}/items") if rest is not False else NEVER
        contains = s.get("contains")
        if contains is not None:  # counted on unbounded arrays only: max_items does not apply
            return self.array_contains(s, pointer, elem, rest, rest_rule, lo, hi)
        if hi is None and self.policy.max_items is not None and lo <= self.limits.max_items:
            hi = max(self.policy.max_items, lo)
        if rest_rule is NEVER:
            hi = len(prefix) if hi is None else min(hi, len(prefix))
        # the first prefix element that can never match caps the length
        for i, e in enumerate(elem):
            if e is NEVER:
                hi = i if hi is None else min(hi, i)
                break
        if hi is not None and hi < lo:
            return NEVER
        if hi is not None and hi > max(self.limits.max_items, len(prefix)):
            self.relax(f"{pointer}/maxItems", f"maxItems {hi} beyond {self.limits.max_items} (not enforced)")
            hi = None
        if lo > max(self.limits.max_items, len(prefix)):
            self.relax(f"{pointer}/minItems", f"minItems {lo} beyond {self.limits.max_items} (not enforced)")
            lo = max(self.limits.max_items, len(prefix))
        open_, close, comma = self.lit(b"["), self.lit(b"]"), self.lit(b",")

        def element(j: int) -> str | None:
            return elem[j] if j < len(elem) else rest_rule

        # tail(j): the rest of the array after j elements ("]" or "," element tail(j + 1));
        # past the counted part, an unbounded array loops on its rest elements.
        fixed = max(len(prefix), lo)
        last = hi if hi is not None else fixed
        tails: dict[int, str | None] = {}
        for j in range(last, 0, -1):
            alts: list[list[str | None]] = []
            if j >= lo:
                alts.append([close])
            if hi is None and j == last:
                if rest_rule is not NEVER:
                    alts.append([self.loop([comma, rest_rule]), close])
            elif j < last and element(j) is not NEVER:
                alts.append([comma, element(j), tails[j + 1]])
            tails[j] = self.rule(alts)
        if last == 0:  # no counted part: after the first element, loop
            alts = [[close]]
            if hi is None and rest_rule is not NEVER:
                alts.append([self.loop([comma, rest_rule]), close])
            tails[1] = self.rule(alts) if hi is None or hi >= 1 else NEVER
        first_alts: list[list[str | None]] = []
        if lo == 0:
            first_alts.append([open_, close])
        if hi is None or hi > 0:
            first_alts.append([open_, element(0), tails.get(1)])
        return self.rule(first_alts)

    def array_contains(self, s, pointer, elem, rest, rest_rule, lo, hi) -> str | None:
        """contains / minContains / maxContains: count the elements that match.

        With no maxContains, "at least n matches" needs no negation (the grammar is ambiguous:
        any element may be the one that matches). With maxContains, elements are split into
        "matches" and "does not match" (exact when the contains schema can be negated).
        """
        n_min = int(s.get("minContains", 1))
        n_max = s.get("maxContains")
        if elem or hi is not None or lo > 1:
            self.relax(f"{pointer}/contains", "contains together with prefixItems, maxItems or minItems > 1 (contains not enforced)")
            return self.array({k: v for k, v in s.items() if k not in ("contains", "minContains", "maxContains")}, pointer)
        if n_max is not None and int(n_max) < n_min:
            return NEVER
        item_schema = rest if rest is not True else {}
        both = self.value({"allOf": [item_schema, s["contains"]]}, f"{pointer}/contains")
        open_, close, comma = self.lit(b"["), self.lit(b"]"), self.lit(b",")
        if n_max is None:
            if n_min == 0:
                return self.array({k: v for k, v in s.items() if k not in ("contains", "minContains", "maxContains")}, pointer)
            if both is NEVER:
                return NEVER
            before = self.loop([rest_rule, comma]) if rest_rule else NEVER
            after = self.loop([comma, rest_rule]) if rest_rule else NEVER
            seq: list[list[str | None]] = [[both]]
            for _ in range(n_min - 1):
                mid = self.rule([[comma], [after, comma]]) if after else self.rule([[comma]])
                seq = [alt + [mid, both] for alt in seq]
            core = self.rule(seq)
            return self.rule([[open_, self.rule([[core], [before, core], [core, after], [before, core, after]]), close]])
        n_max = int(n_max)
        if n_max > self.limits.max_count:
            self.relax(f"{pointer}/maxContains", f"maxContains {n_max} beyond {self.limits.max_count} (not enforced)")
            return self.array_contains({k: v for k, v in s.items() if k != "maxContains"}, pointer, elem, rest, rest_rule, lo, hi)
        flat = self.flatten(item_schema, pointer) if isinstance(item_schema, dict) else {}
        miss_values = self.subtract(self.values(flat, pointer), flat, s["contains"], f"{pointer}/contains")
        miss = self.emit(miss_values)
        # tail[c]: c matches so far, at least one element written
        tails = [self.fresh() for _ in range(n_max + 1)]
        for c, name in enumerate(tails):
            alts: list[list[str | None]] = [[close]] if c >= n_min else []
            alts.append([comma, miss, name])
            if c < n_max:
                alts.append([comma, both, tails[c + 1]])
            self.rule(alts, name=name)
        first: list[list[str | None]] = [[open_, close]] if n_min == 0 else []
        first.append([open_, miss, tails[0]])
        if n_max >= 1:
            first.append([open_, both, tails[1]])
        return self.rule(first)

    # -- objects ----------------------------------------------------------------------------------

    def object(self, s: dict, pointer: str) -> str | None:
        props: dict = s.get("properties", {}) or {}
        if not isinstance(props, dict):
            raise SchemaError("properties must be an object", pointer=f"{pointer}/properties")
        required = list(dict.fromkeys(s.get("required", []) or []))
        patterns: dict = s.get("patternProperties", {}) or {}
        additional = s.get("additionalProperties", True)
        names = s.get("propertyNames")
        if s.get("dependentRequired") or s.get("dependentSchemas") or s.get("dependencies"):
            return self.object_dependencies(s, pointer)
        if "additionalProperties" not in s and "unevaluatedProperties" in s:
            # after merging, every property the schema evaluates is listed or patterned here:
            # what is left is exactly what unevaluatedProperties governs
            additional = s["unevaluatedProperties"]
        # extra_properties="forbid" on an object that leaves extra keys open: no member beyond the
        # named keys. A required key no property names keeps its spec value (any: ``additional``
        # is still True here), so requiring a key is declaring it.
        narrowed = self.policy.extra_properties == "forbid" and "additionalProperties" not in s and "unevaluatedProperties" not in s
        lo = int(s.get("minProperties", 0) or 0)
        hi = s.get("maxProperties")
        forbidden = set(s.get(ABSENT, []))
        # Known keys: the listed properties, required names that are not listed, and forbidden
        # names (listed so that the "other keys" automaton excludes them; they get no member).
        keys = list(dict.fromkeys([*props, *required, *sorted(forbidden)]))
        members: list[tuple[str, str | None, bool]] = []  # (key, value rule, required)
        name_dfa = self._key_automaton(names, pointer) if names not in (None, True) else None
        for key in keys:
            schemas = []
            if key in props:
                schemas.append(props[key])
            matching = [p for p in patterns if _pattern_matches(p, key)]
            schemas += [patterns[p] for p in matching]
            if key not in props and not matching:
                schemas.append(additional)
            if key in forbidden or (name_dfa is not None and not name_dfa.matches(_dumps(key))):
                schemas.append(False)
            sub = schemas[0] if len(schemas) == 1 else {"allOf": schemas}
            rule = self.value(sub, f"{pointer}/properties/{_pointer_escape(key)}")
            is_required = key in required
            if rule is NEVER and is_required:
                return NEVER
            members.append((key, rule, is_required))
        extra = self._extra_members(keys, patterns, False if narrowed else additional, name_dfa, pointer)
        n_required = len([m for m in members if m[2]])
        possible = len([m for m in members if m[1] is not NEVER])
        if narrowed and extra is None and lo > possible:
            self.emptied.append((pointer or "/", f"minProperties {lo} needs keys the object does not name (it names {possible})"))
            return NEVER
        hi = None if hi is None else int(hi)
        if hi is not None and hi < max(n_required, lo):
            return NEVER
        counts = (lo, hi)
        if lo <= n_required and hi is None:
            counts = (0, None)  # implied by the required properties
        elif max(lo, hi or 0) > self.limits.max_count:
            self.relax(f"{pointer}", f"minProperties/maxProperties beyond {self.limits.max_count} (not enforced)")
            counts = (0, None)
        if self.any_order and (n_required <= self.limits.max_any_order_required or counts[1] is None):
            return self._object_any_order(members, extra, counts)
        if self.any_order:
            self._keep_order(pointer, n_required)
        return self._object_rules(members, extra, counts)

    def object_dependencies(self, s: dict, pointer: str) -> str | None:
        """dependentRequired / dependentSchemas / dependencies as a union of object variants:
        for each trigger key, either it is absent, or it is present with what it requires."""
        required: dict[str, list[str]] = {}
        schemas: dict[str, Any] = {}
        for key, value in (s.get("dependencies") or {}).items():
            (required if isinstance(value, list) else schemas)[key] = value
        for key, value in (s.get("dependentRequired") or {}).items():
            required[key] = list(value)
        schemas.update(s.get("dependentSchemas") or {})
        triggers = list(dict.fromkeys([*required, *schemas]))
        base = {k: v for k, v in s.items() if k not in ("dependencies", "dependentRequired", "dependentSchemas")}
        if 2 ** len(triggers) > self.limits.max_union_product:
            self.relax(f"{pointer}/dependentRequired", f"{len(triggers)} property dependencies (not enforced)")
            return self.object(base, pointer)
        alts = []
        for mask in range(2 ** len(triggers)):
            variant = dict(base)
            absent = list(variant.get(ABSENT, []))
            need = list(variant.get("required", []))
            extra = []
            for i, key in enumerate(triggers):
                if mask >> i & 1:
                    need += [key, *required.get(key, [])]
                    if key in schemas:
                        extra.append(schemas[key])
                else:
                    absent.append(key)
            variant["required"] = list(dict.fromkeys(need))
            if absent:
                variant[ABSENT] = absent
            for j, sub in enumerate(extra):
                if sub is False:
                    variant = {"not": True}
                elif isinstance(sub, dict):
                    variant = _merge(variant, self.flatten(sub, f"{pointer}/dependentSchemas"), pointer, self)
            variant["type"] = "object"
            alts.append([self.flat_value(variant, pointer)])
        return self.rule(alts)

    def _key_automaton(self, names: Any, pointer: str) -> ByteDFA | None:
        """Keys allowed by propertyNames, as JSON strings: the string values of that schema, with
        every keyword it may hold (``not``, ``anyOf``, ``enum``, ...; a key is a string, so a
        schema of other types allows none). ``Policy.max_string_length`` does not apply (a key is
        not a value); length bounds past ``Limits.max_length_bound`` are a relaxation."""
        if names is False:
            return ByteDFA(*_empty_tables())
        if not isinstance(names, dict):
            return None
        where = f"{pointer}/propertyNames"
        flat = _merge(self.flatten(names, where), {"type": "string"}, where, self)
        policy, self.policy = self.policy, dataclasses.replace(self.policy, max_string_length=None)
        try:
            dfa = self.values(flat, where).scalar
        finally:
            self.policy = policy
        if dfa is None:
            return ByteDFA(*_empty_tables())
        dense = tabulated(dfa, self.limits.max_length_bound)
        if dense is not None:
            return dense
        # a length bound past max_length_bound: a plain string schema keeps its pattern and
        # format (``_string_automaton`` relaxes only the bounds); anything more is not enforced
        if set(flat) & {"not", "anyOf", "oneOf", "allOf", "if", "enum", "const"}:
            self.relax(where, f"string length bounds beyond {self.limits.max_length_bound} of a property name (not enforced)")
            return None
        return self._string_automaton(flat, where, counted=False)

    def _extra_members(self, keys, patterns, additional, name_dfa, pointer) -> str | None:
        """A rule for one member whose key is not a known property (None if none may appear).

        A key has many spellings (``"a"``, ``"\\u0061"``, ``"\\/"`` for ``"/"``), and each
        names the same key, so what is taken away from the extra keys must go in every spelling.
        The known keys and the patterns' automata hold one spelling of each key, the one
        ``json.dumps`` writes (escapes only where JSON needs them); so where anything is taken
        away, the extra keys are left that spelling only too (``_OTHER_FORM``): exact on it, and
        an extra key written with needless escapes is refused, never misread as a known one.
        """
        if additional is False and not patterns:
            return NEVER
        base = string_dfa() if name_dfa is None else name_dfa
        if keys or patterns:
            base = _written_keys() if name_dfa is None else product(base, _dfa("unwritten string"), "diff")
        if keys:
            names = [_dumps(k) for k in keys]
            base = minus_strings(base, names) if name_dfa is not None else _OTHER_KEYS.get(tuple(sorted(set(names))))
        colon = self.lit(b":")
        alts = []
        pattern_dfas = {}
        for p in patterns:
            try:
                check_pattern(p)
                pattern_dfas[p] = string_dfa(pattern=p)
            except UnsupportedPattern as e:
                self.relax(f"{pointer}/patternProperties", f"pattern {p!r} ({e})")
        plist = list(pattern_dfas)
        if len(plist) > self.limits.max_pattern_properties:
            self.relax(f"{pointer}/patternProperties", f"more than {self.limits.max_pattern_properties} patternProperties (overlaps not intersected)")
            for p in plist:
                key = self.term(product(base, pattern_dfas[p], "and"))
                alts.append([key, colon, self.value(patterns[p], f"{pointer}/patternProperties/{_pointer_escape(p)}")])
            plist = []
        for mask in range(1, 2 ** len(plist)):
            region = base
            chosen = []
            for i, p in enumerate(plist):
                region = product(region, pattern_dfas[p], "and" if mask >> i & 1 else "diff")
                if mask >> i & 1:
                    chosen.append(patterns[p])
            if region.empty:
                continue
            value = self.value(chosen[0] if len(chosen) == 1 else {"allOf": chosen}, f"{pointer}/patternProperties")
            alts.append([self.term(region), colon, value])
        if additional is not False:
            region = base
            for p in plist:
                region = product(region, pattern_dfas[p], "diff")
            if not region.empty:
                alts.append([self.term(region), colon, self.value(additional, f"{pointer}/additionalProperties")])
        return self.rule(alts)

    def _object_rules(self, members: list[tuple[str, str | None, bool]], extra: str | None, counts: tuple = (0, None)) -> str | None:
        """``{`` members in schema order, optional ones skippable, extra members anywhere ``}``.

        after[i, c]: c >= 1 members written and members i.. remain; first[i]: none yet. Without
        min/maxProperties, c is collapsed to one value.
        """
        open_, close, comma, colon = self.lit(b"{"), self.lit(b"}"), self.lit(b","), self.lit(b":")
        lo, hi = counts
        top = hi if hi is not None else max(lo, 1)
        n = len(members)
        present = [None if rule is NEVER else self.rule([[self.lit(_dumps(key)), colon, rule]]) for key, rule, _ in members]

        def bump(c: int) -> int | None:
            return min(c + 1, top) if hi is None else (c + 1 if c + 1 <= hi else None)

        after = {(i, c): self.fresh() for i in range(n + 1) for c in range(1, top + 1)}
        for i in range(n, -1, -1):
            required = i < n and members[i][2]
            for c in range(1, top + 1):
                name = after[(i, c)]
                nxt = bump(c)
                alts: list[list[str | None]] = [[]] if i == n and c >= lo else []
                if i < n:
                    if nxt is not None:
                        alts.append([comma, present[i], after[(i + 1, nxt)]])
                    if not required:
                        alts.append([after[(i + 1, c)]])
                if extra is not None and nxt is not None:
                    alts.append([comma, extra, after[(i, nxt)]])
                self.rule(alts, name=name)
        first: list[str | None] = [None] * (n + 1)
        for i in range(n, -1, -1):
            required = i < n and members[i][2]
            alts = [[]] if i == n and lo == 0 else []
            if i < n:
                if hi is None or hi >= 1:
                    alts.append([present[i], after[(i + 1, 1)]])
                if not required:
                    alts.append([first[i + 1]])
            if extra is not None and (hi is None or hi >= 1):
                alts.append([extra, after[(i, 1)]])
            first[i] = self.rule(alts)
        return self.rule([[open_, first[0], close]])

    def _object_any_order(self, members: list[tuple[str, str | None, bool]], extra: str | None, counts: tuple) -> str | None:
        """Members in any order; the rules track, under minProperties/maxProperties, how many
        members were written, and which required keys were seen: up to
        ``limits.max_any_order_required`` of them in the rules (2^r states), past that on the
        parser's stacks (the object's rule is a frame of ``MemberFrames``: it closes only once
        each required member's rule was reduced in it; no maxProperties then).

        A known key may repeat (every value is still valid, and JSON parsers keep the last one).
        """
        open_, close, comma, colon = self.lit(b"{"), self.lit(b"}"), self.lit(b","), self.lit(b":")
        lo, hi = counts
        units = [(None if rule is NEVER else self.rule([[self.lit(_dumps(key)), colon, rule]]), req) for key, rule, req in members]
        required = [i for i, (_, _, req) in enumerate(members) if req]
        tracked = [units[i][0] for i in required] if len(required) > self.limits.max_any_order_required else []
        if tracked:
            assert hi is None, "a tracked object has no maxProperties"  # ``object`` keeps the order then
            if any(u is None for u in tracked):
                return NEVER
            required = []
        bit = {i: 1 << j for j, i in enumerate(required)}
        full = (1 << len(required)) - 1
        top = hi if hi is not None else max(lo, 1)  # counts past lo are all alike when unbounded

        def bump(c: int) -> int | None:
            return min(c + 1, top) if hi is None else (c + 1 if c + 1 <= hi else None)

        seq = {(mask, c): self.fresh() for mask in range(full + 1) for c in range(1, top + 1)}
        for (mask, c), name in seq.items():
            alts: list[list[str | None]] = [[]] if mask == full and c >= lo else []
            nxt = bump(c)
            if nxt is not None:
                for i, (unit, req) in enumerate(units):
                    alts.append([comma, unit, seq[(mask | bit.get(i, 0), nxt)]])
                if extra is not None:
                    alts.append([comma, extra, seq[(mask, nxt)]])
            self.rule(alts, name=name)
        first: list[list[str | None]] = [[open_, close]] if full == 0 and lo == 0 else []
        if top >= 1 and (hi is None or hi >= 1):
            for i, (unit, req) in enumerate(units):
                first.append([open_, unit, seq[(bit.get(i, 0), 1)], close])
            if extra is not None:
                first.append([open_, extra, seq[(0, 1)], close])
        name = self.rule(first)
        if tracked and name is not NEVER:
            self.frames[name] = tracked  # type: ignore[assignment]
        return name


# -- helpers --------------------------------------------------------------------------------------


# Assertion keywords a declared draft does not have: its validators ignore them, and so does strict
# mode (docs/drafts.md). A schema that names no draft is read with every draft's keywords.
_LATER_THAN_7 = {"dependentRequired", "dependentSchemas", "prefixItems", "unevaluatedItems", "unevaluatedProperties",
                 "minContains", "maxContains", "$dynamicRef", "$recursiveRef"}  # fmt: skip
_NOT_IN_DRAFT = {
    "draft-04/": {"const", "contains", "propertyNames", "if", "then", "else", *_LATER_THAN_7},
    "draft-06/": {"if", "then", "else", *_LATER_THAN_7},
    "draft-07/": _LATER_THAN_7,
    "/2019-09/": {"prefixItems", "$dynamicRef"},
    "/2020-12/": {"dependencies", "$recursiveRef"},
}
# The formats each draft defines (as its validators check them); any other is an annotation there.
_DRAFT4_FORMATS = {"date-time", "email", "hostname", "idn-email", "ipv4", "ipv6", "regex", "uri"}
_DRAFT6_FORMATS = _DRAFT4_FORMATS | {"json-pointer", "uri-reference", "uri-template"}
_DRAFT7_FORMATS = _DRAFT6_FORMATS | {"date", "time", "idn-hostname", "iri", "iri-reference", "relative-json-pointer"}
_FORMATS_OF_DRAFT = {
    "draft-04/": _DRAFT4_FORMATS, "draft-06/": _DRAFT6_FORMATS, "draft-07/": _DRAFT7_FORMATS,
    "/2019-09/": _DRAFT7_FORMATS | {"duration", "uuid"}, "/2020-12/": _DRAFT7_FORMATS | {"duration", "uuid"},
}  # fmt: skip
_SUBSCHEMA = {"additionalProperties", "additionalItems", "items", "not", "contains", "propertyNames", "if", "then",
              "else", "unevaluatedItems", "unevaluatedProperties", "contentSchema"}  # fmt: skip
_SUBSCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems", "items"}
_SUBSCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}


def _in_its_draft(root: Any) -> Any:
    """``root`` without the keywords its declared ``$schema`` does not define, nor the formats
    (a copy; the same object when it declares none of drafts 4 to 2020-12). Under draft-04, a numeric
    ``exclusiveMinimum``/``exclusiveMaximum`` is read as that draft's validators read it: a flag."""
    declared = root.get("$schema") if isinstance(root, dict) else None
    draft = next((k for k in _NOT_IN_DRAFT if isinstance(declared, str) and k in declared), None)
    if draft is None:
        return root
    drop, formats = _NOT_IN_DRAFT[draft], _FORMATS_OF_DRAFT[draft]
    draft4 = "draft-04/" in declared

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        out = {}
        for k, v in node.items():
            if k in drop or (k == "format" and isinstance(v, str) and v not in formats):
                continue
            if draft4 and k in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(v, bool):
                v = bool(v)
            if k in _SUBSCHEMA_LISTS and isinstance(v, list):
                v = [walk(x) for x in v]
            elif k in _SUBSCHEMA_MAPS and isinstance(v, dict):
                v = {name: walk(x) for name, x in v.items()}
            elif k in _SUBSCHEMA:
                v = walk(v)
            out[k] = v
        return out

    return walk(root)


_JSON_CHAR = r'[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4}'
# An escape that is a second form of a character: ``\/``, or ``\uXXXX`` for anything but a control
# character without a short escape (written ``\u0004`` with lower-case hex, as json.dumps does).
_OTHER_FORM = (r"(?:\\/|\\u(?:[1-9a-fA-F][0-9a-fA-F]{3}|0[1-9a-fA-F][0-9a-fA-F]{2}|00[2-9a-fA-F][0-9a-fA-F]"
               r"|000[89aAcCdDBEF]|001[A-F]))")
_REGEXES = {
    "number": ANY_NUMBER,
    "string": rf'"(?:{_JSON_CHAR})*"',
    "unwritten number": NONCANONICAL_NUMBER,
    "unwritten string": rf'"(?:{_JSON_CHAR})*{_OTHER_FORM}(?:{_JSON_CHAR})*"',
}
# per kind of scalar: texts that bounded automata of that kind may not produce
_UNWRITTEN = {"number": "unwritten number", "string": "unwritten string"}


@lru_cache(maxsize=None)
def _dfa(name: str) -> ByteDFA:
    return compile_regex(_REGEXES[name])


@lru_cache(maxsize=1)
def _written_keys() -> ByteDFA:
    """Every key in the spelling ``json.dumps`` writes (``_extra_members``), built once."""
    return product(string_dfa(), _dfa("unwritten string"), "diff")


class _OtherKeysCache:
    """An object's other keys, ``_written_keys()`` minus its declared names, by the names
    (sorted, distinct): schemas that share definitions (Kubernetes resources, say) share these
    automata across compiles, and with them each automaton's lexer caches (successor lists,
    classification keys). Least recently used entries go past ``limit`` bytes of tables;
    thread-safe (a race builds one twice, and both results are the same language)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.entries: OrderedDict[tuple[bytes, ...], ByteDFA] = OrderedDict()
        self.bytes = 0

    def get(self, names: tuple[bytes, ...]) -> ByteDFA:
        with self.lock:
            found = self.entries.get(names)
            if found is not None:
                self.entries.move_to_end(names)
                return found
        dfa = minus_strings(_written_keys(), list(names))
        with self.lock:
            if names not in self.entries:
                self.entries[names] = dfa
                self.bytes += dfa.trans.nbytes
                while self.bytes > self.limit and len(self.entries) > 1:
                    self.bytes -= self.entries.popitem(last=False)[1].trans.nbytes
        return dfa


_OTHER_KEYS = _OtherKeysCache(DEFAULT_LIMITS.other_keys_cache_bytes)


def _has(dfa: ByteDFA, kind: str) -> bool:
    """Does ``dfa`` accept some text of ``kind`` ("number" or "string")? (A lazy automaton is a
    long counted string.)"""
    if isinstance(dfa, LazyUnion):  # a long string beside other scalars (numbers, say)
        return _has(dfa.a, kind) or _has(dfa.b, kind)
    if isinstance(dfa, LazyDFA):
        return kind == "string"
    return not product(dfa, _dfa(kind), "and").empty


def _empty_tables():
    import numpy as np

    return np.zeros((0, 256), dtype=np.int32), np.zeros(0, dtype=bool)


def _dumps(v: Any) -> bytes:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _spelled(v: Any, *, whole: bool = False) -> ByteDFA:
    return compile_regex(_spelling_regex(v, whole=whole)) if _is_number(v) else literal(_dumps(v))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= 2**53


def _spelling_regex(v: Any, *, whole: bool = False) -> str:
    """The JSON texts of a scalar, numbers in every decimal spelling equal to them: ``2``, ``2.0``,
    ``2.00`` (``whole``: ``2`` only, a draft-04 integer), ``0.5``, ``0.50``. (Exponent forms and
    ``-0`` are not written, as for bounded numbers; past 2**53, only the value's own text.)"""
    sign, digits, exponent = Decimal(repr(v) if isinstance(v, float) else v).normalize().as_tuple()
    text = "".join(map(str, digits))
    if exponent >= 0:  # integral
        whole_part, fraction = text + "0" * int(exponent), ""
    else:
        cut = len(text) + int(exponent)
        whole_part, fraction = (text[:cut] if cut > 0 else "0"), ("0" * max(0, -cut) + text[max(cut, 0):])
    head = ("-" if sign and (whole_part != "0" or fraction) else "") + whole_part
    if fraction:
        return re.escape(f"{head}.{fraction}") + "0*"
    return re.escape(head) + ("" if whole else r"(\.0+)?")


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _json_type(v: Any, types: list[str]) -> str | None:
    if v is None:
        t = "null"
    elif isinstance(v, bool):
        t = "boolean"
    elif isinstance(v, int) or isinstance(v, float) and v.is_integer():
        t = "integer" if "integer" in types else "number"
    elif isinstance(v, float):
        t = "number"
    elif isinstance(v, str):
        t = "string"
    elif isinstance(v, list):
        t = "array"
    else:
        t = "object"
    if t == "integer" and "integer" not in types and "number" in types:
        t = "number"
    return t if t in types else None


def _pattern_matches(pattern: str, key: str) -> bool:
    try:
        return re.fullmatch(ecma_to_python(pattern), key) is not None
    except (UnsupportedPattern, re.error):
        return False


def _lcm(a: Decimal, b: Decimal) -> Decimal:
    scale = max(-a.as_tuple().exponent, -b.as_tuple().exponent, 0)  # type: ignore[operator]
    ia, ib = int(a * 10**scale), int(b * 10**scale)
    return Decimal(ia * ib // math.gcd(ia, ib)) / Decimal(10**scale)


def _negate_object(n: dict) -> list[dict] | None:
    """Object schemas whose union is every object that fails ``n`` (None if not expressible).

    Handles ``required`` and ``properties``: an object fails {properties: {k: S}, required: R}
    iff some r in R is absent, or some listed k is present with a value failing S. A schema whose
    ``type`` or ``enum`` excludes objects fails every object; keywords of other types are ignored.
    """
    if n.get("not") is True or not _admits_objects(n):
        return [{}]
    if set(n) - _ANNOTATIONS - _STRING_KW - _NUMBER_KW - _ARRAY_KW - {"type", "properties", "required", ABSENT}:
        return None
    out_absent = [{"required": [k]} for k in n.get(ABSENT, [])]
    out: list[dict] = [{ABSENT: [r]} for r in n.get("required", [])]
    for key, sub in (n.get("properties") or {}).items():
        if sub is True or sub == {}:
            continue
        out.append({"required": [key], "properties": {key: False if sub is False else {"not": sub}}})
    return out + out_absent


def _admits_objects(n: dict) -> bool:
    """Do the ``type``, ``const`` and ``enum`` of a flat schema leave room for objects?"""
    t = n.get("type", "object")
    if "object" not in ([t] if isinstance(t, str) else t):
        return False
    values = [n["const"]] if "const" in n else n.get("enum")
    return values is None or any(isinstance(v, dict) for v in values)


def _disjoint(branches: list, compiler: _Compiler, part: str = "any") -> bool:
    """Can no JSON value satisfy two oneOf branches? (Checked on types, const discriminators, and
    for objects on keys one branch requires that the other forbids or types differently.)"""
    flats = []
    for b in branches:
        if not isinstance(b, dict):
            return False
        flats.append(compiler.flatten(b, ""))
    return all(_disjoint_pair(flats[i], flats[j], compiler, part) for i in range(len(flats)) for j in range(i + 1, len(flats)))


def _value_summary(flat: dict, compiler: _Compiler) -> tuple[set, set | None]:
    types = set(compiler.allowed_types(flat, ""))
    if "integer" in types:
        types.add("number")
    if "number" in types:
        types.add("integer")
    if "const" in flat:
        consts = {json.dumps(flat["const"], sort_keys=True)}
    elif "enum" in flat and isinstance(flat["enum"], list):
        consts = {json.dumps(x, sort_keys=True) for x in flat["enum"]}
    else:
        consts = None
    return types, consts


def _forbids(flat: dict, key: str) -> bool:
    """Does an object schema reject every object that has ``key``?"""
    props = flat.get("properties") or {}
    if props.get(key) is False or key in flat.get(ABSENT, []):
        return True
    nots = flat.get("not", [])
    for n in nots if isinstance(nots, list) else [nots]:
        if isinstance(n, dict) and set(n) - _ANNOTATIONS <= {"required", "type"} and n.get("required") == [key]:
            if n.get("type", "object") in ("object", ["object"]):
                return True
    if key in props or flat.get("additionalProperties", True) is not False:
        return False
    return not any(_pattern_matches(p, key) for p in flat.get("patternProperties") or {})


def _disjoint_pair(a: dict, b: dict, compiler: _Compiler, part: str, depth: int = 0) -> bool:
    ta, ca = _value_summary(a, compiler)
    tb, cb = _value_summary(b, compiler)
    common = ta & tb
    if part == "obj":
        common &= {"object"}
    elif part == "arr":
        common &= {"array"}
    if not common:
        return True
    if ca is not None and cb is not None and not ca & cb:
        return True
    if common != {"object"} or depth > compiler.limits.max_disjoint_depth:
        return False
    req_a, req_b = set(a.get("required") or []), set(b.get("required") or [])
    if any(_forbids(b, k) for k in req_a) or any(_forbids(a, k) for k in req_b):
        return True
    pa, pb = a.get("properties") or {}, b.get("properties") or {}
    for k in (req_a | req_b) & set(pa) & set(pb):
        x, y = pa[k], pb[k]
        if isinstance(x, dict) and isinstance(y, dict):
            if _disjoint_pair(compiler.flatten(x, ""), compiler.flatten(y, ""), compiler, "any", depth + 1):
                return True
    return False


def _merge(a: dict, b: dict, pointer: str, compiler: _Compiler) -> dict:
    """The intersection of two flat schemas (no allOf/$ref), keyword by keyword."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
            continue
        u = out[k]
        if k in _ANNOTATIONS or _json_equal(u, v):  # a keyword met twice with the same value: X and X is X
            continue
        if k == "type":
            ta = {u} if isinstance(u, str) else set(u)
            tb = {v} if isinstance(v, str) else set(v)
            both = ta & tb
            if "number" in ta and "integer" in tb or "integer" in ta and "number" in tb:
                both.add("integer")
            out[k] = sorted(both)
            if not both:
                out["not"] = True
        elif k in ("minimum", "minLength", "minItems", "minProperties", "minContains"):
            out[k] = max(u, v)
        elif k in ("maximum", "maxLength", "maxItems", "maxProperties", "maxContains"):
            out[k] = min(u, v)
        elif k in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(u, bool) and not isinstance(v, bool):
            out[k] = max(u, v) if k == "exclusiveMinimum" else min(u, v)
        elif k in ("required", ABSENT):
            out[k] = list(dict.fromkeys([*u, *v]))
        elif k == "properties":
            merged = dict(u)
            for name, sub in v.items():
                merged[name] = {"allOf": [merged[name], sub]} if name in merged else sub
            out[k] = merged
        elif k == "patternProperties":
            merged = dict(u)
            for p, sub in v.items():
                merged[p] = {"allOf": [merged[p], sub]} if p in merged else sub
            out[k] = merged
        elif k in ("additionalProperties", "items", "additionalItems", "propertyNames", "contains", "unevaluatedProperties", "unevaluatedItems"):
            out[k] = v if u is True else u if v is True else False if u is False or v is False else {"allOf": [u, v]}
        elif k == "prefixItems" or (k == "items" and isinstance(u, list)):
            out[k] = [({"allOf": [x, y]}) for x, y in zip(u, v)] + list(u[len(v):]) + list(v[len(u):])
        elif k in ("pattern", "format", "multipleOf"):
            out[k] = [*(u if isinstance(u, list) else [u]), *(v if isinstance(v, list) else [v])]
        elif k == "enum":
            out[k] = [x for x in u if any(_json_equal(x, y) for y in v)]
        elif k == "const":
            if not _json_equal(u, v):
                out["not"] = True
        elif k in ("anyOf", "oneOf"):
            # (A1 | A2) & (B1 | B2) = (A1 & B1) | (A1 & B2) | ...
            if len(u) * len(v) > compiler.limits.max_union_product:
                compiler.relax(pointer, f"allOf of unions with {len(u) * len(v)} combined branches (only the first union kept)")
                continue
            out[k] = [{"allOf": [x, y]} for x in u for y in v]
            if k == "oneOf":
                compiler.relax(pointer, "two oneOf lists in one allOf (read as anyOf)")
                out["anyOf"] = out.pop("oneOf")
        elif k == "not":
            out[k] = [*(u if isinstance(u, list) else [u]), *(v if isinstance(v, list) else [v])]
        elif k in ("dependencies", "dependentRequired", "dependentSchemas") and isinstance(u, dict) and isinstance(v, dict):
            # both members' dependencies apply: per key, union the required names, or allOf
            merged = dict(u)
            for name, dep in v.items():
                if name not in merged:
                    merged[name] = dep
                elif isinstance(merged[name], list) and isinstance(dep, list):
                    merged[name] = list(dict.fromkeys([*merged[name], *dep]))
                else:
                    as_schema = [{"required": d} if isinstance(d, list) else d for d in (merged[name], dep)]
                    merged[name] = {"allOf": as_schema}
            out[k] = merged
        elif k == "uniqueItems":
            out[k] = bool(u) or bool(v)
        elif k == "nullable":
            out[k] = bool(u) and bool(v)
        elif k in _HANDLED:
            compiler.relax(pointer, f"allOf with {k!r} in several members (the first is kept)")
        # any other keyword is unknown to the spec: an annotation, which asserts nothing
    if ("properties" in a or "properties" in b) and ("additionalProperties" in a or "additionalProperties" in b):
        # a property listed only in b must also pass a's additionalProperties (and vice versa)
        out = _cross_additional(out, a, b, pointer)
    if ("items" in a or "items" in b) and ("prefixItems" in a) != ("prefixItems" in b):
        # ``items`` in a member without prefixItems governs every element, the prefix included
        lone = b if "prefixItems" in a else a
        if "items" in lone and not isinstance(lone["items"], list):
            out["prefixItems"] = [{"allOf": [x, lone["items"]]} for x in out["prefixItems"]]
    if "anyOf" in a and "oneOf" in b or "oneOf" in a and "anyOf" in b:
        x = out.pop("anyOf")
        y = out.pop("oneOf")
        out["anyOf"] = [{"allOf": [p, q]} for p in x for q in y]
    return out


def _cross_additional(out: dict, a: dict, b: dict, pointer: str) -> dict:
    for this, other in ((a, b), (b, a)):
        extra = this.get("additionalProperties", True)
        if extra is True:
            continue
        listed = set(this.get("properties", {}) or {})
        pats = list((this.get("patternProperties") or {}))
        for name in (other.get("properties") or {}):
            if name in listed or any(_pattern_matches(p, name) for p in pats):
                continue
            props = dict(out.get("properties") or {})
            props[name] = False if extra is False else {"allOf": [props[name], extra]}
            out["properties"] = props
    return out


def _specification(declared: Any) -> Any:
    """The ``referencing`` specification of the declared ``$schema`` (2020-12 when there is none
    or it is unknown, as ``jsonschema.validators.validator_for`` defaults to the latest draft)."""
    from referencing.jsonschema import DRAFT202012, specification_with

    return specification_with(declared, default=DRAFT202012) if isinstance(declared, str) else DRAFT202012


def _id_of(spec: Any, node: dict) -> str | None:
    """The node's id as its draft reads it (``$id``; ``id`` under draft-04), None where there is
    none or it is not a string (a property named ``id`` in a ``properties`` map, say)."""
    try:
        ident = spec.id_of(node)
    except (AttributeError, TypeError):
        return None
    return ident if isinstance(ident, str) else None


def _registry(root: Any, spec: Any, base: str) -> Callable[[str], Any]:
    """``base URI -> referencing resolver`` over the schema (its embedded resources crawled) and
    the drafts' meta-schemas (shipped with jsonschema: no download)."""
    from jsonschema_specifications import REGISTRY

    registry = REGISTRY.with_resource(base, spec.create_resource(root))
    try:
        registry = registry.crawl()  # embedded resources and anchors, found up front
    except (AttributeError, TypeError):  # an id that is no string somewhere: resolve lazily instead
        pass
    return lambda uri: registry.resolver(base_uri=uri)


def _refuse_if_forbid_emptied(c: _Compiler, schema: Any) -> None:
    """Raise when the schema, which ``c`` (extra_properties="forbid") found empty, has instances
    under the spec: the policy, not the schema, left none."""
    allow = dataclasses.replace(c.policy, extra_properties="allow")
    spec = _Compiler(schema, whitespace=c._ws, lenient=c.lenient, any_order=c.any_order, limits=c.limits, policy=allow)
    if spec.value(schema, "") is NEVER:
        return
    pointer, why = c.emptied[0] if c.emptied else ("/", "an object needs a key it does not name")
    raise SchemaError(f"extra_properties='forbid' leaves no instance of this schema: {why} at {pointer}; name the keys in "
                      "properties, give additionalProperties, or pass extra_properties='allow'", pointer=pointer)


def compile_schema(
    schema: Any,
    *,
    whitespace: str | None = None,
    lenient: bool = False,
    any_order: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    policy: Policy = SPEC,
) -> CompiledSchema:
    """Compile a JSON Schema (a dict or boolean) into rules and terminal automata.

    ``SchemaError`` (lenient or not) when ``policy`` leaves no instance of a schema that has some.
    """
    schema = _in_its_draft(schema)
    c = _Compiler(schema, whitespace=whitespace, lenient=lenient, any_order=any_order, limits=limits, policy=policy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        top = c.value(schema, "")
        if top is NEVER and policy.extra_properties == "forbid":
            _refuse_if_forbid_emptied(c, schema)
    if top is NEVER:
        if not lenient:
            raise SchemaError("no JSON value satisfies this schema", pointer="/")
        c.warnings.append("no JSON value satisfies this schema: every output is rejected")
        return CompiledSchema("start", {}, {}, c.warnings)
    start_alts: list[list[str]] = [[top]]
    if whitespace is not None:
        ws = c.term(compile_regex(f"(?:{whitespace})"))
        if ws is not None and not c.terminals[ws].accepting[0]:
            start_alts += [[ws, top], [top, ws], [ws, top, ws]]
    c.rules["start"] = start_alts
    frames = MemberFrames(c.lit(b"{"), c.lit(b"}"), c.lit(b","), c.frames) if c.frames else None
    return CompiledSchema("start", c.rules, c.terminals, c.warnings, c.notes, c.annotations, frames)
