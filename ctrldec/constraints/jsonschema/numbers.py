"""Exact automata for JSON numbers under ``minimum``/``maximum`` (exclusive or not) and ``multipleOf``.

Numbers are written in canonical JSON form: ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?``; an exponent is
allowed only when the number has no bound and no ``multipleOf`` (a bound on ``1e400`` would need
arbitrary-precision comparison inside an automaton). ``-0`` is not produced.

>>> integer_dfa(lo=-5, hi=12).matches(b"-3"), integer_dfa(lo=-5, hi=12).matches(b"13")
(True, False)
>>> number_dfa(lo=Decimal("0.5"), lo_exclusive=True).matches(b"0.5")
False
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from ...engine.bytedfa import ByteDFA, _trim, compile_regex, concat_bytes, product, union_all

__all__ = ["integer_dfa", "number_dfa", "ANY_NUMBER", "ANY_INTEGER", "MAX_MODULUS"]

ANY_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
ANY_INTEGER = r"-?(0|[1-9][0-9]*)"
_FRAC = r"(\.[0-9]+)?"
MAX_MODULUS = 50_000  # states of a multipleOf automaton: the scaled divisor times (fraction digits + 2)


def _same_length(lo: str, hi: str) -> str:
    """Regex for the digit strings of one length between ``lo`` and ``hi`` (inclusive)."""
    if lo == hi:
        return lo
    if len(lo) == 1:
        return f"[{lo}-{hi}]"
    if lo[0] == hi[0]:
        return lo[0] + "(?:" + _same_length(lo[1:], hi[1:]) + ")"
    rest = len(lo) - 1
    parts = [lo[0] + "(?:" + _same_length(lo[1:], "9" * rest) + ")"]
    if int(hi[0]) - int(lo[0]) > 1:
        parts.append(f"[{int(lo[0]) + 1}-{int(hi[0]) - 1}]" + "[0-9]" * rest)
    parts.append(hi[0] + "(?:" + _same_length("0" * rest, hi[1:]) + ")")
    return "|".join(parts)


def _nonneg(lo: int, hi: int | None) -> str | None:
    """Regex for canonical decimal integers in [lo, hi] (hi None: unbounded), lo >= 0."""
    if hi is not None and lo > hi:
        return None
    parts = []
    top = len(str(hi)) if hi is not None else len(str(lo))
    for d in range(len(str(lo)), top + 1):
        a = max(lo, 10 ** (d - 1) if d > 1 else 0)
        b = 10**d - 1 if hi is None else min(hi, 10**d - 1)
        if a <= b:
            parts.append(_same_length(str(a), str(b)))
    if hi is None:
        parts.append(f"[1-9][0-9]{{{top},}}")
    return "(?:" + "|".join(parts) + ")"


def _integer_regex(lo: int | None, hi: int | None) -> str | None:
    parts = []
    if hi is None or hi >= 0:
        pos = _nonneg(max(lo, 0) if lo is not None else 0, hi)
        if pos:
            parts.append(pos)
    if lo is None or lo < 0:
        neg = _nonneg(max(1, -hi) if hi is not None else 1, -lo if lo is not None else None)
        if neg:
            parts.append("-" + neg)
    return "|".join(parts) if parts else None


def _split(c: Decimal) -> tuple[int, str]:
    """A non-negative decimal as (integer part, fraction digits without trailing zeros)."""
    text = format(c, "f")
    whole, _, frac = text.partition(".")
    return int(whole), frac.rstrip("0")


def _mag_ge(c: Decimal, strict: bool) -> str:
    """Regex for canonical magnitudes (no sign) m with m >= c (m > c if strict), c >= 0."""
    whole, frac = _split(c)
    parts = [_nonneg(whole + 1, None) + _FRAC]  # type: ignore[operator]
    if not frac:
        parts.append(f"{whole}" + (r"\.[0-9]*[1-9][0-9]*" if strict else _FRAC))
    else:
        for i, ch in enumerate(frac):
            if ch != "9":
                parts.append(rf"{whole}\.{frac[:i]}[{int(ch) + 1}-9][0-9]*")
        parts.append(rf"{whole}\.{frac}" + ("[0-9]*[1-9][0-9]*" if strict else "[0-9]*"))
    return "|".join(parts)


def _mag_le(c: Decimal, strict: bool) -> str | None:
    """Regex for canonical magnitudes m with m <= c (m < c if strict), c >= 0."""
    whole, frac = _split(c)
    parts = []
    if whole > 0:
        parts.append(_nonneg(0, whole - 1) + _FRAC)  # type: ignore[operator]
    if not frac:
        if not strict:
            parts.append(rf"{whole}(\.0+)?")
    else:
        parts.append(f"{whole}")
        parts.append(rf"{whole}\.0+")
        for i, ch in enumerate(frac):
            if ch != "0":
                parts.append(rf"{whole}\.{frac[:i]}[0-{int(ch) - 1}][0-9]*")
            if 0 < i:
                parts.append(rf"{whole}\.{frac[:i]}0*")
        if not strict:
            parts.append(rf"{whole}\.{frac}0*")
    return "|".join(parts) if parts else None


def _intersect_regexes(patterns: list[str | None]) -> ByteDFA | None:
    if any(p is None for p in patterns):
        return None
    dfas = [compile_regex(p) for p in patterns]  # type: ignore[arg-type]
    out = dfas[0]
    for d in dfas[1:]:
        out = product(out, d, "and")
    return None if out.empty else out


def _magnitudes(lo: Decimal | None, lo_strict: bool, hi: Decimal | None, hi_strict: bool) -> ByteDFA | None:
    patterns: list[str | None] = [r"(0|[1-9][0-9]*)(\.[0-9]+)?"]
    if lo is not None:
        patterns.append(_mag_ge(lo, lo_strict))
    if hi is not None:
        if hi < 0 or (hi == 0 and hi_strict):
            return None
        patterns.append(_mag_le(hi, hi_strict))
    return _intersect_regexes(patterns)


def _bounded(lo: Decimal | None, lo_strict: bool, hi: Decimal | None, hi_strict: bool) -> ByteDFA:
    parts: list[ByteDFA] = []
    # v = m >= 0
    if hi is None or hi > 0 or (hi == 0 and not hi_strict):
        mag_lo, mag_lo_strict = (lo, lo_strict) if lo is not None and lo >= 0 else (None, False)
        pos = _magnitudes(mag_lo, mag_lo_strict, hi, hi_strict)
        if pos is not None:
            parts.append(pos)
    # v = -m, m > 0
    if lo is None or lo < 0:
        m_hi, m_hi_strict = (-lo, lo_strict) if lo is not None else (None, False)
        if hi is not None and hi < 0:
            m_lo, m_lo_strict = -hi, hi_strict
        else:
            m_lo, m_lo_strict = Decimal(0), True
        neg = _magnitudes(m_lo, m_lo_strict, m_hi, m_hi_strict)
        if neg is not None:
            parts.append(concat_bytes(b"-", neg, b""))
    return union_all(parts)


def _multiple_of(m: Decimal) -> ByteDFA:
    """Numbers ``-?[0-9]+(\\.[0-9]+)?`` whose value is an integer multiple of ``m`` (> 0).

    With m = p / 10^s, x is a multiple iff x * 10^s is an integer divisible by p: the automaton
    tracks that remainder through the integer digits and the first s fraction digits; later
    fraction digits must be zeros.
    """
    sign, digits, exponent = m.normalize().as_tuple()
    p = int("".join(map(str, digits))) * (10 ** max(0, exponent))  # type: ignore[arg-type]
    s = max(0, -exponent)  # type: ignore[operator]
    if p * (s + 2) > MAX_MODULUS:
        raise OverflowError(f"multipleOf {m} needs {p * (s + 2)} automaton states")
    # states: 0 start, 1 after '-', I(r) integer part, D(r) just read '.', F(j, r) after j
    # fraction digits (j = 1..J; at j = J only zeros may follow)
    J = max(s, 1)
    I, D, F = 2, 2 + p, 2 + 2 * p
    n = F + J * p
    trans = np.full((n, 256), -1, dtype=np.int32)
    accepting = np.zeros(n, dtype=bool)
    digits = np.arange(ord("0"), ord("9") + 1)
    for first in (0, 1):
        trans[first, digits] = [I + d % p for d in range(10)]
    trans[0, ord("-")] = 1
    for r in range(p):
        trans[I + r, digits] = [I + (r * 10 + d) % p for d in range(10)]
        trans[I + r, ord(".")] = D + r
        accepting[I + r] = (r * 10**s) % p == 0
        if s >= 1:
            trans[D + r, digits] = [F + (r * 10 + d) % p for d in range(10)]
        else:
            trans[D + r, ord("0")] = F + r
    for j in range(1, J + 1):
        for r in range(p):
            state = F + (j - 1) * p + r
            accepting[state] = (r * 10 ** max(s - j, 0)) % p == 0
            if j < s:
                trans[state, digits] = [F + j * p + (r * 10 + d) % p for d in range(10)]
            else:
                trans[state, ord("0")] = state
    trans, accepting = _trim(trans, accepting, 0)
    return ByteDFA(trans, accepting)


def integer_dfa(lo: int | None = None, hi: int | None = None, multiple_of: Decimal | None = None) -> ByteDFA:
    """Canonical integers in [lo, hi] (inclusive; None: unbounded), multiples of ``multiple_of``."""
    pattern = _integer_regex(lo, hi)
    if pattern is None:
        return ByteDFA(np.zeros((0, 256), dtype=np.int32), np.zeros(0, dtype=bool))
    dfa = compile_regex(pattern)
    if multiple_of is not None:
        dfa = product(dfa, _multiple_of(multiple_of), "and")
    return dfa


def number_dfa(
    lo: Decimal | None = None,
    hi: Decimal | None = None,
    *,
    lo_exclusive: bool = False,
    hi_exclusive: bool = False,
    multiple_of: Decimal | None = None,
) -> ByteDFA:
    """JSON numbers within the bounds (and multiples of ``multiple_of``); see the module docstring."""
    if lo is None and hi is None and multiple_of is None:
        return compile_regex(ANY_NUMBER)
    dfa = _bounded(lo, lo_exclusive, hi, hi_exclusive)
    if multiple_of is not None and not dfa.empty:
        dfa = product(dfa, _multiple_of(multiple_of), "and")
    return dfa
