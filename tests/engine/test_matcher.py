"""The Matcher protocol: accepts/advance/rollback/fork/fill_mask/forced_tokens/is_accepting/is_done."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from helpers import byte_level_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

import ctrldec
from ctrldec import InvalidTokenError
from ctrldec.constraints import tokenizer_info
from ctrldec.engine.compiled import CompiledGrammar

JSON = ctrldec.Grammar.builtin("json")


@pytest.fixture(scope="module")
def info():
    return tokenizer_info(byte_level_tokenizer())


def encode(info, text):
    return info.encode(text)


def test_advance_then_rollback_restores_the_state(info):
    m = JSON.matcher(info)
    before = m.mask().copy()
    ids = encode(info, '{"name": [1, 2')
    for t in ids:
        m.advance(t)
    m.rollback(len(ids))
    assert np.array_equal(m.mask(), before) and m.num_tokens == 0


def test_fork_is_independent(info):
    m = JSON.matcher(info)
    for t in encode(info, '{"a": '):
        m.advance(t)
    other = m.fork()
    for t in encode(info, "true}"):
        other.advance(t)
    assert other.is_accepting() and not m.is_accepting()
    assert m.accepts(encode(info, "1")[0])


def test_invalid_token_raises_and_names_it(info):
    m = JSON.matcher(info)
    bad = encode(info, "}")[0]
    with pytest.raises(InvalidTokenError, match=r"'\}'|b'\}'"):
        m.advance(bad)


def test_eos_allowed_exactly_when_complete(info):
    eos = info.eos_token_ids[0]
    m = ctrldec.Grammar.builtin("json_compact").matcher(info)  # no trailing whitespace: done at "]"
    for t in encode(info, "[1"):
        m.advance(t)
    assert not m.accepts(eos)
    m.advance(encode(info, "]")[0])
    assert m.accepts(eos) and m.is_accepting() and m.is_done()
    m.advance(eos)
    assert m.ended and m.is_done() and not m.accepts(eos)


def test_number_may_end_or_continue(info):
    m = JSON.matcher(info)
    m.advance(encode(info, "1")[0])
    assert m.is_accepting() and not m.is_done()  # "1" is complete, "12" too


def test_fill_mask_pads_and_trims(info):
    m = JSON.matcher(info)
    wide = np.full(m.grammar.words + 3, 0xFFFFFFFF, dtype=np.uint32)
    assert m.fill_mask(wide)
    assert (wide[-3:] == 0).all() and np.array_equal(wide[: m.grammar.words], m.mask())
    narrow = torch.zeros(m.grammar.words - 1, dtype=torch.int32)
    m.fill_mask(narrow)
    assert np.array_equal(narrow.numpy().view(np.uint32), m.mask()[:-1])


def test_forced_tokens_are_canonical_and_valid(info):
    g = ctrldec.Grammar('start: "{\\"name\\": \\"" NAME "\\"}"\nNAME: /[a-z]+/')
    m = g.matcher(info)
    forced_bytes = m.forced_bytes()
    assert forced_bytes == b'{"name": "'
    forced = m.forced_tokens()
    assert forced, "the opening bytes are fixed by the grammar"
    text = info.decode_bytes(forced)
    assert forced_bytes.startswith(text)
    assert forced == info.encode(forced_bytes.decode())[: len(forced)]  # canonical, not byte by byte
    for t in forced:
        m.advance(t)


def test_forced_tokens_keep_the_last_token_when_the_output_is_complete(info):
    m = ctrldec.Regex("hello world").matcher(info)
    forced = m.forced_tokens()
    assert forced == info.encode("hello world")
    for t in forced:
        m.advance(t)
    assert m.is_done()


def test_forced_tokens_retokenize_with_the_committed_tail(info):
    m = ctrldec.Regex("the quick brown fox").matcher(info)
    first = info.encode("the")
    for t in first:
        m.advance(t)
    forced = m.forced_tokens()
    whole = info.encode("the quick brown fox")
    assert whole[: len(first)] == first
    assert forced == whole[len(first) :]


def test_forced_bytes_stop_at_a_choice(info):
    g = ctrldec.Grammar('start: "ab" ("c" | "d")')
    m = g.matcher(info)
    assert m.forced_bytes() == b"ab"


def test_is_done_when_only_eos_remains(info):
    m = ctrldec.Regex("ok").matcher(info)
    for t in encode(info, "ok"):
        m.advance(t)
    assert m.is_done() and m.allowed_token_ids().tolist() == list(info.eos_token_ids)


def test_json_prefixes_accepts_agrees_with_mask_on_whole_vocabulary(default_info, shared_data):
    """Random prefixes of real JSON instances: for every token, accepts (scalar) == mask bit (vector)."""
    rng = random.Random(0)
    docs = []
    for name in ("Github_medium.jsonl", "Kubernetes.jsonl", "Glaiveai2K.jsonl"):
        with open(shared_data / "jsonschemabench" / name, encoding="utf-8") as f:
            for line in f:
                docs += [json.dumps(t["data"], ensure_ascii=False) for t in json.loads(line)["tests"] if t["valid"]]
    masks = JSON.compile(default_info)
    fresh = CompiledGrammar(JSON.tables(), default_info)  # no mask ever computed: accepts runs bytes
    vocab = range(default_info.vocab_size)
    for doc in rng.sample(docs, 12):
        ids = default_info.encode(doc)
        cut = rng.randrange(len(ids) + 1)
        a, b = masks.matcher(), fresh.matcher()
        for t in ids[:cut]:
            a.advance(t)
            b.advance(t)
        allowed = set(a.allowed_token_ids().tolist())
        accepted = {t for t in vocab if b.accepts(t)}
        assert allowed == accepted, doc[:80]
        assert ids[cut] in allowed if cut < len(ids) else default_info.eos_token_ids[0] in allowed


@settings(max_examples=40, deadline=None)
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
), indent=st.sampled_from([None, 2]))
def test_every_json_document_is_accepted_token_by_token(info, value, indent):
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    m = JSON.matcher(info)
    for t in info.encode(text):
        m.advance(t)
    assert m.is_accepting()
    compact = ctrldec.Grammar.builtin("json_compact")
    assert compact.matches(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def test_viable_prefix_skips_only_the_given_bytes(info):
    m = ctrldec.Regex("[a-z]+,[0-9]+").compile(info).matcher()
    assert m.viable_prefix(b"ab c,12x", skip=b" ") == b"abc,12"
    assert m.viable_prefix(b"ab c,12x") == b"ab"
    assert m.num_tokens == 0 and m.viable_prefix(b"") == b""


def test_encode_after_continues_the_canonical_tokenization(info):
    previous = info.encode("The quick")
    assert info.encode_after(previous, b" brown fox") == info.encode("The quick brown fox")[len(previous):]
    assert info.encode_after(info.encode("T"), b"he quick") is None  # "The" re-merges the committed "T"
    assert info.encode_after([], b"abc") == info.encode("abc")
    assert info.encode_after(previous, "é".encode()[:1]) == []  # a cut character is left out


def _count_by_advancing(m, ids) -> int:
    """The reference for ``validate_tokens``: accepts/advance one token at a time on a fork."""
    other = m.fork()
    for i, t in enumerate(ids):
        if not other.accepts(t):
            return i
        other.advance(t)
    return len(ids)


@pytest.mark.parametrize("constraint", [JSON, ctrldec.JSONSchema({"maxProperties": 2}, extra_properties="allow")], ids=["lalr", "glr"])
@settings(max_examples=40, deadline=None)
@given(
    value=st.recursive(st.none() | st.booleans() | st.integers(-999, 999) | st.text(max_size=6),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                       max_leaves=6),
    start=st.integers(0, 40),
    noise=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 700)), max_size=3),
    eos=st.booleans(),
)
def test_validate_tokens_counts_like_advancing_a_fork(info, constraint, value, start, noise, eos):
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    ids = info.encode(text) + ([info.eos_token_ids[0]] * 2 if eos else [])
    for at, t in noise:  # a wrong token somewhere (ids past the vocabulary included)
        ids.insert(min(at, len(ids)), t)
    m = constraint.compile(info).matcher()
    for t in ids[: min(start, _count_by_advancing(m, ids))]:
        m.advance(t)
    draft = ids[m.num_tokens :]
    before = (m.num_tokens, m.is_accepting(), m.mask().tobytes())
    assert m.validate_tokens(draft) == _count_by_advancing(m, draft)
    assert (m.num_tokens, m.is_accepting(), m.mask().tobytes()) == before  # no state change


def test_validate_tokens_takes_eos_only_where_the_output_may_end(info):
    eos = info.eos_token_ids[0]
    m = ctrldec.Regex("[0-9]+").matcher(info)
    one, two = encode(info, "1")[0], encode(info, "2")[0]
    assert m.validate_tokens([eos]) == 0 and m.validate_tokens([one, eos, two]) == 2
    assert m.validate_tokens([one, two, one]) == 3 and m.validate_tokens([]) == 0
    m.advance(one)
    m.advance(eos)
    assert m.validate_tokens([one]) == 0
