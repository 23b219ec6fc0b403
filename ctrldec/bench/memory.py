"""``ctrldec bench memory``: peak memory of the inputs that used to exhaust it.

Each case runs in a fresh Python process (so one case's caches and heap do not hide another's),
which samples its own resident set every 2 ms while the case runs and reports the peak growth
over a baseline taken just before:

* ``long-string``: ``{"type": "string", "maxLength": 100000}`` generated to its full length: at
  each step the mask is computed, and the longest allowed token made of lower-case letters is
  taken, as a decoding loop would (so the last tokens are cut to land exactly on 100,000
  characters). Baseline: the compiled grammar and a matcher after the opening quote. Bound:
  50 MB (issue 17).
* ``long-pattern``: the same under ``"pattern": "^[a-z ]*$"`` (a counted pattern).
* ``deep-schema``: a chain of 1,000 ``$defs``, each an object whose ``next`` refers to the
  following one (the last to the first). Bound: it compiles within the compile budget
  (``Limits.max_seconds``, ``max_memory``) or fails with the budget's error.
* ``big-schema``: a 10 MB schema, an object of 40,000 optional properties (strings with a
  description and a ``maxLength``). Same bound.
* ``big-grammar``: a Lark grammar of 5,000 chained rules (``r_i: "w_i" r_i+1 | "x_i"``). Same bound.

>>> [c for c in CASES]
['long-string', 'long-pattern', 'deep-schema', 'big-schema', 'big-grammar']
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..engine.bytedfa import resident_bytes
from ..limits import DEFAULT_LIMITS

__all__ = ["CASES", "run", "format_report"]

LONG = 100_000
LONG_BOUND_MB = 50.0
CASES = {
    "long-string": "a string of 100,000 characters under maxLength (generated to full length)",
    "long-pattern": "the same under a pattern (^[a-z ]*$)",
    "deep-schema": "a chain of 1,000 $defs",
    "big-schema": "a 10 MB schema (40,000 optional properties)",
    "big-grammar": "a Lark grammar of 5,000 chained rules",
}
_MB = 2**20


class _Peak:
    """The process's resident set sampled every 2 ms in a thread, from ``start()`` to ``stop()``."""

    def __init__(self) -> None:
        self.base = self.peak = resident_bytes() or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, resident_bytes() or 0)

    def start(self) -> _Peak:
        gc.collect()
        self.base = self.peak = resident_bytes() or 0
        self._thread.start()
        return self

    def stop(self) -> float:
        """Peak growth over the baseline, MB."""
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes() or 0)
        return (self.peak - self.base) / _MB


def _letter_tokens(info: Any) -> list[int]:
    """Token ids made of 1 to 8 lower-case ASCII letters, longest first."""
    ids = [i for i, b in enumerate(info.token_bytes) if 1 <= len(b) <= 8 and b.isalpha() and b.islower() and b.isascii()]
    return sorted(ids, key=lambda i: -len(info.token_bytes[i]))


def _long(info: Any, schema: dict) -> dict[str, Any]:
    import ctrldec

    grammar = ctrldec.JSONSchema(schema).compile(info)
    m = grammar.matcher()
    m.advance(info.encode('"')[-1])
    m.mask()
    letters = _letter_tokens(info)
    peak = _Peak().start()
    t0 = time.perf_counter()
    written = 0
    while True:
        mask = m.mask()
        token = next((t for t in letters if mask[t >> 5] >> (t & 31) & 1), None)
        if token is None:
            break
        m.advance(token)
        written += len(info.token_bytes[token])
    m.advance(info.encode('"')[-1])
    seconds = time.perf_counter() - t0
    growth = peak.stop()
    ok = written == LONG and m.is_accepting()
    outcome = f"generated {written} characters in {m.num_tokens} tokens" + ("" if ok else " (NOT the full length)")
    return {"outcome": outcome, "seconds": seconds, "growth_mb": growth, "bound_mb": LONG_BOUND_MB, "ok": ok and growth <= LONG_BOUND_MB}


