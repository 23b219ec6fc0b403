"""``ctrldec bench coverage``: how much of real-world JSON Schema each engine gets exactly right.

Two data sets, engines side by side in one process, default tokenizer:

* the JSON-Schema-Test-Suite (draft2020-12, every required file but format, refRemote and
  vocabulary): a *group* (one schema, its tests) passes when the schema compiles and the token
  matcher accepts every valid instance and rejects every invalid one;
* JSONSchemaBench: per split, schemas compiled, schemas passing (same rule), valid instances
  rejected, invalid instances accepted, compile time p50/p99, full-mask time p50/p99 (over every
  token of every valid instance).

Instances are serialized compactly (``json.dumps(separators=(",", ":"), ensure_ascii=False)``)
and tokenized canonically; a document is accepted when every token is accepted and the matcher
may stop at the end. Engine settings (each engine's most permissive spec-correct mode):

* ctrldec: ``JSONSchema(schema, lenient=True, property_order="any", extra_properties="allow")``
  (the spec's language, not the default generation policy): relaxations (e.g.
  ``uniqueItems``) compile and warn, so they may accept invalid instances;
* ctrldec-strict: the same with ``lenient=False`` (the default): what cannot be enforced exactly
  does not compile;
* llguidance: its defaults (properties in schema order);
* xgrammar: ``any_whitespace=False, separators=(",", ":"), strict_mode=False, any_order=True``;
* outlines-core: ``build_regex_from_schema`` and its own token ``Index`` over the same
  vocabulary (built from the token bytes, no hub); its "mask" is ``get_allowed_tokens``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import time
import warnings
from collections import defaultdict
from typing import Any

import numpy as np

from .masks import percentiles

__all__ = ["run_suite", "run_bench", "SUITE_EXCLUDED", "SCHEMA_ENGINES"]

SUITE_EXCLUDED = {"format.json", "refRemote.json", "vocabulary.json"}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class _SchemaEngine:
    name = "?"
    measures_masks = True

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)

    def compile(self, schema: Any) -> Any:
        raise NotImplementedError

    def accepts(self, compiled: Any, ids: list[int], text: str) -> bool:
        raise NotImplementedError

    def mask_times(self, compiled: Any, ids: list[int]) -> list[float]:
        """Full-mask time (us) before each token of a valid document."""
        raise NotImplementedError


class _Ctrldec(_SchemaEngine):
    name = "ctrldec"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        from ..constraints.grammar import tokenizer_info

        # the vocabulary's tables built here, as the peers build their tokenizer info here
        self.info = tokenizer_info(tokenizer).prepare()
        # strict mode checks enum values of arrays and objects with jsonschema's validator; its
        # import (1.1 s with the format extras: rfc3987_syntax builds a Lark parser) is made here,
        # once per process like the peers' imports, not inside the first compile that needs it
        import jsonschema  # noqa: F401
        self.buf = np.zeros((self.vocab_size + 31) // 32, dtype=np.uint32)

    lenient = True

    def compile(self, schema: Any) -> Any:
        from ..constraints.jsonschema import JSONSchema

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return JSONSchema(schema, lenient=self.lenient, property_order="any", extra_properties="allow").compile(self.info)

    def accepts(self, compiled: Any, ids: list[int], text: str) -> bool:
        m = compiled.matcher()
        for t in ids:
            if not m.accepts(t):
                return False
            m.advance(t)
        return m.is_accepting()

    def mask_times(self, compiled: Any, ids: list[int]) -> list[float]:
        m = compiled.matcher()
        out = []
        for t in ids:
            t0 = time.perf_counter_ns()
            m.fill_mask(self.buf)
            out.append((time.perf_counter_ns() - t0) / 1e3)
            if not m.accepts(t):
                break
            m.advance(t)
        return out


class _LLGuidance(_SchemaEngine):
    name = "llguidance"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        import llguidance.hf
        import llguidance.numpy

        self._ll = llguidance
        self._tok = llguidance.hf.from_tokenizer(tokenizer)
        self.buf = llguidance.numpy.allocate_token_bitmask(1, self._tok.vocab_size)

    def compile(self, schema: Any) -> Any:
        grammar = self._ll.LLMatcher.grammar_from_json_schema(json.dumps(schema))
        m = self._ll.LLMatcher(self._tok, grammar)
        if m.is_error():
            raise ValueError(m.get_error())
        return grammar

    def accepts(self, compiled: Any, ids: list[int], text: str) -> bool:
        m = self._ll.LLMatcher(self._tok, compiled)
        for t in ids:
            if not m.consume_token(t) or m.is_error():
                return False
        return m.is_accepting()

    def mask_times(self, compiled: Any, ids: list[int]) -> list[float]:
        import llguidance.numpy as lln

        m = self._ll.LLMatcher(self._tok, compiled)
        out = []
        for t in ids:
            t0 = time.perf_counter_ns()
            lln.fill_next_token_bitmask(m, self.buf, 0)
            out.append((time.perf_counter_ns() - t0) / 1e3)
            if not m.consume_token(t):
                break
        return out


class _XGrammar(_SchemaEngine):
    name = "xgrammar"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        import xgrammar as xgr

        self._xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size)
        self._compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        self._eos = tokenizer.eos_token_id
        self.buf = xgr.allocate_token_bitmask(1, self.vocab_size)

    def compile(self, schema: Any) -> Any:
        return self._compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=False, any_order=True
        )

    def accepts(self, compiled: Any, ids: list[int], text: str) -> bool:
        m = self._xgr.GrammarMatcher(compiled)
        for t in ids:
            if not m.accept_token(t):
                return False
        return bool(m.accept_token(self._eos)) and m.is_terminated()

    def mask_times(self, compiled: Any, ids: list[int]) -> list[float]:
        m = self._xgr.GrammarMatcher(compiled)
        out = []
        for t in ids:
            t0 = time.perf_counter_ns()
            m.fill_next_token_bitmask(self.buf)
            out.append((time.perf_counter_ns() - t0) / 1e3)
            if not m.accept_token(t):
                break
        return out


class _OutlinesCore(_SchemaEngine):
    name = "outlines-core"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        from outlines_core import Vocabulary

        from ..constraints.grammar import tokenizer_info

        info = tokenizer_info(tokenizer)
        by_bytes: dict[bytes, list[int]] = {}
        for tid, data in enumerate(info.token_bytes):
            if data:
                by_bytes.setdefault(data, []).append(tid)
        self._vocabulary = Vocabulary(tokenizer.eos_token_id, by_bytes)

    def compile(self, schema: Any) -> Any:
        from outlines_core import Index
        from outlines_core.json_schema import build_regex_from_schema

        return Index(build_regex_from_schema(json.dumps(schema)), self._vocabulary)

    def accepts(self, compiled: Any, ids: list[int], text: str) -> bool:
        state = compiled.get_initial_state()
        for t in ids:
            state = compiled.get_next_state(state, t)
            if state is None:
                return False
        return compiled.is_final_state(state)

    def mask_times(self, compiled: Any, ids: list[int]) -> list[float]:
        state = compiled.get_initial_state()
        out = []
        for t in ids:
            t0 = time.perf_counter_ns()
            compiled.get_allowed_tokens(state)
            out.append((time.perf_counter_ns() - t0) / 1e3)
            state = compiled.get_next_state(state, t)
            if state is None:
                break
        return out


class _CtrldecStrict(_Ctrldec):
    """The default mode: what cannot be enforced exactly is a compile error, never a relaxation."""

    name = "ctrldec-strict"
    lenient = False


SCHEMA_ENGINES = {"ctrldec": (_Ctrldec, None), "ctrldec-strict": (_CtrldecStrict, None), "llguidance": (_LLGuidance, "llguidance"), "xgrammar": (_XGrammar, "xgrammar"), "outlines-core": (_OutlinesCore, "outlines_core")}


def _engines(names: list[str] | None, tokenizer: Any) -> list[_SchemaEngine]:
    import importlib.util

    chosen = names or [n for n, (_, module) in SCHEMA_ENGINES.items() if module is None or importlib.util.find_spec(module)]
    out = []
    for n in chosen:
        if n not in SCHEMA_ENGINES:
            raise ValueError(f"unknown engine {n!r}; known: {', '.join(SCHEMA_ENGINES)}")
        out.append(SCHEMA_ENGINES[n][0](tokenizer))
    return out


@contextlib.contextmanager
def _quiet_stderr(active: bool):
    """Peers log warnings from C++ straight to file descriptor 2; keep the report readable."""
    if not active:
        yield
        return
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _judge(engine: _SchemaEngine, schema: Any, tests: list[tuple[bool, Any]], tokenizer: Any, masks: bool) -> dict[str, Any]:
    """Compile one schema and check its tests; optionally time masks over the valid ones."""
    with _quiet_stderr(engine.name != "ctrldec"):
        return _judge_inner(engine, schema, tests, tokenizer, masks)


def _judge_inner(engine: _SchemaEngine, schema: Any, tests: list[tuple[bool, Any]], tokenizer: Any, masks: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"compiled": False, "passing": False, "valid_rejected": 0, "invalid_accepted": 0, "disputed": 0, "mask_us": []}
    t0 = time.perf_counter()
    try:
        compiled = engine.compile(schema)
    except Exception as e:  # each engine raises its own types; all mean "does not compile"
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        return row
    row["compile_ms"] = (time.perf_counter() - t0) * 1000
    row["compiled"] = True
    ok = True
    for valid, data in tests:
        text = _dumps(data)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        try:
            accepted = engine.accepts(compiled, ids, text)
        except Exception:
            accepted = False
        if valid and not accepted:
            row["valid_rejected"] += 1
            ok = False
        elif not valid and accepted:
            row["invalid_accepted"] += 1
            ok = False
            if _reference_accepts(schema, data):
                row["disputed"] += 1  # labelled invalid, valid for the validator of the schema's draft
        if valid and masks and engine.measures_masks and accepted:
            row["mask_us"] += engine.mask_times(compiled, ids)
    row["passing"] = ok
    # passing if every instance whose label the reference disputes is read the reference's way
    row["passing_reference"] = ok or row["valid_rejected"] == 0 and row["invalid_accepted"] == row["disputed"]
    return row


def _bar(total: int, name: str, shown: bool) -> Any:
    """A progress bar on stderr (tqdm, which transformers already brings) when ``shown``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="schema", disable=not shown)


