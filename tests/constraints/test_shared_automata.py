"""Automata shared across compiles: an object's other keys by its declared names, and the
vocabulary's tables built once by ``TokenizerInfo.prepare``."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ctrldec.constraints.jsonschema import compiler
from ctrldec.engine.bytedfa import minus_strings
from ctrldec.vocab import TokenizerInfo

_NAMES = st.lists(st.text(alphabet='ab"é\\', max_size=4), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(names=_NAMES, words=st.lists(st.text(alphabet='ab"é\\', max_size=5), max_size=8))
def test_other_keys_are_every_written_key_but_the_names(names, words):
    dumped = tuple(sorted({compiler._dumps(n) for n in names}))
    other = compiler._OTHER_KEYS.get(dumped)
    assert compiler._OTHER_KEYS.get(dumped) is other  # the second object with these names shares it
    for w in [*words, *names]:
        text = compiler._dumps(w)  # the spelling json.dumps writes, non-ASCII raw
        assert other.matches(text) == (text not in dumped), text


def test_objects_with_the_same_names_share_one_automaton_across_compiles():
    defs = {"type": "object", "properties": {"kind": {"type": "string"}, "spec": {"type": "integer"}}}
    one = compiler.compile_schema({"type": "array", "items": defs})
    two = compiler.compile_schema({"type": "object", "properties": {"x": defs, "y": {"type": "null"}}})
    shared = compiler._OTHER_KEYS.get((b'"kind"', b'"spec"'))
    assert any(dfa is shared for dfa in one.terminals.values())
    assert any(dfa is shared for dfa in two.terminals.values())


def test_the_other_keys_cache_keeps_its_byte_limit():
    base = compiler._written_keys()
    one = minus_strings(base, [b'"a"'])
    cache = compiler._OtherKeysCache(limit=3 * one.trans.nbytes)
    built = [cache.get((compiler._dumps("k%d" % i),)) for i in range(10)]
    assert cache.bytes <= cache.limit and len(cache.entries) < 10
    assert cache.get((b'"k9"',)) is built[9]  # the newest stays
    assert cache.bytes == sum(d.trans.nbytes for d in cache.entries.values())


def test_prepare_builds_every_vocabulary_table_once():
    info = TokenizerInfo([b"a", b"b", b"ab", b'"', b"\\"]).prepare()
    trie, unsafe = info.trie(), info.unsafe_tail()
    assert info.prepare().trie() is trie and info.unsafe_tail() is unsafe
    assert unsafe.tolist() == [-1, -1, -1, 0, 0]  # a quote or backslash is never string-safe
