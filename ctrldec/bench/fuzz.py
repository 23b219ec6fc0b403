"""``ctrldec bench fuzz``: differential fuzzing of the engine against the reference implementations.

Three checks, each comparing ctrldec with a reference it does not share code with:

* **JSON Schema.** Random schemas over the keywords strict mode supports (hypothesis strategies of
  our own, drafts 4, 7 and 2020-12), compiled in strict mode with the spec's language
  (``extra_properties="allow"``). Instances: valid ones from ``hypothesis-jsonschema``, mutations
  of them (mostly invalid) and arbitrary JSON values. The verdict of ``JSONSchema.matches`` must
  equal the ``jsonschema`` validator of the schema's own draft with that draft's format checker.
  Instances are written compactly with keys in the schema's order (every generated schema lists
  its properties sorted, so sorted keys are the schema's order) or, for a schema compiled with
  ``property_order="any"``, shuffled (in a third of the rounds, with every object's required keys
  tracked by the parser rather than by rule states). Valid instances are also replayed token by token under a
  random non-canonical tokenization (``is_accepting`` at the end) and, with flexible whitespace,
  with random whitespace around every ``{ } [ ] , :``.
* **Grammars.** Random Lark grammars (LALR(1) without conflicts: the ones Lark's strict mode
  refuses are skipped, since Lark resolves a shift/reduce conflict silently) over terminals
  whose first characters differ (so greedy lexing and Lark's lexer read a text the same way),
  sentences sampled from them and mutations of those sentences: ``Grammar.matches`` must equal
  whether Lark's own LALR parser accepts the text.
* **Masks.** At random positions of those replays: the next token of the text is in the mask;
  every sampled allowed token leads to a completion (the engine's shortest one) that the
  *reference* accepts; EOS is allowed exactly when the reference accepts the prefix; a sample of
  disallowed tokens is not a viable prefix of the byte automaton.

Every disagreement is reported with the schema or grammar and the text, so it can be kept as a
regression case (``tests/fuzz_corpus/``, replayed by ``tests/test_fuzz.py``).

>>> report = run(budget=0.0, tokenizer=None)  # no time: nothing tried, nothing found
>>> report["disagreements"]
[]
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import warnings
from decimal import Decimal
from typing import Any, Callable, Iterator

__all__ = ["run", "format_report", "schema_verdicts", "grammar_verdict", "replay_case", "save_cases"]

NAMES = ["a", "b", "c", "id", "n", "x"]  # property names; listed sorted in every schema
PATTERNS = ["^[a-z]+$", "^a", "b$", "^[0-9]{2,3}$", "x|yz", "^(ab)*$", "[0-9]", "^.{2}$"]
# jsonschema's checker takes any string with an "@" as an email; ctrldec writes RFC 5321-style
# addresses only (sound: a subset). Valid instances rejected for that are counted, not reported.
NARROWER_FORMATS = ("email", "idn-email")
UNRESOLVED = "unresolved: "
FORMATS = ["date", "time", "date-time", "email", "ipv4", "ipv6", "uuid", "hostname", "uri", "duration"]
DRAFTS = {
    "4": "http://json-schema.org/draft-04/schema#",
    "7": "http://json-schema.org/draft-07/schema#",
    "2020": "https://json-schema.org/draft/2020-12/schema",
}


# -- JSON Schema ------------------------------------------------------------------------------------


def _property_names(st: Any, string: Any) -> Any:
    """Schemas for ``propertyNames``: string schemas, their negations, enums and consts of
    ``NAMES``, a union, and a type no key has."""
    return st.one_of(
        string, st.builds(lambda v: {"not": v}, string),
        st.builds(lambda v: {"enum": v}, st.lists(st.sampled_from(NAMES), min_size=1, max_size=3)),
        st.builds(lambda v: {"not": {"const": v}}, st.sampled_from(NAMES)),
        st.sampled_from([{"type": "integer"}, {"anyOf": [{"const": "a"}, {"pattern": "^x"}]}]),
    )


def _strategies() -> Any:
    """The hypothesis strategies (imported lazily: hypothesis is a test and bench dependency)."""
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-5, 12), st.sampled_from([0.5, -1.25, 3.0, 1e3]),
        st.sampled_from(["", "a", "ab", "x", "2020-01-01", "b1"]),
    )
    json_values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(NAMES + ["zz"]), inner, max_size=3)
        ),
        max_leaves=6,
    )

    @st.composite
    def number(draw: Any, draft: str) -> dict:
        kind = draw(st.sampled_from(["integer", "number"]))
        out: dict[str, Any] = {"type": kind}
        pick = (lambda: draw(st.integers(-10, 10))) if kind == "integer" else (lambda: draw(st.sampled_from([-2.5, 0, 0.5, 1, 7.25, 10])))
        if draw(st.booleans()):
            out["minimum"] = pick()
        if draw(st.booleans()):
            out["maximum"] = pick()
        if draw(st.integers(0, 3)) == 0:
            if draft == "4":
                if "minimum" in out:
                    out["exclusiveMinimum"] = draw(st.booleans())
            else:
                out["exclusiveMaximum"] = pick()
        if draw(st.integers(0, 3)) == 0:
            out["multipleOf"] = draw(st.sampled_from([2, 3, 5] if kind == "integer" else [0.5, 0.25, 2]))
        return out

    @st.composite
    def string(draw: Any) -> dict:
        out: dict[str, Any] = {"type": "string"}
        if draw(st.booleans()):
            out["minLength"] = draw(st.integers(0, 3))
        if draw(st.booleans()):
            out["maxLength"] = draw(st.integers(0, 12))
        which = draw(st.integers(0, 4))
        if which == 0:
            out["pattern"] = draw(st.sampled_from(PATTERNS))
        elif which == 1:
            out["format"] = draw(st.sampled_from(FORMATS))
        return out

    def leaves(draft: str) -> Any:
        return st.one_of(
            st.sampled_from([{"type": "null"}, {"type": "boolean"}, {}, {"type": ["string", "null"]}, {"type": ["integer", "boolean"]}]),
            number(draft),
            string(),
            st.builds(lambda v: {"enum": v}, st.lists(scalars, min_size=1, max_size=4)),
            st.builds(lambda v: {"const": v}, json_values),
            st.builds(lambda lo: {"minimum": lo}, st.integers(-3, 3)),  # no type: numbers only
        )

    @st.composite
    def array(draw: Any, child: Any, draft: str) -> dict:
        out: dict[str, Any] = {"type": "array"}
        if draw(st.booleans()):
            out["items"] = draw(child)
        if draw(st.integers(0, 3)) == 0:
            prefix = draw(st.lists(child, min_size=1, max_size=2))
            if draft == "2020":
                out["prefixItems"] = prefix
            else:
                out["additionalItems"] = out.pop("items", True)
                out["items"] = prefix
        if draw(st.booleans()):
            out["minItems"] = draw(st.integers(0, 2))
        if draw(st.booleans()):
            out["maxItems"] = draw(st.integers(0, 4))
        if draw(st.integers(0, 4)) == 0:
            out["uniqueItems"] = True
        if draft != "4" and draw(st.integers(0, 5)) == 0:
            out["contains"] = draw(child)
        return out

    @st.composite
    def obj(draw: Any, child: Any, draft: str) -> dict:
        out: dict[str, Any] = {"type": "object"}
        names = sorted(draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4)))
        if names:
            out["properties"] = {k: draw(child) for k in names}
        # a required key no property lists comes after the listed ones in the schema's order:
        # drawn from the names that sort after them, so sorted keys stay the schema's order
        later = [k for k in NAMES if not names or k in names or k > names[-1]]
        required = draw(st.lists(st.sampled_from(later), unique=True, max_size=3))
        if required:
            out["required"] = sorted(required)
        extra = draw(st.integers(0, 3))
        if extra == 0:
            out["additionalProperties"] = False
        elif extra == 1:
            out["additionalProperties"] = draw(child)
        if draw(st.integers(0, 5)) == 0:
            out["patternProperties"] = {"^x": draw(child)}
        if draft != "4" and draw(st.integers(0, 5)) == 0:
            out["propertyNames"] = draw(_property_names(st, string()))
        if draw(st.integers(0, 4)) == 0:
            out["minProperties"] = draw(st.integers(0, 2))
        if draw(st.integers(0, 4)) == 0:
            out["maxProperties"] = draw(st.integers(0, 3))
        return out

    def containers(child: Any, draft: str) -> Any:
        return st.one_of(
            array(child, draft),
            obj(child, draft),
            st.builds(lambda k, v: {k: v}, st.sampled_from(["anyOf", "oneOf", "allOf"]), st.lists(child, min_size=1, max_size=3)),
            st.builds(lambda v: {"not": v}, leaves(draft)),
        )

    @st.composite
    def schemas(draw: Any) -> dict:
        draft = draw(st.sampled_from(sorted(DRAFTS)))
        body = draw(st.recursive(leaves(draft), lambda c: containers(c, draft), max_leaves=6))
        return {"$schema": DRAFTS[draft], **body}

    return st, schemas(), json_values


def validator(schema: Any) -> Any:
    """The reference: the ``jsonschema`` validator of the schema's own draft, that draft's format checker."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _ordered(value: Any, shuffle: random.Random | None) -> Any:
    """``value`` with every object's keys sorted (the generated schemas' order) or shuffled."""
    if isinstance(value, list):
        return [_ordered(v, shuffle) for v in value]
    if isinstance(value, dict):
        keys = sorted(value)
        if shuffle is not None:
            shuffle.shuffle(keys)
        return {k: _ordered(value[k], shuffle) for k in keys}
    return value