def _reference_accepts(schema: Any, data: Any) -> bool:
    """Does the ``jsonschema`` validator of the schema's own draft (2020-12 if it names none),
    with that draft's format checker, accept ``data``?"""
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        return bool(cls(schema, format_checker=cls.FORMAT_CHECKER).is_valid(data))
    except Exception:  # noqa: BLE001 - a schema the validator cannot read: no dispute
        return False


def run_suite(folder: str, tokenizer: Any, *, engines: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Groups passed per keyword file of the JSON-Schema-Test-Suite (draft2020-12)."""
    files = sorted(f for f in glob.glob(os.path.join(folder, "*.json")) if os.path.basename(f) not in SUITE_EXCLUDED)
    if not files:
        raise ValueError(f"no test files in {folder}")
    result: dict[str, Any] = {"files": {}, "totals": {}}
    for engine in _engines(engines, tokenizer):
        total = 0
        for path in files:
            groups = json.load(open(path, encoding="utf-8"))
            passed = 0
            for group in groups:
                tests = [(t["valid"], t["data"]) for t in group["tests"]]
                passed += _judge(engine, group["schema"], tests, tokenizer, masks=False)["passing"]
            name = os.path.basename(path)[: -len(".json")]
            result["files"].setdefault(name, {"groups": len(groups)})[engine.name] = passed
            total += passed
        result["totals"][engine.name] = total
        if progress:
            print(f"  suite {engine.name}: {total}", flush=True)
    result["groups"] = sum(v["groups"] for v in result["files"].values())
    return result


def _worker(conn: Any, engine_name: str, model: str | None, masks: bool) -> None:
    """A process that judges schemas for one engine until told to stop (see ``_Judge``)."""
    import warnings as _warnings

    _warnings.simplefilter("ignore")
    from ..models import load_tokenizer

    tokenizer = load_tokenizer(model)
    engine = SCHEMA_ENGINES[engine_name][0](tokenizer)
    conn.send("ready")
    while True:
        job = conn.recv()
        if job is None:
            return
        schema, tests = job
        conn.send(_judge(engine, schema, tests, tokenizer, masks))


class _Judge:
    """Judge schemas in a worker process, with a wall-clock limit per schema.

    Peers compile in native code that no Python timer can interrupt, and some schemas take
    them minutes: past ``timeout`` seconds the worker is killed, the schema counts as not
    compiled (JSONSchemaBench's own rule, 10 s), and a fresh worker takes over.
    """

    def __init__(self, engine_name: str, model: str | None, masks: bool, timeout: float) -> None:
        self.args = (engine_name, model, masks)
        self.timeout = timeout
        self.process: Any = None
        self._start()

    def _start(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, *self.args), daemon=True)
        self.process.start()
        if not self.conn.poll(300) or self.conn.recv() != "ready":
            raise RuntimeError(f"the {self.args[0]} worker did not start")

    def __call__(self, schema: Any, tests: list) -> dict[str, Any]:
        started = time.perf_counter()
        self.conn.send((schema, tests))
        if self.conn.poll(self.timeout):
            return self.conn.recv()
        self.process.kill()
        self.process.join()
        self._start()
        return {"compiled": False, "passing": False, "valid_rejected": 0, "invalid_accepted": 0, "mask_us": [],
                "error": f"timeout after {time.perf_counter() - started:.0f} s"}

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()


def run_bench(
    folder: str,
    tokenizer: Any,
    *,
    engines: list[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    masks: bool = True,
    progress: bool = False,
    timeout: float = 10.0,
    model: str | None = None,
    partial: Any = None,
) -> dict[str, Any]:
    """JSONSchemaBench coverage per split (a seeded random sample of schemas if ``sample``).

    Each engine runs in its own worker process with ``timeout`` seconds per schema (compile plus
    checks; mask timing is excluded from the limit's purpose but not from its clock).
    ``partial(report)`` is called after each engine, so long runs keep what they measured.
    """
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    if not rows:
        raise ValueError(f"no *.jsonl files in {folder}")
    if sample:
        rows = random.Random(seed).sample(rows, min(sample, len(rows)))
    out: dict[str, Any] = {"schemas": len(rows), "timeout_s": timeout, "engines": {}}
    import importlib.util

    names = engines or [n for n, (_, module) in SCHEMA_ENGINES.items() if module is None or importlib.util.find_spec(module)]
    for name in names:
        if name not in SCHEMA_ENGINES:
            raise ValueError(f"unknown engine {name!r}; known: {', '.join(SCHEMA_ENGINES)}")
        judge = _Judge(name, model, masks, timeout)
        per_split: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(list))
        started = time.time()
        failures = []
        bar = _bar(len(rows), name, progress)
        for r in rows:
            bar.update()
            schema = json.loads(r["schema"])
            tests = [(t["valid"], t["data"]) for t in r["tests"]]
            row = judge(schema, tests)
            for split in (r["split"], "all"):
                s = per_split[split]
                s["schemas"].append(1)
                s["compiled"].append(row["compiled"])
                s["passing"].append(row["passing"])
                s["valid_rejected"].append(row["valid_rejected"])
                s["invalid_accepted"].append(row["invalid_accepted"])
                s["disputed"].append(row.get("disputed", 0))
                s["passing_reference"].append(row.get("passing_reference", row["passing"]))
                s["valid"].append(sum(1 for v, _ in tests if v) if row["compiled"] else 0)
                if "compile_ms" in row:
                    s["compile_ms"].append(row["compile_ms"])
                s["mask_us"] += row["mask_us"]
            if not row["passing"] and len(failures) < 200:
                failures.append({"id": r["id"], "error": row.get("error"), "valid_rejected": row["valid_rejected"],
                                 "invalid_accepted": row["invalid_accepted"], "disputed": row.get("disputed", 0)})
        bar.close()
        judge.close()
        summary = {split: _split_summary(s) for split, s in sorted(per_split.items())}
        out["engines"][name] = {"splits": summary, "seconds": time.time() - started, "failures": failures}
        if partial is not None:
            partial(out)
    return out


def _split_summary(s: dict[str, list]) -> dict[str, Any]:
    """One split's totals and time percentiles, from its per-schema lists."""
    return {
        "schemas": len(s["schemas"]),
        "compiled": int(sum(s["compiled"])),
        "passing": int(sum(s["passing"])),
        "valid_rejected": int(sum(s["valid_rejected"])),
        "valid_of_compiled": int(sum(s["valid"])),
        "invalid_accepted": int(sum(s["invalid_accepted"])),
        "disputed": int(sum(s["disputed"])),
        "passing_reference": int(sum(s["passing_reference"])),
        "compile_ms": percentiles(s["compile_ms"]),
        "mask_us": percentiles(s["mask_us"]),
        # the margin of a p99 bar at 0.5 ms: under 1% of the masks may pass it
        "masks_over_500us": int(np.count_nonzero(np.asarray(s["mask_us"], dtype=np.float64) > 500)),
    }


def format_suite(report: dict[str, Any]) -> str:
    names = list(report["totals"])
    lines = [f"JSON-Schema-Test-Suite draft2020-12: {report['groups']} groups in {len(report['files'])} files"]
    lines.append(f"{'file':<24}{'groups':>7}" + "".join(f"{n:>15}" for n in names))
    for file, row in report["files"].items():
        lines.append(f"{file:<24}{row['groups']:>7}" + "".join(f"{row.get(n, 0):>15}" for n in names))
    lines.append(f"{'total':<24}{report['groups']:>7}" + "".join(f"{report['totals'][n]:>15}" for n in names))
    return "\n".join(lines)


def format_bench(report: dict[str, Any]) -> str:
    lines = [f"JSONSchemaBench: {report['schemas']} schemas"]
    lines.append("(disputed: labelled invalid, accepted by the engine, and valid for the jsonschema validator of the schema's "
                 "own draft; by ref: passing when those are read the validator's way)")
    head = (f"{'engine':<14}{'split':<24}{'schemas':>8}{'compiled':>9}{'passing':>8}{'by ref':>7}{'valid rej':>10}{'invalid acc':>12}"
            f"{'disputed':>9}{'compile ms p50/p99':>20}{'mask us p50/p99':>18}")
    lines.append(head)
    for name, e in report["engines"].items():
        for split, s in e["splits"].items():
            c, m = s["compile_ms"], s["mask_us"]
            cm = f"{c['p50']:.1f}/{c['p99']:.0f}" if c.get("n") else "-"
            mm = f"{m['p50']:.1f}/{m['p99']:.0f}" if m.get("n") else "-"
            lines.append(
                f"{name:<14}{split:<24}{s['schemas']:>8}{s['compiled']:>9}{s['passing']:>8}{s.get('passing_reference', '-'):>7}"
                f"{s['valid_rejected']:>10}{s['invalid_accepted']:>12}{s.get('disputed', '-'):>9}{cm:>20}{mm:>18}"
            )
    for name, e in report["engines"].items():
        s = e["splits"].get("all", {})
        n = s.get("mask_us", {}).get("n")
        if n and "masks_over_500us" in s:
            lines.append(f"{name}: {s['masks_over_500us']:,} of {n:,} masks over 0.5 ms (a p99 under 0.5 ms allows {n // 100:,})")
    return "\n".join(lines)
