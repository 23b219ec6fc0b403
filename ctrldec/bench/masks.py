"""``ctrldec bench masks``: replay documents token by token through grammar engines.

For each engine, one process, same documents, same tokenizer:

* compile time (from a clean cache; the tokenizer tables are built before timing),
* full-mask time per token (filling an ``int32`` bitmask), measured at every position of every
  document, with the grammar compiled once (masks cached for the life of the compiled grammar),
* ``accepts`` time per token, measured in a separate pass on a freshly compiled grammar where no
  mask was ever computed (the cost a mask-free sampler pays),
* correctness: tokens of a valid document that the mask rejects; and, on a sample of positions,
  allowed tokens after which no completion exists. The latter is checked with a witness: ctrldec
  searches a completion and **Lark's own parser** must accept prefix + token + completion.

Documents are tokenized canonically (the tokenizer's own encoding of the whole document).
"""

from __future__ import annotations

import glob
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .engines import available_engines, make_engine

__all__ = ["run", "load_docs", "jsonschemabench_docs", "percentiles"]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def load_docs(path: str) -> list[str]:
    """Documents from a JSONL file: each line a JSON string, or an object with a ``text`` field."""
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON: {e}") from None
            if isinstance(value, dict) and isinstance(value.get("text"), str):
                value = value["text"]
            if not isinstance(value, str):
                raise ValueError(f"{path}:{n}: expected a JSON string or an object with a 'text' string")
            docs.append(value)
    return docs


def jsonschemabench_docs(folder: str) -> list[tuple[str, str]]:
    """(split, document) for every valid instance in ``folder/*.jsonl`` (JSONSchemaBench layout)."""
    files = sorted(glob.glob(os.path.join(folder, "*.jsonl")))
    if not files:
        raise ValueError(f"no *.jsonl files in {folder}")
    out = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                for test in row.get("tests", []):
                    if test.get("valid"):
                        out.append((row.get("split", os.path.basename(path)), json.dumps(test["data"], ensure_ascii=False)))
    return out


@dataclass
class _Result:
    engine: str
    version: str
    compile_ms: list[float] = field(default_factory=list)
    mask_us: list[float] = field(default_factory=list)
    accepts_us: list[float] = field(default_factory=list)
    tokens: int = 0
    valid_rejected: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    dead_checked: int = 0
    dead_allowed: int = 0
    dead_examples: list[str] = field(default_factory=list)
    differs_from_ctrldec: int = 0
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "version": self.version,
            "compile_ms": percentiles(self.compile_ms),
            "mask_us": percentiles(self.mask_us),
            "accepts_us": percentiles(self.accepts_us),
            "tokens": self.tokens,
            "valid_tokens_rejected": self.valid_rejected,
            "rejected_examples": self.rejected_examples[:5],
            "dead_tokens_checked": self.dead_checked,
            "dead_tokens_allowed": self.dead_allowed,
            "dead_examples": self.dead_examples[:5],
            "positions_mask_differs_from_ctrldec": self.differs_from_ctrldec,
            "error": self.error,
        }


def _bit(words: np.ndarray, t: int) -> bool:
    return bool((int(words[t >> 5]) >> (t & 31)) & 1)


class _WitnessOracle:
    """Does some completion exist after prefix + token? A completion found by ctrldec must parse with Lark."""

    def __init__(self, lark_text: str, automaton) -> None:
        import lark

        self._lark = lark.Lark(lark_text, parser="lalr")
        self._automaton = automaton

    def completable(self, data: bytes) -> bool | None:
        """True (witness parsed by Lark), False (none exists), None (search budget exhausted)."""
        tail = self._automaton.completion(data)
        if tail is None:
            return None if self._automaton.is_prefix(data) else False
        try:
            self._lark.parse((data + tail).decode("utf-8"))
        except Exception:
            return False
        return True


