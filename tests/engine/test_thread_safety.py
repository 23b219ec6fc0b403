"""Compiled grammars shared by threads: the same verdicts and masks as one thread, and the caches
that hold them (``GrammarCache``, ``TokenizerInfo``'s tables) build each thing once."""

from __future__ import annotations

import gc
import json
import sys
import threading

import numpy as np
import pytest
from helpers import byte_level_tokenizer

import ctrldec
from ctrldec.constraints import tokenizer_info
from ctrldec.constraints.grammar import clear_caches
from ctrldec.engine.cache import GrammarCache
from ctrldec.errors import SchemaError

SCHEMAS = [
    {  # long strings: counted by lazy automata whose rows are built as the text goes
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 120},
            "code": {"type": "string", "pattern": "^[a-z]+-[0-9]+$", "minLength": 3, "maxLength": 90},
            "n": {"type": "integer", "minimum": -5, "maximum": 500},
            "tags": {"type": "array", "items": {"enum": ["x", "yy", "zzz"]}, "maxItems": 4},
        },
        "required": ["name"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"anyOf": [{"type": "number", "multipleOf": 0.5}, {"type": "string", "maxLength": 60}]}},
    {"oneOf": [{"type": "object", "properties": {"k": {"const": "a"}, "v": {"type": "string"}}, "required": ["k"]},
               {"type": "object", "properties": {"k": {"const": "b"}, "w": {"type": "boolean"}}, "required": ["k"]}]},
]
DOCUMENTS = [
    [{"name": "café " * 20, "code": "abc-" + "7" * 60, "n": 42, "tags": ["x", "zzz"]}, {"name": "x" * 121},
     {"name": "ok", "code": "A-1"}, {"name": "é" * 100, "n": 501}, {"code": "ab-1"}],
    [[1.5, "s" * 59, -2, "t" * 61], [0.25], ["naïve " * 9, 3e2, 7.5]],
    [{"k": "a", "v": "hello"}, {"k": "b", "w": True}, {"k": "b", "v": "x"}, {"k": "c"}],
]
ARITHMETIC = ["1 + 2 * (3 - 4)", "((7)) / 2 ^ 3", "1 + * 2", "(" * 30 + "1" + ")" * 30]


def _workload(info):
    jobs = [(lambda s=s: ctrldec.JSONSchema(s), [json.dumps(d, ensure_ascii=False, separators=(",", ":")) for d in docs])
            for s, docs in zip(SCHEMAS, DOCUMENTS)]
    jobs.append((lambda: ctrldec.Grammar.builtin("arithmetic"), ARITHMETIC))
    return [(make, [info.encode(text) for text in texts]) for make, texts in jobs]


def _replay(info, jobs, masks: bool) -> list:
    """Per document: whether every token was accepted and the end reached, and (with ``masks``)
    every mask met on the way. Constraints are made afresh, so only the caches are shared."""
    out = []
    buf = np.zeros((info.vocab_size + 31) // 32, dtype=np.uint32)
    for make, docs in jobs:
        constraint = make()
        for ids in docs:
            m, seen, ok = constraint.matcher(info), [], True
            for t in ids:
                if masks:
                    m.fill_mask(buf)
                    seen.append(buf.tobytes())
                if not m.accepts(t):
                    ok = False
                    break
                m.advance(t)
            out.append((ok and m.is_accepting(), seen))
    return out


@pytest.fixture(scope="module")
def info():
    return tokenizer_info(byte_level_tokenizer())


def test_threads_sharing_grammars_match_one_thread(info):
    jobs = _workload(info)
    clear_caches()
    reference = _replay(info, jobs, masks=True)
    verdicts = [v for v, _ in reference]
    assert any(verdicts) and not all(verdicts)  # the documents test both answers
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up at once
    try:
        for _ in range(2):
            clear_caches()  # cold caches: every lazy structure is built while the threads race
            results: dict[int, list] = {}
            threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, _replay(info, jobs, masks=k % 2 == 0)))
                       for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(results) == [0, 1, 2, 3], "a thread raised"
            for k, got in results.items():
                expected = reference if k % 2 == 0 else [(v, []) for v in verdicts]
                assert got == expected, f"thread {k}"
    finally:
        sys.setswitchinterval(interval)