def _compiles(build: Callable[[], Any]) -> dict[str, Any]:
    import ctrldec

    peak = _Peak().start()
    t0 = time.perf_counter()
    try:
        build()
        outcome, ok = "compiled", True
    except (ctrldec.SchemaError, ctrldec.GrammarError) as e:
        outcome = f"{type(e).__name__}: {str(e)[:160]}"
        ok = "budget" in str(e)
    seconds = time.perf_counter() - t0
    growth = peak.stop()
    bound = DEFAULT_LIMITS.max_memory / _MB
    # the bound is checked every 10 ms: allow what a loop allocates in between
    return {"outcome": outcome, "seconds": seconds, "growth_mb": growth, "bound_mb": bound, "ok": ok and growth <= 1.1 * bound}


def deep_schema(n: int = 1_000) -> dict:
    """A chain of ``n`` definitions, each referring to the next (the last to the first)."""
    defs = {f"n{i}": {"type": "object", "properties": {"v": {"type": "integer"}, "next": {"$ref": f"#/$defs/n{(i + 1) % n}"}},
                      "required": ["v"]} for i in range(n)}  # fmt: skip
    return {"$defs": defs, "$ref": "#/$defs/n0"}


def big_schema(size: int = 10_000_000) -> dict:
    """An object of optional string properties whose JSON text is at least ``size`` bytes."""
    props: dict[str, Any] = {}
    length = len('{"type": "object", "properties": {}}')
    while length < size:
        name = f"property_{len(props):06d}"
        value = {"type": "string", "description": "x" * 180, "maxLength": 40 + len(props) % 50}
        props[name] = value
        length += len(json.dumps(name)) + len(json.dumps(value)) + 4  # the pair, ": " and ", "
    return {"type": "object", "properties": props}


def big_grammar(n: int = 5_000) -> str:
    lines = ["start: r0"] + [f'r{i}: "w{i}" r{i + 1} | "x{i}"' for i in range(n - 1)] + [f'r{n - 1}: "end"']
    return "\n".join(lines)


def run_case(name: str, model: str | None = None) -> dict[str, Any]:
    """One case in this process (``run`` starts a process per case)."""
    import ctrldec

    if name not in CASES:
        raise ValueError(f"unknown case {name!r}; the cases are {', '.join(CASES)}")
    if name.startswith("long"):
        from ..models import load_tokenizer
        from ..vocab import tokenizer_info

        info = tokenizer_info(load_tokenizer(model))
        schema: dict[str, Any] = {"type": "string", "maxLength": LONG}
        if name == "long-pattern":
            schema["pattern"] = "^[a-z ]*$"
        out = _long(info, schema)
    elif name == "deep-schema":
        out = _compiles(lambda: ctrldec.JSONSchema(deep_schema()).tables())
    elif name == "big-schema":
        schema = big_schema()
        out = _compiles(lambda: ctrldec.JSONSchema(schema).tables())
        out["outcome"] = f"{len(json.dumps(schema)) / 1e6:.1f} MB: " + out["outcome"]
    else:
        text = big_grammar()
        out = _compiles(lambda: ctrldec.Grammar(text).tables())
    return {"case": name, "what": CASES[name], **out}


def run(cases: list[str] | None = None, model: str | None = None, *, timeout: float = 600.0) -> dict[str, Any]:
    """Every case (or ``cases``) in a fresh process each; a case that crashes or times out is
    reported as failed with its exit status."""
    rows = []
    for name in cases or list(CASES):
        if name not in CASES:
            raise ValueError(f"unknown case {name!r}; the cases are {', '.join(CASES)}")
        cmd = [sys.executable, "-m", "ctrldec.bench.memory", name] + ([model] if model else [])
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            rows.append({"case": name, "what": CASES[name], "outcome": f"timed out after {timeout:.0f} s", "ok": False})
            continue
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"case": name, "what": CASES[name], "outcome": f"exit {done.returncode}: {last[:200]}", "ok": False})
            continue
        rows.append(json.loads(lines[-1]))
    return {"cases": rows, "ok": all(r["ok"] for r in rows)}


def format_report(report: dict[str, Any]) -> str:
    lines = ["| case | outcome | seconds | peak RSS growth | bound | holds |", "|---|---|---|---|---|---|"]
    for r in report["cases"]:
        seconds = f"{r['seconds']:.2f}" if "seconds" in r else "-"
        growth = f"{r['growth_mb']:.1f} MB" if "growth_mb" in r else "-"
        bound = f"{r['bound_mb']:.0f} MB" if "bound_mb" in r else "-"
        lines.append(f"| {r['case']}: {r['what']} | {r['outcome']} | {seconds} | {growth} | {bound} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(run_case(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)))