def run(
    lark_text: str,
    docs: list[str],
    tokenizer: Any,
    *,
    engines: list[str] | None = None,
    compile_repeats: int = 10,
    check_every: int = 97,
    check_tokens: int = 3,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Replay ``docs`` through each engine; return per-engine summaries (see module docstring)."""
    from ..constraints.grammar import Grammar

    vocab_size = len(tokenizer)
    names = engines or available_engines()
    token_docs = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    grammar = Grammar(lark_text)
    oracle = _WitnessOracle(lark_text, grammar._automaton())
    rng = random.Random(seed)
    sample_positions = {(d, i) for d, ids in enumerate(token_docs) for i in range(len(ids) + 1) if rng.random() < 1 / check_every}
    sampled: dict[str, dict[tuple[int, int], np.ndarray]] = {}  # engine -> position -> mask
    results = []
    for name in names:
        engine = make_engine(name, tokenizer, vocab_size)
        res = _Result(name, engine.version())
        results.append(res)
        try:
            engine.compile("start: \"warm-up\"\n")  # one-time process costs (e.g. Lark's own parser)
            for _ in range(compile_repeats):
                engine.clear_caches()
                t0 = time.perf_counter_ns()
                compiled = engine.compile(lark_text)
                res.compile_ms.append((time.perf_counter_ns() - t0) / 1e6)
        except Exception as e:  # a peer that cannot take the grammar is reported, not fatal
            res.error = f"compile failed: {str(e).splitlines()[0][:200]}"
            continue
        buf = np.zeros(engine.words, dtype=np.uint32)
        kept = sampled[name] = {}
        started = time.time()
        for d, ids in enumerate(token_docs):
            m = engine.matcher(compiled)
            for i, t in enumerate(ids + [None]):
                t0 = time.perf_counter_ns()
                engine.fill(m, buf)
                res.mask_us.append((time.perf_counter_ns() - t0) / 1e3)
                if (d, i) in sample_positions:
                    kept[(d, i)] = buf.copy()
                if t is None:
                    break
                res.tokens += 1
                if not _bit(buf, t):
                    res.valid_rejected += 1
                    res.rejected_examples.append(f"doc {d} token {i} {tokenizer.decode([t])!r}")
                    break
                if not engine.advance(m, t):
                    res.valid_rejected += 1
                    res.rejected_examples.append(f"doc {d} token {i} {tokenizer.decode([t])!r} (advance)")
                    break
            if progress and d % 500 == 0:
                print(f"  {name}: masks {d}/{len(token_docs)} docs, {time.time() - started:.0f}s", flush=True)
        if engine.has_accepts:
            engine.clear_caches()
            fresh = engine.compile(lark_text)
            for ids in token_docs:
                m = engine.matcher(fresh)
                for t in ids:
                    t0 = time.perf_counter_ns()
                    ok = engine.accepts(m, t)
                    res.accepts_us.append((time.perf_counter_ns() - t0) / 1e3)
                    if not ok or not engine.advance(m, t):
                        break
    # Correctness on the sampled positions, outside every timed pass (the witness search and
    # Lark's parser allocate a lot, and would otherwise trigger GC pauses inside timed calls).
    by_name = {r.engine: r for r in results}
    ours = sampled.get("ctrldec", {})
    if "ctrldec" in by_name:
        res = by_name["ctrldec"]
        info = make_engine("ctrldec", tokenizer, vocab_size).info  # type: ignore[attr-defined]
        for (d, i), words in sorted(ours.items()):
            allowed = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little")[:vocab_size])
            prefix = info.decode_bytes(token_docs[d][:i])
            for tok in rng.sample(allowed.tolist(), min(check_tokens, len(allowed))):
                data = info.token_bytes[tok]
                if not data:
                    continue  # EOS: allowed only when the prefix is a sentence
                res.dead_checked += 1
                if oracle.completable(prefix + data) is False:
                    res.dead_allowed += 1
                    res.dead_examples.append(repr((prefix + data)[-60:]))
    for name, kept in sampled.items():
        if name != "ctrldec":
            by_name[name].differs_from_ctrldec = sum(1 for k, w in kept.items() if k in ours and not np.array_equal(ours[k], w))
    return {
        "documents": len(docs),
        "tokens": sum(len(t) for t in token_docs),
        "vocab_size": vocab_size,
        "engines": [r.summary() for r in results],
    }


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a ``run`` report."""

    def f(x: dict, key: str, unit: float = 1.0, digits: int = 1) -> str:
        return "-" if x.get("n", 0) == 0 else f"{x[key] * unit:.{digits}f}"

    head = (
        f"{'engine':<11} {'compile ms p50/p99':>19} {'mask us p50/p99/max':>24} {'accepts us p50/p99':>19} "
        f"{'tokens':>8} {'valid rejected':>14} {'dead allowed':>13}"
    )
    lines = [f"{report['documents']} documents, {report['tokens']} tokens, vocabulary {report['vocab_size']}", head]
    for e in report["engines"]:
        if e["error"]:
            lines.append(f"{e['engine']:<11} {e['error']}")
            continue
        c, m, a = e["compile_ms"], e["mask_us"], e["accepts_us"]
        dead = f"{e['dead_tokens_allowed']}/{e['dead_tokens_checked']}" if e["engine"] == "ctrldec" else f"(≠{e['positions_mask_differs_from_ctrldec']})"
        lines.append(
            f"{e['engine']:<11} {f(c, 'p50', digits=2) + '/' + f(c, 'p99', digits=2):>19} "
            f"{f(m, 'p50') + '/' + f(m, 'p99') + '/' + f(m, 'max', digits=0):>24} "
            f"{f(a, 'p50') + '/' + f(a, 'p99'):>19} {e['tokens']:>8} {e['valid_tokens_rejected']:>14} {dead:>13}"
        )
    lines.append(
        "dead allowed: allowed tokens after which no completion exists / checked (witness parsed by Lark); "
        "(≠N): sampled positions where the peer's mask differs from ctrldec's"
    )
    return "\n".join(lines)