def test_one_build_per_key_however_many_threads_ask():
    cache = GrammarCache()
    builds, gate = [], threading.Event()

    def build():
        gate.wait(5)
        builds.append(1)
        return ctrldec.Regex("[0-9]+").tables()

    got: list = []
    threads = [threading.Thread(target=lambda: got.append(cache.get_tables(("k",), build))) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(got) == 4 and all(g is got[0] for g in got)


def test_a_failed_build_reaches_every_waiter_and_is_not_cached():
    cache = GrammarCache()

    def build():
        raise SchemaError("nope")

    errors: list = []

    def ask():
        try:
            cache.get_tables(("bad",), build)
        except SchemaError as e:
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 3 and len(cache) == 0
    assert cache.get_tables(("bad",), lambda: "built") == "built"


def test_cache_evicts_by_count_and_by_bytes(info):
    cache = GrammarCache(ctrldec.limits.Limits(max_cached_tables=2))
    for n in range(3):
        cache.get_tables(("regex", n), ctrldec.Regex(f"a{{{n + 1}}}").tables)
    assert len(cache) == 2
    tables = cache.get_tables(("regex", 2), lambda: None)
    assert 0 < tables.memory_size_bytes() < cache.memory_size_bytes()
    small = GrammarCache(cache_limit_bytes=1)  # every entry is over it: only the newest stays
    for n in range(3):
        small.get_tables(("regex", n), ctrldec.Regex(f"b{{{n + 1}}}").tables)
    assert len(small) == 1


def test_memory_estimate_grows_with_masks(info):
    compiled = ctrldec.Grammar.builtin("json").compile(info)
    before = compiled.memory_size_bytes()
    m = compiled.matcher()
    for t in info.encode('{"a": [1, 2, {"b": null}]}'):
        m.mask()
        m.advance(t)
    assert compiled.memory_size_bytes() > before > compiled.tables.memory_size_bytes()


def test_compile_budget_works_outside_the_main_thread():
    deep = {"type": "string", "pattern": "(a|b)*a(a|b){14}"}  # the classic exponential DFA
    caught: list = []

    def compile_it():
        try:
            ctrldec.JSONSchema(deep, max_states=2000, max_seconds=5).tables()
        except SchemaError as e:
            caught.append(e)

    t = threading.Thread(target=compile_it)
    t.start()
    t.join(30)
    assert not t.is_alive() and caught and "budget" in str(caught[0])


@pytest.mark.parametrize("enabled", [True, False])
def test_compiles_pause_the_collector_and_leave_it_as_they_found_it(enabled):
    """A compile runs with the cyclic GC off (it makes no cyclic garbage, and the collections it
    would trigger promote its temporaries into full collections); overlapping compiles in
    several threads, failing ones included, leave the collector as it was before the first."""
    seen: list[bool] = []
    barrier = threading.Barrier(3)

    def compile_it(i: int) -> None:
        barrier.wait()
        schema = {"type": "object", "properties": {f"k{i}_{j}": {"type": "string", "pattern": f"^a{{{j}}}$"} for j in range(40)}}
        ctrldec.JSONSchema(schema).tables()
        try:  # a failing compile restores the collector too
            ctrldec.JSONSchema({"type": "string", "pattern": "(a|b)*a(a|b){14}", "$comment": str(i)}, max_states=500).tables()
        except SchemaError:
            pass

    def probe() -> None:  # the collector's state seen from a compile's own build step
        seen.append(gc.isenabled())

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        from ctrldec.engine import bytedfa

        with bytedfa.compile_budget(5, 1000):
            probe()
        threads = [threading.Thread(target=compile_it, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert seen == [False]
        assert gc.isenabled() == enabled and bytedfa._PAUSED[0] == 0
    finally:
        (gc.enable if was else gc.disable)()


def test_shared_tables_are_read_only(info):
    compiled = ctrldec.JSONSchema({"type": "string", "maxLength": 80}).compile(info)
    m = compiled.matcher()
    table, lengths = info.byte_table()
    shared = [table, lengths, info.unsafe_tail(), info.char_starts(), info.trie().order, m.mask(),
              compiled.lexer.trans, compiled.lexer.shift(), *(t.dfa.trans for t in compiled.tables.terminals if hasattr(t.dfa.trans, "flags"))]
    for array in shared:
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array.flat[0] = 0

