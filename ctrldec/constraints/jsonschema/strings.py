"""Automata for JSON strings: patterns (ECMA-262), formats and lengths, as they are written in JSON.

A constraint on a string's *value* (its characters) becomes an automaton over the bytes of its
JSON form: ``"`` + each character written raw (UTF-8) or, for ``"``, ``\\`` and control
characters, as the escape ``json.dumps`` writes (``\\"``, ``\\\\``, ``\\n``, ``\\u0001``, ...),
``\\/`` too, + ``"``. Strings with no pattern or format accept every JSON escape, ``\\uXXXX``
included; a pattern or format string accepts ``\\uXXXX`` only for control characters (so each
value has one spelling, and the automaton stays small). Lengths count characters, not bytes.

>>> string_dfa(pattern="^[a-z]+$", max_length=3).matches(b'"abc"')
True
>>> string_dfa(fmt="date").matches(b'"2024-02-30"')
False
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from functools import lru_cache
from pathlib import Path

import interegular
import numpy as np

from ...engine.bytedfa import BudgetExceeded, ByteDFA, CountedPattern, CountedString, LazyDFA, LazyUnion, RegexCompileError, _trim, check_budget, compile_regex, concat_bytes, fsm_to_dfa, json_char, parse_fsm, product, trim_states, utf8_sequences
from ...limits import DEFAULT_LIMITS

__all__ = ["string_dfa", "ecma_to_python", "UnsupportedPattern", "FORMATS", "ANY_STRING_BODY", "LAZY_LENGTH_FROM"]

ANY_STRING_BODY = r'([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*'
LAZY_LENGTH_FROM = 32  # longer bounds are counted by an automaton built as the text goes

_SHORT = {'"': b'\\"', "\\": b"\\\\", "\b": b"\\b", "\f": b"\\f", "\n": b"\\n", "\r": b"\\r", "\t": b"\\t"}


class UnsupportedPattern(ValueError):
    """A regex feature that cannot be compiled to an automaton (lookaround, backreference, \\p{...})."""


def _escape_sequences(cp: int) -> list[bytes]:
    ch = chr(cp)
    if ch in _SHORT:
        return [_SHORT[ch]]
    if cp < 0x20:
        return [f"\\u{cp:04x}".encode(), f"\\u{cp:04X}".encode()] if f"{cp:04x}" != f"{cp:04X}" else [f"\\u{cp:04x}".encode()]
    if ch == "/":
        return [b"\\/"]
    return []


def _json_encode(ranges: list[tuple[int, int]]) -> list[tuple[tuple[int, int], ...]]:
    """How the characters of ``ranges`` are written inside a JSON string (raw, or escaped)."""
    raw: list[tuple[int, int]] = []
    out: list[tuple[tuple[int, int], ...]] = []
    for a, b in ranges:
        lo = a
        for special in sorted(c for c in [*range(0x20), ord('"'), ord("\\"), ord("/")] if a <= c <= b):
            if special != ord("/"):
                if lo <= special - 1:
                    raw.append((lo, special - 1))
                lo = special + 1
            for seq in _escape_sequences(special):
                out.append(tuple((x, x) for x in seq))
        if lo <= b:
            raw.append((lo, b))
    return utf8_sequences(raw) + out


# -- ECMA-262 regexes -> Python / interegular ----------------------------------------------------

# Real characters, not escapes: interegular does not read \uXXXX.
_ECMA_SPACE = "\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_NOT_LINE_END = "[^\n\r\u2028\u2029]"
_CLASS_ESCAPES = {"d": "0-9", "w": "A-Za-z0-9_", "s": _ECMA_SPACE}
_NEG_ESCAPES = {"D": "0-9", "W": "A-Za-z0-9_", "S": _ECMA_SPACE}


def _literal(ch: str, in_class: bool) -> str:
    """One character as regex source interegular reads (the character itself, escaped if needed)."""
    specials = "]\\^-[" if in_class else ".^$*+?{}[]\\|()"
    return "\\" + ch if ch in specials else ch


def _translate(body: str) -> str:
    """Rewrite ECMA-262 syntax into Python syntax that interegular reads the same way."""
    out = []
    i, n = 0, len(body)
    in_class = class_negated = False
    class_start, class_negs = 0, []
    while i < n:
        c = body[i]
        if c == "\\":
            if i + 1 >= n:
                raise UnsupportedPattern("a pattern may not end with a backslash")
            e = body[i + 1]
            if e in _CLASS_ESCAPES:
                out.append(_CLASS_ESCAPES[e] if in_class else f"[{_CLASS_ESCAPES[e]}]")
            elif e in _NEG_ESCAPES:
                if in_class and class_negated:
                    raise UnsupportedPattern(f"\\{e} inside a negated character class")
                if in_class:  # [a\S] is [a] or [^\s]: set aside, joined when the class closes
                    class_negs.append(f"[^{_NEG_ESCAPES[e]}]")
                else:
                    out.append(f"[^{_NEG_ESCAPES[e]}]")
            elif e in "pP":
                raise UnsupportedPattern(f"Unicode property escapes (\\{e}{{...}}) are not supported")
            elif e == "k" or e.isdigit() and e != "0":
                raise UnsupportedPattern("backreferences cannot be compiled to an automaton")
            elif e in "bB" and not in_class:
                raise UnsupportedPattern("word boundaries (\\b, \\B) cannot be compiled to an automaton")
            elif e == "c" and i + 2 < n and body[i + 2].isalpha():
                out.append(_literal(chr(ord(body[i + 2]) % 32), in_class))
                i += 3
                continue
            elif e == "u" and i + 2 < n and body[i + 2] == "{":
                end = body.index("}", i)
                out.append(_literal(chr(int(body[i + 3 : end], 16)), in_class))
                i = end + 1
                continue
            elif e == "u" or e == "x":
                width = 4 if e == "u" else 2
                try:
                    out.append(_literal(chr(int(body[i + 2 : i + 2 + width], 16)), in_class))
                except ValueError:
                    raise UnsupportedPattern(f"bad escape \\{body[i + 1 : i + 2 + width]}") from None
                i += 2 + width
                continue
            elif e == "/":
                out.append("/")
            elif e in "0tnrvf":
                out.append(_literal({"0": "\x00", "t": "\t", "n": "\n", "r": "\r", "v": "\x0b", "f": "\x0c"}[e], in_class))
            elif e.isalnum():
                raise UnsupportedPattern(f"unknown escape \\{e}")
            else:
                out.append(re.escape(e))
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
                if class_negs:
                    members = "".join(out[class_start + 1 :])
                    del out[class_start:]
                    out.append("(?:" + "|".join(([f"[{members}]"] if members else []) + class_negs) + ")")
                    i += 1
                    continue
            elif c == "[":
                out.append("\\[")
                i += 1
                continue
            out.append(c)
            i += 1
            continue
        if c == "[":
            if body.startswith("[^]", i):
                out.append("[\\s\\S]")
                i += 3
                continue
            if body.startswith("[]", i):
                out.append("(?!)")
                i += 2
                continue
            in_class, class_start, class_negs = True, len(out), []
            out.append(c)
            class_negated = i + 1 < n and body[i + 1] == "^"
            if class_negated:
                out.append("^")
                i += 1
            i += 1
            continue
        if c == ".":
            out.append(_NOT_LINE_END)
        elif c == "(" and body.startswith("(?<", i) and not body.startswith(("(?<=", "(?<!"), i):
            out.append("(?P<")
            i += 3
            continue
        elif c == "(" and body.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            raise UnsupportedPattern("lookarounds cannot be compiled to an automaton")
        elif c in "^$":
            raise UnsupportedPattern(f"the anchor {c} may only start or end the pattern (or a top-level alternative)")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _structure(pattern: str):
    """(index, char, depth) for each character of ``pattern`` that is neither escaped nor inside
    a character class; ``depth`` is the group nesting before the character."""
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        else:
            yield i, c, depth
            depth += (c == "(") - (c == ")")
        i += 1


def _top_level_alternatives(pattern: str) -> list[str]:
    parts, start = [], 0
    for i, c, depth in _structure(pattern):
        if c == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return parts


def _group_end(pattern: str) -> int:
    """The index of the ``)`` that closes the group opened at index 0 (-1 if none)."""
    return next((i for i, c, depth in _structure(pattern) if c == ")" and depth == 1), -1)


def _unwrapped_alternatives(pattern: str) -> list[str]:
    """Top-level alternatives, an alternative that is one plain group (``(^a|b$)``, ``(?:...)``)
    replaced by its own alternatives, so that anchors inside it are at the top level."""
    out = []
    for alt in _top_level_alternatives(pattern):
        plain = alt.startswith("(") and (not alt.startswith("(?") or alt.startswith("(?:"))
        if plain and _group_end(alt) == len(alt) - 1:
            out += _unwrapped_alternatives(alt[3 if alt.startswith("(?:") else 1 : -1])
        else:
            out.append(alt)
    return out


def _anchored_alternatives(pattern: str) -> list[tuple[bool, str, bool]]:
    """Each top-level alternative (``_unwrapped_alternatives``) as (anchored at the start, its
    body without the anchors, anchored at the end); an escaped final ``\\$`` is no anchor."""
    out = []
    for alt in _unwrapped_alternatives(pattern):
        head = alt.startswith("^")
        body = alt[1:] if head else alt
        tail = body.endswith("$") and not re.search(r"(?<!\\)(\\\\)*\\\$$", body)
        out.append((head, body[:-1] if tail else body, tail))
    return out


def ecma_to_python(pattern: str) -> str:
    """A JSON Schema ``pattern`` (ECMA-262, unanchored search) as a Python regex for full matches.

    Top-level alternatives are grouped by how they are anchored and each group is wrapped in one
    ``[\\s\\S]*...[\\s\\S]*``: wrapping each alternative on its own makes the automaton of their
    union exponential (seen on a 17-way alternation in JSONSchemaBench).
    """
    groups: dict[tuple[bool, bool], list[str]] = {}
    for head, body, tail in _anchored_alternatives(pattern):
        groups.setdefault((head, tail), []).append(_translate(body))
    branches = []
    for (head, tail), bodies in groups.items():
        inner = "|".join(f"(?:{b})" for b in bodies)
        branches.append(("" if head else "[\\s\\S]*") + f"(?:{inner})" + ("" if tail else "[\\s\\S]*"))
    return "|".join(f"(?:{b})" for b in branches)


_LITERAL_ESCAPES = set("\\^$.|?*+()[]{}/-!\"#%&',:;<=>@`~ ")  # an escaped one of these is itself


def _literal_words(body: str) -> list[str] | None:
    """The strings an ECMA regex ``body`` (no anchors) matches when it is an alternation of plain
    words, each perhaps in groups (``(ab|(cd))|e``); None for anything else."""
    alts = _top_level_alternatives(body)
    words: list[str] = []
    for alt in alts:
        plain = alt.startswith("(") and (not alt.startswith("(?") or alt.startswith("(?:"))
        if plain and _group_end(alt) == len(alt) - 1:
            inner = _literal_words(alt[3 if alt.startswith("(?:") else 1 : -1])
            if inner is None:
                return None
            words += inner
            continue
        word, i = [], 0
        while i < len(alt):
            c = alt[i]
            if c == "\\" and i + 1 < len(alt) and alt[i + 1] in _LITERAL_ESCAPES:
                word.append(alt[i + 1])
                i += 2
            elif c in "\\^$.|?*+()[]{}":
                return None
            else:
                word.append(c)
                i += 1
        words.append("".join(word))
    return words


def _words_fsm(words: list[str], head: bool, tail: bool) -> interegular.FSM:
    """A character FSM of the strings that contain one of ``words`` (``head``: at the start;
    ``tail``: at the end; both: are one of them). An Aho-Corasick automaton over the words' trie:
    a state is the longest suffix of the text read that is a prefix of a word, and with
    ``tail`` it accepts where that suffix ends a word; without ``tail`` a found word leads to an
    accepting state that takes any character."""
    chars = sorted({c for w in words for c in w})
    cls = {c: i + 1 for i, c in enumerate(chars)}  # 0: every other character
    kids: list[dict[int, int]] = [{}]
    ends = [False]
    for w in words:
        node = 0
        for c in w:
            node = kids[node].setdefault(cls[c], len(kids))
            if node == len(kids):
                kids.append({})
                ends.append(False)
        ends[node] = True
    n = len(kids)
    found = n  # without ``tail``: a word was found, anything may follow
    table: dict[int, dict[int, int]] = {}
    if head:  # no fall-back: the text must begin with a word
        for s in range(n):
            table[s] = dict(kids[s])
    else:  # breadth-first: each node's fall-back (the longest proper suffix in the trie) comes first
        fail = [0] * n
        order = [0]
        for s in order:
            order += sorted(kids[s].values())
        for s in order:
            if s % 256 == 0:
                check_budget(s)  # a row per state, as wide as the words' alphabet
            if s and ends[fail[s]]:
                ends[s] = True  # a word ends here as a suffix of a longer prefix
            row = dict(table[fail[s]]) if s else {k: 0 for k in range(len(chars) + 1)}
            for k, x in kids[s].items():
                fail[x] = row[k] if s else 0
                row[k] = x
            table[s] = row
    finals = {s for s in range(n) if ends[s]}
    if not tail:
        table = {s: ({} if ends[s] else row) for s, row in table.items()}
        for s in finals:
            table[s] = {k: found for k in range(len(chars) + 1)}
        table[found] = {k: found for k in range(len(chars) + 1)}
        finals = {found} | finals
    alphabet = interegular.fsm.Alphabet({interegular.fsm.anything_else: 0, **cls})
    return interegular.FSM(alphabet, set(table), 0, finals, table)


def _literal_body(pattern: str) -> ByteDFA | None:
    """The string body of a ``pattern`` whose alternatives are plain words, all anchored alike
    (``^(a|b|c)$``, an unanchored ``(az1|az2|...)``), built without a regex compiler: interegular
    took 0.46 s for an unanchored alternation of 120 words (a JSONSchemaBench schema). None for
    any other pattern."""
    shapes, words = set(), []
    for head, body, tail in _anchored_alternatives(pattern):
        found = _literal_words(body)
        if found is None:
            return None
        shapes.add((head, tail))
        words += found
    if len(shapes) != 1:
        return None
    ((head, tail),) = shapes
    return fsm_to_dfa(_words_fsm(sorted(set(words)), head, tail), encode=_json_encode)


@lru_cache(maxsize=DEFAULT_LIMITS.max_cached_string_bodies)
def pattern_body(pattern: str) -> ByteDFA:
    """The string body (JSON-escaped) of the strings an ECMA ``pattern`` matches somewhere."""
    found = _literal_body(pattern)
    return found if found is not None else _pattern_body(ecma_to_python(pattern))


# -- formats ------------------------------------------------------------------------------------

# years 0001 to 9999 (what the validators' date parsers take: there is no year 0)
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    rf"|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"
)
# no leap second (:60): RFC 3339 allows it, but jsonschema's checkers refuse it, and strict mode
# must not accept what the reference rejects
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_DUR_TIME = r"T(?:[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)"
_DUR_DATE = r"(?:[0-9]+Y(?:[0-9]+M)?(?:[0-9]+D)?|[0-9]+M(?:[0-9]+D)?|[0-9]+D)"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = "|".join(
    [
        rf"(?:{_H16}:){{6}}{_LS32}",
        rf"::(?:{_H16}:){{5}}{_LS32}",
        rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
        rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
        rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
    ]
)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = rf"{_LABEL}(?:\.{_LABEL})*"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# RFC 3987 ucschar and iprivate: every character past U+009F but surrogates and noncharacters (a
# negated class: cheap to compile; real characters, as interegular does not read \uXXXX)
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
_UCS = f"[^\x00-\x9f\ud800-\udfff{_NONCHARACTERS}]"
_IRI_CHARS = rf"(?:[A-Za-z0-9\-._~:/?#@!$&'()*+,;=]|%[0-9A-Fa-f]{{2}}|{_UCS})"


def _rfc3986(iri: bool) -> tuple[str, str]:
    """(absolute, reference) regexes following RFC 3986's ABNF (RFC 3987's with ``iri``): the
    validators parse the structure (one ``#``, a numeric port, ``[...]`` only around an IP
    literal, ``%`` with two hex digits), so a flat character class would admit what they refuse."""

    def alt(*parts: str) -> str:
        return "(?:" + "|".join(parts) + ")"

    unreserved = alt(r"[A-Za-z0-9\-._~]", _UCS) if iri else r"[A-Za-z0-9\-._~]"
    pct, sub = r"%[0-9A-Fa-f]{2}", r"[!$&'()*+,;=]"
    pchar = alt(unreserved, pct, sub, "[:@]")
    segment, segment_nz = f"{pchar}*", f"{pchar}+"
    reg_name = alt(unreserved, pct, sub) + "*"
    hosts = [reg_name] if iri else [rf"\[(?:{_IPV6})\]", reg_name]  # the IRI checker refuses IP literals
    userinfo = alt(unreserved, pct, sub, ":") + "*"
    authority = rf"(?:{userinfo}@)?{alt(*hosts)}(?::[0-9]*)?"
    abempty = rf"(?:/{segment})*"
    absolute = rf"/(?:{segment_nz}(?:/{segment})*)?"
    query = alt(pchar, "[/?]") + "*"
    tail = rf"(?:\?{query})?(?:#{query})?"
    hier = alt(f"//{authority}{abempty}", absolute, f"{segment_nz}(?:/{segment})*", "")
    full = rf"[A-Za-z][A-Za-z0-9+.-]*:{hier}{tail}"
    noscheme = rf"{alt(unreserved, pct, sub, '@')}+(?:/{segment})*"
    relative = alt(rf"//{authority}{abempty}", absolute, noscheme, "") + tail
    return full, alt(full, relative)


# internationalized forms: the ASCII rules with every non-ASCII character (but surrogates) allowed
# where a letter is (RFC 6531 UTF8-non-ascii in the local part, U-labels in host names)
_U = "[^\x00-\x7f\ud800-\udfff]"
_ULABEL = rf"(?:[A-Za-z0-9]|{_U})(?:(?:[A-Za-z0-9-]|{_U})*(?:[A-Za-z0-9]|{_U}))?"
_IDN_HOSTNAME = rf"{_ULABEL}(?:\.{_ULABEL})*"
_UATOM = rf"(?:[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]|{_U})+"
# RFC 6570 level 4: literals, or {operator? varname[:prefix|*], ...}
_VARNAME = r"(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})(?:\.?(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2}))*"
_VARSPEC = rf"{_VARNAME}(?::[1-9][0-9]{{0,3}}|\*)?"
_TEMPLATE_LITERAL = rf"(?:[!#$&()*+,\-./0-9:;=?@A-Z\[\]_a-z~]|%[0-9A-Fa-f]{{2}}|{_U})"
_JSON_POINTER = r"(?:/(?:[^~/]|~[01])*)*"

FORMATS: dict[str, str] = {
    "date": _DATE,
    "time": _TIME,
    "date-time": rf"{_DATE}[Tt]{_TIME}",
    "duration": rf"P(?:{_DUR_DATE}(?:{_DUR_TIME})?|{_DUR_TIME}|[0-9]+W)",
    "email": rf"{_ATOM}(?:\.{_ATOM})*@{_HOSTNAME}",
    "hostname": _HOSTNAME,
    "ipv4": _IPV4,
    "ipv6": _IPV6,
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "uri": _rfc3986(iri=False)[0],
    "uri-reference": _rfc3986(iri=False)[1],
    "iri": _rfc3986(iri=True)[0],
    "iri-reference": _rfc3986(iri=True)[1],
    "idn-email": rf"{_UATOM}(?:\.{_UATOM})*@{_IDN_HOSTNAME}",
    "idn-hostname": _IDN_HOSTNAME,
    "uri-template": rf"(?:{_TEMPLATE_LITERAL}|\{{[+#./;?&=,!@|]?{_VARSPEC}(?:,{_VARSPEC})*\}})*",
    "json-pointer": _JSON_POINTER,
    "relative-json-pointer": rf"(?:0|[1-9][0-9]*)(?:#|{_JSON_POINTER})",
    # ajv-formats' definitions, common in real schemas though not in the JSON Schema spec
    "url": rf"(?:[Hh][Tt][Tt][Pp][Ss]?|[Ff][Tt][Pp])://(?:[A-Za-z0-9\-._~!$&'()*+,;=:%@\[\]]|{_U})+(?:[/?#]{_IRI_CHARS}*)?",
}


# -- lengths ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _one_char_states() -> np.ndarray:
    """The states of ``json_char`` that a character passes through (reached from its start before
    the character is complete, and able to complete it), ascending."""
    one = json_char()
    done = (one.trans >= 0) & one.accepting[np.maximum(one.trans, 0)]
    inside = np.where(done, len(one.trans), one.trans)  # a completed character: one accepting sink
    table = np.vstack([inside, np.full((1, 256), -1, dtype=inside.dtype)])
    final = np.zeros(len(table), dtype=bool)
    final[-1] = True
    return np.flatnonzero(trim_states(table, final, 0)[:-1])


@lru_cache(maxsize=DEFAULT_LIMITS.max_cached_length_automata)
def _length_dfa(lo: int, hi: int | None) -> ByteDFA:
    """String bodies of ``lo`` to ``hi`` characters (``hi`` None: no upper bound): one copy of the
    one-character automaton per count, built as one array (a loop per count, byte and state
    cost 58 ms over five ``maxLength`` of a schema; the copies are trim, so no search is needed)."""
    one = json_char()
    keep = _one_char_states()  # state 0, the start, first
    m = len(keep)
    rank = np.full(one.n_states + 1, -1, dtype=np.int32)
    rank[keep] = np.arange(m, dtype=np.int32)
    rows = one.trans[keep]
    live = rows >= 0
    done = live & one.accepting[np.maximum(rows, 0)]  # a character completed: the next count's start
    inside = np.where(live & ~done, rank[np.where(live, rows, one.n_states)], -1)
    counts = (hi if hi is not None else lo) + 1
    full = counts if hi is None else counts - 1  # counts with every copy; with a bound, the last is its start alone
    base = np.arange(full, dtype=np.int32)[:, None, None] * m
    after = base + m
    if hi is None:
        after[-1] = base[-1]  # past the last count: the same count again
    trans = np.where(done, after, np.where(inside >= 0, base + inside, -1)).reshape(full * m, 256).astype(np.int32)
    accepting = np.zeros(full * m, dtype=bool)
    accepting[::m] = np.arange(full) >= lo
    if hi is not None:
        trans = np.vstack([trans, np.full((1, 256), -1, dtype=np.int32)])
        accepting = np.append(accepting, True)
    return ByteDFA(trans, accepting)


@lru_cache(maxsize=None)
def _format_body(name: str) -> ByteDFA:
    """A format's string body, once per process: read from ``formats.npz`` when it was stored
    from the same regex, else built (the URI and IRI grammars take 0.3-0.9 s to build)."""
    stored = _stored_format(name)
    return stored if stored is not None else _pattern_body(f"(?:{FORMATS[name]})")


# Bump when how a regex becomes a string body changes (``fsm_to_dfa``, ``_json_encode``):
# tests/constraints/test_stored_formats.py fails until the file is written again.
_STORE_VERSION = 1
STORED_FORMATS = Path(__file__).with_name("formats.npz")


def _format_source(name: str) -> str:
    """What a stored format automaton was built from: its regex, under ``_STORE_VERSION``."""
    return hashlib.sha256(f"{_STORE_VERSION}\0{FORMATS[name]}".encode("utf-8", "surrogatepass")).hexdigest()


def _stored_format(name: str) -> ByteDFA | None:
    """The stored automaton of ``FORMATS[name]``; None when the file lacks it or holds another
    regex's (an edited pattern is built, never read stale)."""
    try:
        with np.load(STORED_FORMATS, allow_pickle=False) as stored:
            if str(stored[f"{name}/source"]) != _format_source(name):
                return None
            return ByteDFA(stored[f"{name}/trans"].astype(np.int32), stored[f"{name}/accepting"].astype(bool))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def store_formats(path: Path = STORED_FORMATS) -> None:
    """Build every format's automaton and write them to ``path``; the packaged file is rewritten
    with ``python -c "from ctrldec.constraints.jsonschema.strings import store_formats; store_formats()"``."""
    arrays: dict[str, np.ndarray] = {}
    for name, regex in FORMATS.items():
        dfa = _pattern_body(f"(?:{regex})")
        if dfa.n_states > np.iinfo(np.int16).max:
            raise ValueError(f"format {name!r} has {dfa.n_states} states, more than int16 stores")
        arrays[f"{name}/source"] = np.array(_format_source(name))
        arrays[f"{name}/trans"] = dfa.trans.astype(np.int16)
        arrays[f"{name}/accepting"] = dfa.accepting
    np.savez_compressed(path, **arrays)


