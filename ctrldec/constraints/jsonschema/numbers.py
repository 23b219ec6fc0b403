"""Exact automata for JSON numbers under ``minimum``/``maximum`` (exclusive or not) and ``multipleOf``.

Numbers are written in canonical JSON form: ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?``; an exponent is
allowed only when no ``multipleOf`` is given and the bounds are decided by the sign alone (no
bound; ``minimum: 0`` allows ``1e-06``; a bound such as ``1`` would need comparing ``1e400``
digit by digit inside an automaton). ``-0`` is not produced.

Integer parts are compared with the bounds by automata built digit by digit (no regex), so
int64 or 1e308 bounds cost hundreds of states, not a giant alternation.

>>> integer_dfa(lo=-5, hi=12).matches(b"-3"), integer_dfa(lo=-5, hi=12).matches(b"13")
(True, False)
>>> number_dfa(lo=Decimal("0.5"), lo_exclusive=True).matches(b"0.5")
False
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from ...engine.bytedfa import ByteDFA, _trim, compile_regex, concat_bytes, literal, product, union_all
from ...limits import DEFAULT_LIMITS

__all__ = ["integer_dfa", "number_dfa", "ANY_NUMBER", "ANY_INTEGER", "ANY_INTEGER_DRAFT4", "NONCANONICAL_NUMBER"]

ANY_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
ANY_INTEGER = r"-?(0|[1-9][0-9]*)(\.0+)?"
ANY_INTEGER_DRAFT4 = r"-?(0|[1-9][0-9]*)"  # drafts 3 and 4: 1.0 is not an integer
# The number texts the bounded automata never produce: an exponent, or a negative zero. A set
# difference with such an automaton on its right must leave these out too (``noncanonical``).
NONCANONICAL_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?[eE][+-]?[0-9]+|-0(\.0+)?"
_EMPTY = ByteDFA(np.zeros((0, 256), dtype=np.int32), np.zeros(0, dtype=bool))
_DIGITS = [ord(str(d)) for d in range(10)]


def _cmp(a: int, b: int) -> str:
    return "<" if a < b else "=" if a == b else ">"


def _range_dfa(lo: int, hi: int | None) -> ByteDFA:
    """Canonical decimal integers in [lo, hi] (lo >= 0; hi None: unbounded).

    A state is (digits read, how they compare with the same-length prefix of lo, of hi); with
    the final length known, that settles both comparisons. Past len(lo) digits with no upper
    bound, one looping state remains.
    """
    if hi is not None and hi < lo:
        return _EMPTY
    lo_s, hi_s = str(lo), None if hi is None else str(hi)
    index: dict[tuple, int] = {}
    edges: list[tuple[int, int, tuple]] = []
    accept: dict[tuple, bool] = {}
    start, zero = ("start",), ("zero",)
    todo: list[tuple] = []

    def add(src: tuple, byte: int, dst: tuple) -> None:
        edges.append((index.setdefault(src, len(index)), byte, dst))
        if dst not in index:
            index[dst] = len(index)
            todo.append(dst)

    index[start] = 0
    if lo == 0:
        add(start, ord("0"), zero)
        accept[zero] = True
    for d in range(1, 10):
        first = ("long" if len(lo_s) < 1 else _cmp(d, int(lo_s[0])), None if hi_s is None else _cmp(d, int(hi_s[0])))
        add(start, _DIGITS[d], (1, *first))
    while todo:
        key = todo.pop()
        if key == zero:
            continue
        n, clo, chi = key
        lo_ok = n > len(lo_s) or (n == len(lo_s) and clo in "=>")
        hi_ok = hi_s is None or n < len(hi_s) or (n == len(hi_s) and chi in "<=")
        accept[key] = lo_ok and hi_ok
        if hi_s is not None and n >= len(hi_s):
            continue
        for d in range(10):
            nlo = "long" if n + 1 > len(lo_s) else clo if clo != "=" else _cmp(d, int(lo_s[n]))
            if hi_s is None:
                nxt = (min(n + 1, len(lo_s) + 1), nlo, None)
            else:
                nxt = (n + 1, nlo, chi if chi != "=" else _cmp(d, int(hi_s[n])))
            add(key, _DIGITS[d], nxt)
    trans = np.full((len(index), 256), -1, dtype=np.int32)
    for src, byte, dst in edges:
        trans[src, byte] = index[dst]
    accepting = np.zeros(len(index), dtype=bool)
    for key, ok in accept.items():
        accepting[index[key]] = ok
    trans, accepting = _trim(trans, accepting, 0)
    return ByteDFA(trans, accepting)


def _then(first: ByteDFA, rest: ByteDFA) -> ByteDFA:
    """``first`` followed by ``rest``, where ``rest``'s first bytes never continue ``first``
    (an integer part, then a fraction starting with '.'): a deterministic concatenation."""
    if first.empty or rest.empty:
        return _EMPTY
    n = first.n_states
    trans = np.vstack([first.trans, np.where(rest.trans >= 0, rest.trans + n, -1)]).astype(np.int32)
    accepting = np.concatenate([first.accepting & bool(rest.accepting[0]), rest.accepting])
    entry = rest.trans[0]
    for s in np.flatnonzero(first.accepting):
        clash = (entry >= 0) & (trans[s] >= 0)
        if clash.any():
            raise ValueError("the two automata are not separable")
        trans[s] = np.where(entry >= 0, entry + n, trans[s])
    trans, accepting = _trim(trans, accepting, 0)
    return ByteDFA(trans, accepting)


def _split(c: Decimal) -> tuple[int, str]:
    """A non-negative decimal as (integer part, fraction digits without trailing zeros)."""
    whole, _, frac = format(c, "f").partition(".")
    return int(whole), frac.rstrip("0")


_ANY_FRACTION = r"(\.[0-9]+)?"


def _fraction_ge(frac: str, strict: bool) -> str:
    """Fractions (with their '.', or none) whose value 0.x is >= 0.frac (> if strict)."""
    if not frac:
        return r"\.[0-9]*[1-9][0-9]*" if strict else _ANY_FRACTION
    parts = [rf"\.{frac[:i]}[{int(ch) + 1}-9][0-9]*" for i, ch in enumerate(frac) if ch != "9"]
    parts.append(rf"\.{frac}" + ("[0-9]*[1-9][0-9]*" if strict else "[0-9]*"))
    return "|".join(parts)


def _fraction_le(frac: str, strict: bool) -> str | None:
    """Fractions (or none) whose value 0.x is <= 0.frac (< if strict)."""
    if not frac:
        return None if strict else r"(\.0+)?"
    parts = ["", r"\.0+"]
    for i, ch in enumerate(frac):
        if ch != "0":
            parts.append(rf"\.{frac[:i]}[0-{int(ch) - 1}][0-9]*")
        if i > 0:
            parts.append(rf"\.{frac[:i]}0*")
    if not strict:
        parts.append(rf"\.{frac}0*")
    return "(?:" + "|".join(parts[1:]) + ")?"


def _magnitude_ge(c: Decimal, strict: bool) -> ByteDFA:
    whole, frac = _split(c)
    return union_all(
        [_then(_range_dfa(whole + 1, None), compile_regex(_ANY_FRACTION)), _then(literal(str(whole).encode()), compile_regex(_fraction_ge(frac, strict)))]
    )


def _magnitude_le(c: Decimal, strict: bool) -> ByteDFA:
    whole, frac = _split(c)
    parts = []
    if whole > 0:
        parts.append(_then(_range_dfa(0, whole - 1), compile_regex(_ANY_FRACTION)))
    tail = _fraction_le(frac, strict)
    if tail is not None:
        parts.append(_then(literal(str(whole).encode()), compile_regex(tail)))
    return union_all(parts)


def _magnitudes(lo: Decimal | None, lo_strict: bool, hi: Decimal | None, hi_strict: bool) -> ByteDFA:
    """Canonical magnitudes m (no sign) with lo <(=) m <(=) hi, bounds >= 0 or None."""
    out = _then(_range_dfa(0, None), compile_regex(_ANY_FRACTION))
    if lo is not None:
        out = product(out, _magnitude_ge(lo, lo_strict), "and")
    if hi is not None:
        out = product(out, _magnitude_le(hi, hi_strict), "and")
    return out


def _bounded(lo: Decimal | None, lo_strict: bool, hi: Decimal | None, hi_strict: bool) -> ByteDFA:
    parts: list[ByteDFA] = []
    # v = m >= 0
    if hi is None or hi > 0 or (hi == 0 and not hi_strict):
        mag_lo, mag_lo_strict = (lo, lo_strict) if lo is not None and lo >= 0 else (None, False)
        parts.append(_magnitudes(mag_lo, mag_lo_strict, hi, hi_strict))
    # v = -m with m > 0
    if lo is None or lo < 0:
        m_hi, m_hi_strict = (-lo, lo_strict) if lo is not None else (None, False)
        m_lo, m_lo_strict = (-hi, hi_strict) if hi is not None and hi < 0 else (Decimal(0), True)
        neg = _magnitudes(m_lo, m_lo_strict, m_hi, m_hi_strict)
        if not neg.empty:
            parts.append(concat_bytes(b"-", neg, b""))
    return union_all([p for p in parts if not p.empty])


def _multiple_of(m: Decimal, max_modulus: int) -> ByteDFA:
    """Numbers ``-?[0-9]+(\\.[0-9]+)?`` whose value is an integer multiple of ``m`` (> 0).

    With m = p / 10^s, x is a multiple iff x * 10^s is an integer divisible by p: the automaton
    tracks that remainder through the integer digits and the first s fraction digits; later
    fraction digits must be zeros. ``OverflowError`` past ``max_modulus`` states.
    """
    _, digits, exponent = m.normalize().as_tuple()
    p = int("".join(map(str, digits))) * (10 ** max(0, exponent))  # type: ignore[arg-type]
    s = max(0, -exponent)  # type: ignore[operator]
    if p * (s + 2) > max_modulus:
        raise OverflowError(f"multipleOf {m} needs {p * (s + 2)} automaton states")
    # 0 start, 1 after '-', I(r) integer part, D(r) just read '.', F(j, r) after j fraction
    # digits (j = 1..J; at j = J only zeros may follow)
    J = max(s, 1)
    I, D, F = 2, 2 + p, 2 + 2 * p
    trans = np.full((F + J * p, 256), -1, dtype=np.int32)
    accepting = np.zeros(F + J * p, dtype=bool)
    for first in (0, 1):
        trans[first, _DIGITS] = [I + d % p for d in range(10)]
    trans[0, ord("-")] = 1
    for r in range(p):
        trans[I + r, _DIGITS] = [I + (r * 10 + d) % p for d in range(10)]
        trans[I + r, ord(".")] = D + r
        accepting[I + r] = (r * 10**s) % p == 0
        if s >= 1:
            trans[D + r, _DIGITS] = [F + (r * 10 + d) % p for d in range(10)]
        else:
            trans[D + r, ord("0")] = F + r
    for j in range(1, J + 1):
        for r in range(p):
            state = F + (j - 1) * p + r
            accepting[state] = (r * 10 ** max(s - j, 0)) % p == 0
            if j < s:
                trans[state, _DIGITS] = [F + j * p + (r * 10 + d) % p for d in range(10)]
            else:
                trans[state, ord("0")] = state
    trans, accepting = _trim(trans, accepting, 0)
    return ByteDFA(trans, accepting)


def integer_dfa(
    lo: int | None = None, hi: int | None = None, multiple_of: Decimal | None = None, *, max_modulus: int = DEFAULT_LIMITS.max_modulus,
    zero_fraction: bool = True,
) -> ByteDFA:
    """Integers in [lo, hi] (inclusive; None: unbounded), multiples of ``multiple_of``.

    ``1.0`` is an integer in JSON Schema from draft 6 on (a number with no fractional part): a
    fraction of zeros is accepted too, unless ``zero_fraction`` is False (drafts 3 and 4, where
    an integer is written without one).
    """
    parts = []
    if hi is None or hi >= 0:
        parts.append(_range_dfa(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        neg = _range_dfa(max(1, -hi) if hi is not None else 1, -lo if lo is not None else None)
        if not neg.empty:
            parts.append(concat_bytes(b"-", neg, b""))
    dfa = union_all([p for p in parts if not p.empty])
    if not dfa.empty and zero_fraction:
        dfa = _then(dfa, compile_regex(r"(\.0+)?"))
    if multiple_of is not None and not dfa.empty:
        dfa = product(dfa, _multiple_of(multiple_of, max_modulus), "and")
    return dfa


_EXPONENT = r"[eE][+-]?[0-9]+"
_NONZERO_MANTISSA = r"(?:[1-9][0-9]*(?:\.[0-9]+)?|0\.[0-9]*[1-9][0-9]*)"


def _exponent_forms(lo: Decimal | None, lo_strict: bool, hi: Decimal | None, hi_strict: bool) -> ByteDFA:
    """Numbers with an exponent whose sign alone puts them within the bounds: positive ones with
    no upper bound and lo <= 0, negative ones with no lower bound and hi >= 0, zero if allowed."""
    forms = []
    if hi is None and (lo is None or lo <= 0):
        forms.append(_NONZERO_MANTISSA)
    if lo is None and (hi is None or hi >= 0):
        forms.append("-" + _NONZERO_MANTISSA)
    if (lo is None or lo < 0 or lo == 0 and not lo_strict) and (hi is None or hi > 0 or hi == 0 and not hi_strict):
        forms.append(r"0(?:\.0+)?")
    if not forms:
        return _EMPTY
    return compile_regex("(?:" + "|".join(forms) + ")" + _EXPONENT)


def number_dfa(
    lo: Decimal | None = None,
    hi: Decimal | None = None,
    *,
    lo_exclusive: bool = False,
    hi_exclusive: bool = False,
    multiple_of: Decimal | None = None,
    max_modulus: int = DEFAULT_LIMITS.max_modulus,
) -> ByteDFA:
    """JSON numbers within the bounds (and multiples of ``multiple_of``); see the module docstring."""
    if lo is None and hi is None and multiple_of is None:
        return compile_regex(ANY_NUMBER)
    dfa = _bounded(lo, lo_exclusive, hi, hi_exclusive)
    if multiple_of is not None:
        return product(dfa, _multiple_of(multiple_of, max_modulus), "and") if not dfa.empty else dfa
    exponents = _exponent_forms(lo, lo_exclusive, hi, hi_exclusive)
    return union_all([dfa, exponents]) if not exponents.empty else dfa