def dumps(value: Any, *, exponents: bool = False) -> str:
    """Compact JSON. Numbers are written without exponents (``1e+20`` as ``100000000000000000000.0``)
    unless ``exponents``: ctrldec writes bounded numbers in that form only (``numbers.py``), and
    every number has it, so no valid value is out of reach."""
    if exponents:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + dumps(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not a JSON number")
        text = format(Decimal(repr(value)), "f")
        text = text.lstrip("-") if value == 0 else text
        return text if "." in text else text + ".0"
    return json.dumps(value, ensure_ascii=False)


def _spaced(text: str, rng: random.Random, most: int) -> str:
    """``text`` (compact JSON) with 0 to ``most`` whitespace characters around each structural
    character outside strings."""
    out, in_string, escaped = [], False, False
    for ch in text:
        if in_string:
            out.append(ch)
            in_string = escaped or ch != '"'
            escaped = not escaped and ch == "\\"
            continue
        if ch in "{}[],:":
            out.append("".join(rng.choice(" \n\t\r") for _ in range(rng.randint(0, most // 2))))
            out.append(ch)
            out.append("".join(rng.choice(" \n\t\r") for _ in range(rng.randint(0, most // 2))))
        else:
            out.append(ch)
            in_string = ch == '"'
    return "".join(out)


def _respelled(text: str, rng: random.Random, share: float = 0.3) -> str:
    """``text`` (JSON) with about ``share`` of the raw characters in its strings, keys included,
    written another way JSON allows: ``\\uXXXX`` with hex letters in either case (a surrogate
    pair past U+FFFF), or ``\\/``. The value is the same; only the spelling differs."""

    def other(ch: str) -> str:
        if ch == "/" and rng.random() < 0.5:
            return "\\/"
        cp = ord(ch)
        units = [cp] if cp < 0x10000 else [0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)]
        return "".join("\\u" + "".join(d.upper() if rng.random() < 0.5 else d for d in f"{u:04x}") for u in units)

    out, i, in_string = [], 0, False
    while i < len(text):
        ch = text[i]
        if in_string and ch == "\\":  # an escape stays as it is
            width = 6 if text[i + 1] == "u" else 2
            out.append(text[i : i + width])
            i += width
            continue
        if in_string and ch != '"' and rng.random() < share:
            out.append(other(ch))
        else:
            out.append(ch)
            in_string = in_string != (ch == '"')
        i += 1
    return "".join(out)


def mutate(value: Any, rng: random.Random, json_value: Callable[[], Any]) -> Any:
    """A small random change somewhere in ``value`` (most make it invalid)."""
    if isinstance(value, (list, dict)) and value and rng.random() < 0.7:
        if isinstance(value, list):
            i = rng.randrange(len(value))
            op = rng.random()
            if op < 0.2:
                return value[:i] + value[i + 1 :]
            if op < 0.35:
                return value + [value[i]]
            return value[:i] + [mutate(value[i], rng, json_value)] + value[i + 1 :]
        k = rng.choice(sorted(value))
        op = rng.random()
        if op < 0.2:
            return {j: v for j, v in value.items() if j != k}
        if op < 0.35:
            return {**value, rng.choice(NAMES + ["zz"]): json_value()}
        return {**value, k: mutate(value[k], rng, json_value)}
    if isinstance(value, bool) or value is None:
        return json_value()
    if isinstance(value, int):
        return rng.choice([value + 1, value - 1, -value, value * 2, value + 0.5, str(value)])
    if isinstance(value, float):
        return rng.choice([value + 0.25, -value, int(value), value * 3])
    if isinstance(value, str):
        i = rng.randint(0, len(value))
        return rng.choice([value[:i] + rng.choice("a0-:. Z") + value[i:], value[:i] + value[i + 1 :], value * 2, 0])
    return json_value()


def _keywords(options: dict) -> dict:
    """A case's options (JSON, as the corpus keeps them) as ``JSONSchema`` keywords:
    ``tracked_from`` is ``limits.max_any_order_required`` (1: the parser tracks the required
    keys of every object that has two or more, ``engine.lalr.RequiredMembers``, instead of rule
    states)."""
    from ..limits import Limits

    out = dict(options)
    if "tracked_from" in out:
        out["limits"] = Limits(max_any_order_required=out.pop("tracked_from"))
    return out


def schema_verdicts(schema: Any, text: str, *, options: dict | None = None) -> tuple[bool | None, bool]:
    """(ctrldec's verdict or None if the schema does not compile in strict mode, the reference's)."""
    import ctrldec

    try:
        reference = validator(schema).is_valid(json.loads(text))
    except ValueError:
        reference = False
    try:
        ours = ctrldec.JSONSchema(schema, extra_properties="allow", **_keywords(options or {})).matches(text)
    except ctrldec.SchemaError:
        return None, reference
    return ours, reference


def _beyond_floats(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_beyond_floats(v) for v in value.values())
    if isinstance(value, list):
        return any(_beyond_floats(v) for v in value)
    return isinstance(value, float) and abs(value) > 2**53


def _canonical(data: bytes) -> bool:
    """Is ``data`` JSON written as ``dumps`` writes it (so ctrldec must accept it when valid)?"""
    try:
        text = data.decode("utf-8")
        return dumps(json.loads(text)) == text
    except ValueError:
        return False


def _duplicate_keys(text: str) -> bool:
    seen = False

    def hook(pairs: list) -> dict:
        nonlocal seen
        seen = seen or len({k for k, _ in pairs}) != len(pairs)
        return dict(pairs)

    try:
        json.loads(text, object_pairs_hook=hook)
    except ValueError:
        return False
    return seen


# -- tokens and masks -----------------------------------------------------------------------------


class _Tokens:
    """Random tokenizations of a text with one tokenizer's vocabulary."""

    def __init__(self, info: Any) -> None:
        self.info = info
        self.by_bytes: dict[bytes, int] = {}
        for t, b in enumerate(info.token_bytes):
            if b and b not in self.by_bytes:
                self.by_bytes[b] = t
        self.longest = max(map(len, self.by_bytes))
        self.eos = set(info.eos_token_ids)

    def split(self, data: bytes, rng: random.Random) -> list[int] | None:
        out, i = [], 0
        while i < len(data):
            choices = [self.by_bytes[data[i : i + n]] for n in range(1, min(self.longest, len(data) - i) + 1) if data[i : i + n] in self.by_bytes]
            if not choices:
                return None
            t = rng.choice(choices)
            out.append(t)
            i += len(self.info.token_bytes[t])
        return out


def _check_replay(
    constraint: Any, tokens: _Tokens, data: bytes, expect: bool, reference: Callable[[bytes], bool], rng: random.Random,
    probes: int, canonical: Callable[[bytes], bool] = lambda _: True, comparable: Callable[[bytes], bool] = lambda _: True,
) -> list[str]:
    """Replay ``data`` token by token (a random tokenization) and probe masks at ``probes``
    random positions. Returns what went wrong (empty: nothing)."""
    ids = tokens.split(data, rng)
    if ids is None:
        return []
    compiled = constraint.compile(tokens.info)
    m = compiled.matcher()
    at = set(rng.sample(range(len(ids) + 1), min(probes, len(ids) + 1)))
    done = b""
    problems: list[str] = []
    for i in range(len(ids) + 1):
        if i in at:
            problems += _probe(compiled, m, tokens, done, ids[i] if i < len(ids) else None, reference, canonical, comparable, rng)
        if i == len(ids):
            break
        if not m.accepts(ids[i]):
            if expect:
                problems.append(f"token {i} ({tokens.info.token_bytes[ids[i]]!r}) of a valid text rejected")
            return problems
        m.advance(ids[i])
        done += tokens.info.token_bytes[ids[i]]
    if m.is_accepting() != expect:
        problems.append(f"token replay ends {'accepting' if m.is_accepting() else 'not accepting'}, reference says {expect}")
    return problems


def _probe(
    compiled: Any, m: Any, tokens: _Tokens, done: bytes, nxt: int | None, reference: Callable[[bytes], bool],
    canonical: Callable[[bytes], bool], comparable: Callable[[bytes], bool], rng: random.Random,
) -> list[str]:
    """One mask against ``accepts``, the reference (EOS exactly where it accepts a text written in
    the canonical form) and the byte automaton (masked tokens are not viable prefixes); allowed
    tokens must lead to a completion the reference accepts."""
    allowed = set(m.allowed_token_ids().tolist())
    problems = []
    if nxt is not None and (nxt in allowed) != m.accepts(nxt):
        problems.append(f"after {done!r}: next token {tokens.info.token_bytes[nxt]!r}: accepts and the mask differ")
    eos, valid = bool(allowed & tokens.eos), reference(done)
    if comparable(done) and (eos and not valid or valid and not eos and canonical(done)):
        problems.append(f"after {done!r}: EOS {'allowed' if eos else 'masked'}, reference says {valid}")
    for t in rng.sample(sorted(allowed - tokens.eos), min(4, len(allowed - tokens.eos))):
        head = done + tokens.info.token_bytes[t]
        after = m.fork()
        after.advance(t)
        tail = after.shortest_completion()  # built from the grammar; else a bounded byte search
        tail = compiled.completion(head) if tail is None else tail
        if tail is not None and (_duplicate_keys((head + tail).decode("utf-8", "replace")) or not comparable(head + tail)):
            continue  # extra keys may repeat (a documented gap: no per-object memory of keys)
        if tail is None:  # Lark's tables carry no kernel items: the byte search may give up
            problems.append(f"{UNRESOLVED}after {done!r}: allowed token {tokens.info.token_bytes[t]!r}: no completion found")
        elif not reference(head + tail):
            problems.append(f"after {done!r}: allowed token {tokens.info.token_bytes[t]!r} has no completion the reference accepts ({tail!r})")
    others = [t for t in rng.sample(range(len(tokens.info.token_bytes)), 64) if t not in allowed and tokens.info.token_bytes[t]]
    for t in others[:8]:
        if compiled.is_prefix(done + tokens.info.token_bytes[t]):
            problems.append(f"after {done!r}: token {tokens.info.token_bytes[t]!r} masked but a viable prefix")
    return problems


# -- grammars -------------------------------------------------------------------------------------

# terminals whose first characters differ, so any greedy reading of a text is Lark's reading too
LITERALS = ["(", ")", "[", "]", ",", ";", "+", "*", ":=", "->", "{", "}", "!"]
REGEXES = {"NUM": ("/[0-9]+/", "0123456789"), "NAME": ("/[a-z]+/", "abcxyz"), "STR": ('/"[^"]*"/', None)}


def _grammar_strategy() -> Any:
    from hypothesis import strategies as st

    @st.composite
    def grammars(draw: Any) -> tuple[str, bool]:
        n = draw(st.integers(1, 4))
        lits = draw(st.lists(st.sampled_from(LITERALS), min_size=1, max_size=6, unique=True))
        regs = draw(st.lists(st.sampled_from(sorted(REGEXES)), max_size=2, unique=True))
        symbols = [json.dumps(x) for x in lits] + regs + [f"r{i}" for i in range(n)]

        def item(depth: int) -> str:
            base = draw(st.sampled_from(symbols))
            if depth < 1 and draw(st.integers(0, 4)) == 0:
                base = "(" + " ".join(item(depth + 1) for _ in range(draw(st.integers(1, 2)))) + ")"
            return base + draw(st.sampled_from(["", "", "", "?", "*", "+"]))

        lines = []
        for i in range(n):
            alts = [" ".join(item(0) for _ in range(draw(st.integers(1, 3)))) for _ in range(draw(st.integers(1, 3)))]
            lines.append(f"{'start' if i == 0 else f'r{i}'}: " + " | ".join(alts))
        lines = [line.replace("r0", "start") for line in lines]
        lines += [f"{name}: {REGEXES[name][0]}" for name in regs]
        spaces = draw(st.booleans())
        if spaces:
            lines.append('%ignore " "')
        return "\n".join(lines) + "\n", spaces

    return grammars()


def _sentence(parser: Any, rng: random.Random, spaces: bool, depth: int = 12) -> str | None:
    """A random sentence: random choices from Lark's rule list, the shortest way out when deep."""
    by_origin: dict[str, list] = {}
    for rule in parser.rules:
        by_origin.setdefault(rule.origin.name, []).append([s.name for s in rule.expansion])
    terminals = {t.name: t.pattern for t in parser.terminals}
    height: dict[str, int] = {name: 0 for name in terminals}
    changed = True
    while changed:  # shortest derivation heights, to get out of recursion
        changed = False
        for name, alts in by_origin.items():
            best = min((1 + max((height.get(s, 10**9) for s in alt), default=0) for alt in alts), default=10**9)
            if best < height.get(name, 10**9):
                height[name], changed = best, True
    if height.get("start", 10**9) >= 10**9:
        return None
    out: list[str] = []

    def walk(name: str, d: int) -> None:
        if name in terminals:
            out.append(_lexeme(name, terminals[name], rng))
            return
        def tall(alt: list[str]) -> int:
            return max((height.get(s, 10**9) for s in alt), default=0)

        alts = [a for a in by_origin[name] if tall(a) < 10**9]  # productive ones only
        if d > depth:
            alts = [min(alts, key=tall)]
        for s in rng.choice(alts):
            walk(s, d + 1)

    walk("start", 0)
    joiner = (lambda: " " * rng.randint(0, 2)) if spaces else (lambda: "")
    return "".join(piece + joiner() for piece in out)


def _lexeme(name: str, pattern: Any, rng: random.Random) -> str:
    if pattern.type == "str":
        return pattern.value
    for key, (_, alphabet) in REGEXES.items():
        if name == key or pattern.value == REGEXES[key][0][1:-1]:
            if alphabet is None:
                return '"' + "".join(rng.choice("ab 1") for _ in range(rng.randint(0, 3))) + '"'
            return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
    return pattern.value


def grammar_verdict(grammar_text: str, text: str) -> tuple[bool | None, bool | None]:
    """(ctrldec's verdict or None if it does not compile, Lark's or None if Lark refuses the grammar)."""
    import lark

    import ctrldec

    try:
        parser = lark.Lark(grammar_text, parser="lalr", strict=True)
    except lark.exceptions.LarkError:
        return None, None
    try:
        parser.parse(text)
        reference = True
    except lark.exceptions.LarkError:
        reference = False
    try:
        ours = ctrldec.Grammar(grammar_text).matches(text)
    except ctrldec.GrammarError:
        return None, reference
    return ours, reference


def _text_mutations(text: str, rng: random.Random, alphabet: str) -> Iterator[str]:
    for _ in range(4):
        i = rng.randint(0, len(text))
        yield rng.choice([
            text[:i] + rng.choice(alphabet) + text[i:],
            text[:i] + text[i + 1 :],
            text[:i],
            text[:i] + text[i:][::-1],
            text + text[i:],
        ])


# -- the run ----------------------------------------------------------------------------------------


class _Report:
    def __init__(self) -> None:
        self.counts = {
            "schemas": 0, "schemas_compiled": 0, "instances": 0, "instances_valid": 0, "token_replays": 0,
            "grammars": 0, "grammars_compiled": 0, "texts": 0, "texts_valid": 0, "mask_probes": 0,
            "skipped": 0, "narrower_format": 0, "unresolved": 0, "respelled": 0,
        }
        self.disagreements: list[dict] = []
        self.unresolved: list[dict] = []  # grammar mask probes whose completion search gave up

    def disagree(self, case: dict) -> None:
        if len(self.disagreements) < 200:
            self.disagreements.append(case)


class _SchemaCase:
    """One compiled schema and its reference: checks instance texts against both."""

    def __init__(self, schema: dict, options: dict, constraint: Any) -> None:
        self.schema, self.options, self.constraint = schema, options, constraint
        self.check = validator(schema)
        text = json.dumps(schema)
        self.arithmetic = "multipleOf" in text or "integer" in text
        self.narrower = any(f'"format": "{f}"' in text for f in NARROWER_FORMATS)

    def rounded(self, text: str) -> bool:
        """Past 2**53 the reference decides integer-ness and multiples on a rounded binary
        float, ctrldec on the exact decimal: no verdict to compare."""
        try:
            return self.arithmetic and _beyond_floats(json.loads(text))
        except ValueError:
            return False

    def comparable(self, data: bytes) -> bool:
        return not self.rounded(data.decode("utf-8", "replace"))

    def reference(self, data: bytes) -> bool:
        try:
            return bool(self.check.is_valid(json.loads(data.decode("utf-8"))))
        except ValueError:
            return False

    def run(self, report: _Report, text: str, rng: random.Random, tokens: _Tokens | None) -> None:
        """Verdict, exponent form, flexible whitespace and a token replay for one instance."""
        import ctrldec

        if _duplicate_keys(text) or self.rounded(text):
            report.counts["skipped"] += 1
            return
        expect = self.reference(text.encode())
        ours = self.constraint.matches(text)
        report.counts["instances"] += 1
        report.counts["instances_valid"] += expect
        case = {"kind": "schema", "schema": self.schema, "options": self.options, "text": text, "reference": expect}
        if ours != expect:
            if expect and self.narrower:
                report.counts["narrower_format"] += 1
            else:
                report.disagree({**case, "ctrldec": ours, "what": "verdict"})
            return
        plain = dumps(json.loads(text), exponents=True)  # Python's own number forms
        if plain != text and not expect and self.constraint.matches(plain):
            report.disagree({**case, "text": plain, "ctrldec": True, "what": "verdict (exponent form)"})
        # the same value with its strings spelled with escapes: ctrldec writes one spelling of a
        # key or a patterned string, so it may refuse this text when valid, never accept it when not
        respelled = _respelled(text, rng)
        if respelled != text:
            report.counts["respelled"] += 1
            if not expect and self.constraint.matches(respelled):
                report.disagree({**case, "text": respelled, "ctrldec": True, "what": "verdict (respelled)"})
        if expect:
            spaced = _spaced(text, rng, 4)
            flexible = {**self.options, "whitespace": "flexible"}
            if not ctrldec.JSONSchema(self.schema, extra_properties="allow", **_keywords(flexible)).matches(spaced):
                report.disagree({**case, "text": spaced, "options": flexible, "ctrldec": False, "what": "flexible whitespace"})
        if tokens is not None and (expect or rng.random() < 0.3):
            report.counts["token_replays"] += 1
            report.counts["mask_probes"] += 2
            for problem in _check_replay(self.constraint, tokens, text.encode(), expect, self.reference, rng, 2, _canonical, self.comparable):
                report.disagree({**case, "ctrldec": problem, "what": "tokens"})


def _schema_round(report: _Report, tokens: _Tokens | None, seed: int, examples: int) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis_jsonschema import from_schema

    import ctrldec

    st, schemas, json_values = _strategies()

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(schema=schemas, data=st.data())
    def one(schema: dict, data: Any) -> None:
        report.counts["schemas"] += 1
        order = data.draw(st.sampled_from(["schema", "any", "tracked"]))
        options: dict[str, Any] = {"property_order": order} if order != "tracked" else {"property_order": "any", "tracked_from": 1}
        try:
            constraint = ctrldec.JSONSchema(schema, extra_properties="allow", max_seconds=5.0, **_keywords(options))
            constraint.tables()
        except ctrldec.SchemaError:
            return
        report.counts["schemas_compiled"] += 1
        case = _SchemaCase(schema, options, constraint)
        rng = random.Random(data.draw(st.integers(0, 2**32)))
        values: list[Any] = []
        try:
            strategy = from_schema(schema)
            values += [data.draw(strategy) for _ in range(3)]
        except Exception:  # noqa: BLE001 - hypothesis-jsonschema refuses some schemas; fuzz with the rest
            pass
        values += [mutate(v, rng, lambda: data.draw(json_values)) for v in values for _ in range(2)]
        values += [data.draw(json_values) for _ in range(3)]
        for value in values:
            try:
                text = dumps(_ordered(value, rng if order != "schema" else None))
            except ValueError:
                continue
            case.run(report, text, rng, tokens)

    one()


def _grammar_round(report: _Report, tokens: _Tokens | None, seed: int, examples: int) -> None:
    import lark
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    import ctrldec

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(spec=_grammar_strategy(), salt=st.integers(0, 2**32))
    def one(spec: tuple[str, bool], salt: int) -> None:
        text, spaces = spec
        report.counts["grammars"] += 1
        try:
            parser = lark.Lark(text, parser="lalr", strict=True)
        except lark.exceptions.LarkError:
            return
        rng = random.Random(salt)
        if _sentence(parser, rng, spaces) is None:
            return  # an empty language: ctrldec refuses it, as documented
        try:
            constraint = ctrldec.Grammar(text)
            constraint.tables()
        except ctrldec.GrammarError as e:
            report.disagree({"kind": "grammar", "grammar": text, "text": None, "reference": True, "ctrldec": str(e), "what": "compile"})
            return
        report.counts["grammars_compiled"] += 1

        def reference(data_: bytes) -> bool:
            try:
                parser.parse(data_.decode("utf-8"))
                return True
            except (lark.exceptions.LarkError, UnicodeDecodeError):
                return False

        alphabet = "".join(sorted({c for lit in LITERALS for c in lit})) + "az09\" "
        for _ in range(3):
            sentence = _sentence(parser, rng, spaces)
            if sentence is None:
                return
            for s in [sentence, *_text_mutations(sentence, rng, alphabet)]:
                expect = reference(s.encode())
                ours = constraint.matches(s)
                report.counts["texts"] += 1
                report.counts["texts_valid"] += expect
                case = {"kind": "grammar", "grammar": text, "text": s, "reference": expect}
                if ours != expect:
                    report.disagree({**case, "ctrldec": ours, "what": "verdict"})
                elif tokens is not None and (expect or rng.random() < 0.3):
                    report.counts["mask_probes"] += 2
                    for problem in _check_replay(constraint, tokens, s.encode(), expect, reference, rng, 2):
                        if problem.startswith(UNRESOLVED):
                            report.counts["unresolved"] += 1
                            if len(report.unresolved) < 20:
                                report.unresolved.append({**case, "ctrldec": problem[len(UNRESOLVED):]})
                        else:
                            report.disagree({**case, "ctrldec": problem, "what": "tokens"})

    one()


def run(
    budget: float, tokenizer: Any, *, seed: int = 0, grammar_share: float = 0.3, progress: bool = False
) -> dict[str, Any]:
    """Fuzz for ``budget`` seconds (schemas, then grammars in ``grammar_share`` of the time, in
    rounds of 20 examples with seeds ``seed``, ``seed + 1``, ...). ``tokenizer``: an HF tokenizer
    or ``TokenizerInfo`` for token replays and mask probes (None: verdicts only)."""
    from ..constraints import tokenizer_info
    from ..constraints.grammar import clear_caches

    tokens = _Tokens(tokenizer_info(tokenizer)) if tokenizer is not None else None
    report = _Report()
    start = time.monotonic()
    bar = _progress(budget) if progress else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for phase, share, body in (("schemas", 1 - grammar_share, _schema_round), ("grammars", grammar_share, _grammar_round)):
            phase_end = time.monotonic() + budget * share if phase == "schemas" else start + budget
            round_seed = seed
            while time.monotonic() < phase_end:
                with _counting(round_seed if phase == "schemas" else 0):
                    body(report, tokens, round_seed, 20)  # a round of 20 examples: the budget is checked between rounds
                round_seed += 1
                clear_caches()
                if bar is not None:
                    bar.n = min(budget, time.monotonic() - start)
                    bar.set_postfix(found=len(report.disagreements), refresh=True)
    if bar is not None:
        bar.close()
    return {
        "budget_s": budget, "seconds": round(time.monotonic() - start, 1), "seed": seed,
        **report.counts, "disagreements": report.disagreements, "unresolved_examples": report.unresolved,
    }


@contextlib.contextmanager
def _counting(round_seed: int) -> Iterator[None]:
    """Two rounds in three count every string length past 2 characters with the lazy automata,
    folding states from 0 or 3 bytes of look-ahead (``engine/lexer.py``), so that the fuzzer's
    short strings exercise what long bounds use; the third keeps the defaults. (The compiled
    tables are dropped after every round, so each round compiles under its own setting.)"""
    from ..constraints.jsonschema import compiler
    from ..engine import lexer

    mode = round_seed % 3
    saved = compiler.LAZY_LENGTH_FROM, lexer.FOLD_AHEAD, lexer._BUILD_LEVELS
    if mode:  # and only the first character's states built with the grammar: the rest are met, and folded, as texts go
        compiler.LAZY_LENGTH_FROM, lexer.FOLD_AHEAD, lexer._BUILD_LEVELS = 2, (0, 3)[mode - 1], 1
    try:
        yield
    finally:
        compiler.LAZY_LENGTH_FROM, lexer.FOLD_AHEAD, lexer._BUILD_LEVELS = saved


def _progress(total: float) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="s", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}")


def save_cases(cases: list[dict], folder: str) -> str:
    """Append ``cases`` to ``folder/found.jsonl`` (one JSON object per line); returns the path."""
    import os

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "found.jsonl")
    with open(path, "a", encoding="utf-8") as f:
        for case in cases:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
    return path


def replay_case(case: dict) -> tuple[Any, Any]:
    """(ctrldec's verdict, the reference's) for a stored case (``tests/fuzz_corpus``)."""
    if case["kind"] == "schema":
        return schema_verdicts(case["schema"], case["text"], options=case.get("options"))
    return grammar_verdict(case["grammar"], case["text"])


def format_report(report: dict[str, Any]) -> str:
    found = report["disagreements"]
    lines = [
        f"fuzzed {report['seconds']} s (budget {report['budget_s']} s, seed {report['seed']})",
        f"  JSON Schema: {report['schemas']} schemas ({report['schemas_compiled']} compiled in strict mode), "
        f"{report['instances']} instances ({report['instances_valid']} valid), {report['token_replays']} token replays, "
        f"{report['respelled']} respelled with escapes",
        f"  grammars:    {report['grammars']} grammars ({report['grammars_compiled']} LALR(1) for Lark), "
        f"{report['texts']} texts ({report['texts_valid']} valid)",
        f"  mask probes: {report['mask_probes']}; skipped {report['skipped']} instances (duplicate keys, or numbers past "
        f"2**53 under integer/multipleOf); {report['narrower_format']} valid emails rejected (ctrldec's email is narrower)",
        f"  grammar mask probes with no completion found (the search gave up, or a dead end): {report['unresolved']}",
        f"  disagreements: {len(found)}",
    ]
    for case in found[:20]:
        subject = json.dumps(case.get("schema")) if case["kind"] == "schema" else repr(case["grammar"])
        lines.append(f"    [{case['what']}] {subject[:160]}\n      text {case['text']!r}: reference {case['reference']}, ctrldec {case['ctrldec']}")
    return "\n".join(lines)