@lru_cache(maxsize=DEFAULT_LIMITS.max_cached_string_bodies)
def _pattern_body(python_regex: str) -> ByteDFA:
    try:
        return fsm_to_dfa(parse_fsm(python_regex), encode=_json_encode)
    except RegexCompileError as e:
        raise UnsupportedPattern(str(e)) from None


def string_dfa(
    *,
    pattern: str | list[str] | None = None,
    fmt: str | list[str] | None = None,
    min_length: int = 0,
    max_length: int | None = None,
) -> ByteDFA:
    """The JSON form (quotes included) of strings matching every pattern/format and the lengths.

    Memoised per process (``Limits.max_cached_string_automata``): every grammar that asks for
    the same string gets the same object, so the token classifications of its states, keyed by
    the object where the automaton is too large to key by content (a format's), are shared."""
    patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern or ())
    formats = (fmt,) if isinstance(fmt, str) else tuple(fmt or ())
    return _string_dfa(patterns, formats, min_length, max_length)


@lru_cache(maxsize=DEFAULT_LIMITS.max_cached_string_automata)
def _string_dfa(patterns: tuple[str, ...], formats: tuple[str, ...], min_length: int, max_length: int | None) -> ByteDFA:
    bodies = [pattern_body(p) for p in patterns]
    bodies += [_format_body(f) for f in formats]
    if min_length > 0 or max_length is not None:
        bodies.append(_length_dfa(min_length, max_length))
    body = bodies[0] if bodies else compile_regex(ANY_STRING_BODY)
    for other in bodies[1:]:
        body = product(body, other, "and")
    out = concat_bytes(b'"', body, b'"')
    if len(bodies) == 1 and not patterns and not formats and not out.empty:
        # the lexer's key and the masks' closed form for counted strings (``CountedString``)
        # read its layout: state 1 + k * m + c has k characters done, in state c of the m
        # one-character states (c = 0: between characters)
        object.__setattr__(out, "_length", (min_length, max_length, len(_one_char_states())))
    return out


def counted_string(
    *, pattern: list[str], fmt: list[str], min_length: int, max_length: int | None, max_counted_min: int = DEFAULT_LIMITS.max_counted_min
) -> LazyDFA | ByteDFA:
    """``string_dfa`` for length bounds too long to tabulate: a lazily built automaton (an
    empty ``ByteDFA`` when nothing fits). ``UnboundedProduct`` for a pattern with a minimum
    length past ``max_counted_min``."""
    if not pattern and not fmt:
        return CountedString(min_length, max_length)
    bodies = [pattern_body(p) for p in pattern] + [_format_body(f) for f in fmt]
    body = bodies[0]
    for other in bodies[1:]:
        body = product(body, other, "and")
    out = CountedPattern(body, min_length, max_length, max_lo=max_counted_min)
    return ByteDFA(np.zeros((0, 256), dtype=np.int32), np.zeros(0, dtype=bool)) if out.empty else out


def tabulated(dfa: ByteDFA | LazyDFA, max_length: int) -> ByteDFA | None:
    """A lazy string automaton as a table, when its bounds are at most ``max_length`` (else
    None); a table is returned as it is."""
    if not isinstance(dfa, LazyDFA):
        return dfa
    if isinstance(dfa, LazyUnion):
        a, b = tabulated(dfa.a, max_length), tabulated(dfa.b, max_length)
        return None if a is None or b is None else product(a, b, "or")
    if not isinstance(dfa, (CountedString, CountedPattern)) or max(dfa.lo, dfa.hi if dfa.hi is not None else 0) > max_length:
        return None
    body = _length_dfa(dfa.lo, dfa.hi)
    if isinstance(dfa, CountedPattern):
        body = product(dfa.body, body, "and")
    return concat_bytes(b'"', body, b'"')


def check_pattern(pattern: str) -> None:
    """Raise UnsupportedPattern (with the reason) if ``pattern`` cannot be compiled."""
    try:
        re.compile(ecma_to_python(pattern))
    except re.error as e:
        raise UnsupportedPattern(f"invalid regex: {e}") from None
    try:
        interegular.parse_pattern(ecma_to_python(pattern))
    except BudgetExceeded:
        raise
    except Exception as e:
        raise UnsupportedPattern(str(e) or type(e).__name__) from None
