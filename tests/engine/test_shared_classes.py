"""Token classifications split at the first byte, and shared between grammars, are exact.

A lexer state's classification may be assembled from the classification of its common first-byte
successor (``CompiledGrammar._classify_state``) or taken from another grammar compiled for the
same tokenizer whose lexer state has the same automata, with its terminals renumbered
(``_SharedGroups``). Either way every mask must equal the one a plain walk of the vocabulary from
that state gives (``_classify_root``), which the exactness tests check against an oracle.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import ctrldec
from ctrldec import JSONSchema
from ctrldec.constraints import tokenizer_info
from ctrldec.engine import compiled as engine
from ctrldec.engine import bytedfa, lexer
from ctrldec.engine.bytedfa import ByteDFA
from ctrldec.vocab import TokenizerInfo

# Schemas whose property names share prefixes (several names alive in one lexer state), with extra
# properties allowed (a name string that tracks which names it could still be), patterns and
# enums: the states where the first-byte split applies. Each with an instance to replay.
CASES = [
    ({"type": "object", "properties": {"name": {"type": "string"}, "names": {"type": "array", "items": {"type": "string"}},
                                       "nickname": {"type": "string", "pattern": "^[a-z]+$"}}},
     {"name": "Zoë — the tester", "names": ["a", "bé"], "nickname": "zed", "other": {"x": 1}}),
    ({"type": "object", "properties": {"id": {"type": "integer"}, "identity": {"enum": ["alpha", "beta"]},
                                       "ident": {"type": "string", "maxLength": 12}}, "required": ["id"]},
     {"id": 12, "identity": "beta", "ident": "short one", "idle": True}),
    ({"type": "object", "properties": {"color": {"type": "string", "format": "date"}, "colour": {"type": "boolean"}},
      "additionalProperties": {"type": "number"}},
     {"color": "2024-02-29", "colour": False, "col": 1.5, "c": -3}),
]


def fresh_info(tokenizer):
    """The tokenizer's tables with a shared-classification cache of its own."""
    info = tokenizer_info(tokenizer).with_eos(tokenizer_info(tokenizer).eos_token_ids)
    info._classes = None
    return info


def plain_collect(grammar, run, group, node: int, out: np.ndarray) -> None:
    """``_Run.collect`` with every classification of the tokens that end a lexeme made afresh by
    ``_classify`` (nothing cached, nothing shared)."""
    if group.always is not None:
        np.bitwise_or(out, group.always, out=out)
    acceptable = run.acceptable(node)
    for bits, words in group.stays:
        if bits & acceptable:
            np.bitwise_or(out, words, out=out)
    for t, idx, pos in group.emits:
        for nxt in run.after(node, t):
            child = grammar._classify(idx, pos, grammar.lexer.start[run.stacks.state[nxt]])
            plain_collect(grammar, run, child, nxt, out)


def reference_mask(matcher) -> np.ndarray:
    """The mask of a single-configuration matcher from a plain, unshared vocabulary walk."""
    grammar, run = matcher.grammar, matcher._run
    ((node, lex),) = matcher._configs
    key = grammar.lexer.canonical(lex, grammar._max_token_len) if grammar.lexer.lazy else lex
    grammar.lexer.build_many(np.array([key]))
    out = np.zeros(grammar.words, dtype=np.uint32)
    plain_collect(grammar, run, grammar._classify_root(key), node, out)
    if run.is_accepting(node, lex):
        np.bitwise_or(out, grammar._eos_words, out=out)
    return out


def _tokens(words: np.ndarray) -> set:
    return set(np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little")).tolist())


def normal_form(group) -> tuple[dict, set]:
    """A classification as {completable bits: tokens} and {(terminal, token, offset)}: the same
    for two groups exactly when they classify every token alike, however their lists are cut. A
    split state's form is its own walk's plus its interior's groups' tokens in each part's pick."""
    if isinstance(group, engine._Split):
        stays, emits = normal_form(group.rest)
        for shared, words in group.parts:
            picked = _tokens(words)
            their_stays, their_emits = normal_form(shared)
            for bits, tokens in their_stays.items():
                stays.setdefault(bits, set()).update(tokens & picked)
            emits |= {e for e in their_emits if e[1] in picked}
        return {b: v for b, v in stays.items() if v}, emits
    stays: dict[int, set] = {}
    for bits, words in group.stays:
        stays.setdefault(bits, set()).update(_tokens(words))
    emits = {(t, i, p) for t, idx, pos in group.emits for i, p in zip(idx.tolist(), pos.tolist())}
    assert group.always is None
    return {b: v for b, v in stays.items() if v}, emits


def check_classification(matcher) -> None:
    """The classification the engine used for the matcher's lexer state (split, shared or both)
    equals a plain walk's, token by token, and so does the mask."""
    grammar = matcher.grammar
    ((_, lex),) = matcher._configs
    key = grammar.lexer.canonical(lex, grammar._max_token_len) if grammar.lexer.lazy else lex
    matcher.mask()
    assert normal_form(grammar._groups[key]) == normal_form(grammar._classify_root(key))
    np.testing.assert_array_equal(matcher.mask(), reference_mask(matcher))


def replay(compiled, info, text: str) -> int:
    """Compare every classification and mask along ``text`` with the reference; the number compared."""
    ids = info.encode(text)
    m = compiled.matcher()
    for i in ids:
        check_classification(m)
        assert m.accepts(i), f"{text!r} rejected at token {i}"
        m.advance(i)
    check_classification(m)
    assert m.is_accepting()
    return len(ids) + 1


@pytest.mark.parametrize("order", ["schema", "any"])
def test_split_and_shared_classifications_equal_a_plain_walk(default_tokenizer, monkeypatch, order):
    info = fresh_info(default_tokenizer)
    splits = []
    split_parts = engine.CompiledGrammar._split_parts

    def spy(self, *args):
        splits.append(1)
        return split_parts(self, *args)

    monkeypatch.setattr(engine.CompiledGrammar, "_split_parts", spy)
    whole = []  # the common successor's own classification, taken for bytes that go alike from it
    root_group = engine.CompiledGrammar._root_group

    def root_spy(self, key, split=True):
        whole.append(not split)
        return root_group(self, key, split)

    monkeypatch.setattr(engine.CompiledGrammar, "_root_group", root_spy)
    picked = []  # tokens that a number's end leaves, picked from the next state's own classification
    child = engine.CompiledGrammar._child

    def child_spy(self, idx, pos, start):
        group = child(self, idx, pos, start)
        picked.append(isinstance(group, engine._Split))
        return group

    monkeypatch.setattr(engine.CompiledGrammar, "_child", child_spy)
    compared = 0
    for schema, instance in CASES + CASES:  # the second round takes classifications from the first
        compiled = JSONSchema(schema, property_order=order, extra_properties="allow").compile(info)
        compared += replay(compiled, info, json.dumps(instance, ensure_ascii=False, separators=(",", ":")))
    assert splits, "no lexer state took the first-byte split: the test no longer covers it"
    assert any(whole), "no split took its successor's own classification: the test no longer covers it"
    assert any(picked), "no child classification was picked from a root one: the test no longer covers it"
    assert info._classes is not None and len(info._classes.entries) > 0
    assert compared > 100


def test_a_shared_classification_is_renumbered_for_each_grammar(default_tokenizer, monkeypatch):
    """The same string automaton sits at different terminal numbers in two grammars: each
    grammar's masks stay exact, and the second takes the first's classification."""
    info = fresh_info(default_tokenizer)
    first = JSONSchema({"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"],
                        "additionalProperties": False}).compile(info)
    replay(first, info, '{"b":"hello there"}')
    entries = len(info._classes.entries)
    hits = []
    get = info._classes.get

    def counting_get(key):
        found = get(key)
        hits.append(found is not None)
        return found

    monkeypatch.setattr(info._classes, "get", counting_get)
    second = JSONSchema({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"},
                                                          "c": {"type": "string"}},
                         "required": ["a", "b", "c"], "additionalProperties": False}).compile(info)
    replay(second, info, '{"a":1,"b":true,"c":"hello there"}')
    assert any(hits), "the string interior was not taken from the first grammar"
    assert len(info._classes.entries) >= entries


def test_the_shared_cache_stays_under_its_limit():
    group = engine._Group()
    group.stays = ((1, np.zeros(100, dtype=np.uint32)),)
    size = group.nbytes()
    shared = engine._SharedGroups(limit=3 * size)
    for k in range(10):
        shared.put(("k", k), group, ())
        assert shared.bytes <= shared.limit
    assert list(shared.entries) == [("k", 7), ("k", 8), ("k", 9)]  # least recently used went first
    assert shared.get(("k", 7)) is group and shared.get(("k", 0)) is None
    shared.put(("k", 10), group, ())
    assert ("k", 8) not in shared.entries and ("k", 7) in shared.entries


def test_renumbering_refuses_a_terminal_it_cannot_place():
    group = engine._Group()
    group.stays = ((0b101, np.zeros(1, dtype=np.uint32)),)
    group.emits = ((3, np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)),)
    assert engine._renumbered(group, {0: 5, 2: 6}, {3: 0}).stays[0][0] == (1 << 5) | (1 << 6)
    assert engine._renumbered(group, {0: 5}, {3: 0}) is None  # bit 2 has no number
    assert engine._renumbered(group, {0: 5, 2: 6}, {}) is None  # terminal 3 has none


def random_dfa(draw, n: int) -> ByteDFA:
    """A random n-state automaton over a few bytes (most bytes dead, as in real terminals)."""
    trans = np.full((n, 256), -1, dtype=np.int32)
    for state in range(n):
        for b in draw(st.lists(st.sampled_from(b"ab\"\\\x00\xc3"), max_size=6)):
            trans[state, b] = draw(st.integers(-1, n - 1))
    return ByteDFA(trans, np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))))


def reachable_language(dfa: ByteDFA, state: int, depth: int = 6) -> set:
    """The words of up to ``depth`` bytes from ``state`` with their acceptance, as a set."""
    out, frontier = set(), [(state, b"")]
    for _ in range(depth):
        nxt = []
        for s, word in frontier:
            out.add((word, bool(dfa.accepting[s])))
            nxt += [(int(t), word + bytes([b])) for b, t in enumerate(dfa.trans[s]) if t >= 0]
        frontier = nxt
    return out


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_automaton_keys_name_the_reachable_part_by_content(data):
    """Two automata (built separately, in either size class) give a state the same key when its
    reachable parts are the same up to numbering, and different keys when they accept differently;
    ``_successor_lists`` lists each row's targets as ``dict.fromkeys`` would."""
    n = data.draw(st.integers(1, 6))
    dfa = random_dfa(data.draw, n)
    rows = lexer._successor_lists(dfa.trans)
    assert rows == [[x for x in dict.fromkeys(dfa.trans[s].tolist()) if x >= 0] for s in range(n)]
    # the same automaton with its states renumbered, and padded with unreachable states
    pad = data.draw(st.sampled_from([0, 200]))  # 200: past the content cache and the dense lists
    perm = np.array(data.draw(st.permutations(range(n))))
    trans = np.full((n + pad, 256), -1, dtype=np.int32)
    trans[perm] = np.where(dfa.trans >= 0, perm[np.maximum(dfa.trans, 0)], -1)
    accepting = np.zeros(n + pad, dtype=bool)
    accepting[perm] = dfa.accepting
    other = ByteDFA(trans, accepting)
    for s in range(n):
        assert lexer._reachable_key(dfa, s) == lexer._reachable_key(other, int(perm[s]))
    flipped = ByteDFA(dfa.trans.copy(), ~dfa.accepting)  # the same table, every state's acceptance turned
    assert all(lexer._reachable_key(dfa, s) != lexer._reachable_key(flipped, s) for s in range(n))
    a, b = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, n - 1))
    if reachable_language(dfa, a) != reachable_language(dfa, b):
        assert lexer._reachable_key(dfa, a) != lexer._reachable_key(dfa, b)



def _rooted(dfa: ByteDFA, state: int) -> ByteDFA:
    """``dfa`` started at ``state`` (states 0 and ``state`` swapped)."""
    perm = np.arange(dfa.n_states)
    perm[[0, state]] = perm[[state, 0]]
    trans = np.where(dfa.trans >= 0, perm[np.maximum(dfa.trans, 0)], -1)[perm]
    return ByteDFA(trans.astype(np.int32), dfa.accepting[perm].copy())


def _same_language(a: ByteDFA, b: ByteDFA) -> bool:
    return bytedfa.product(a, b, "diff").empty and bytedfa.product(b, a, "diff").empty


def _run_from(dfa: ByteDFA, state: int, data: bytes) -> bool:
    for b in data:
        state = int(dfa.trans[state, b])
        if state < 0:
            return False
    return bool(dfa.accepting[state])


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(st.text(alphabet="abé\"", min_size=0, max_size=4), max_size=6),
    others=st.lists(st.text(alphabet="xyé", min_size=1, max_size=3), max_size=3),
    words=st.lists(st.text(alphabet="abxé\"", max_size=6), max_size=10),
)
def test_other_keys_automata_are_keyed_by_their_base_and_suffixes(names, others, words):
    """A state of ``minus_strings``'s result (an object's other keys) is keyed by its base's key
    and the suffixes taken away there (``MinusParts``): its language is the base's from that
    state less those suffixes, and another grammar's automaton whose state has the same
    residual gets the same key, one whose residual language differs a different key."""
    string = bytedfa.compile_regex(r'"([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"')
    values = [json.dumps(n, ensure_ascii=False).encode() for n in names]
    more = values + [json.dumps(o, ensure_ascii=False).encode() for o in others]  # names that mostly share no prefix with ``values``
    one, two = bytedfa.minus_strings(string, values), bytedfa.minus_strings(string, more)
    if one is string:  # no names: nothing taken away
        return
    keyed: dict[tuple, list] = {}
    for dfa in (one, two):
        parts = dfa._minus
        for s in range(dfa.n_states):
            q, suffixes = parts.residual(s)
            for w in [w.encode() for w in words] + list(suffixes) + [v[1:] for v in values]:
                assert _run_from(dfa, s, w) == (_run_from(string, q, w) and w not in suffixes)
            keyed.setdefault(lexer._reachable_key(dfa, s), []).append((dfa, s))
    for states in keyed.values():  # one key, one language
        first = _rooted(*states[0])
        assert all(_same_language(first, _rooted(d, s)) for d, s in states[1:])
    # the start of ``one`` and the state of ``two`` after the quote and a name's first byte match
    for prefix in {v[:2] for v in values if len(v) > 2}:
        a, b = one, two
        sa = sb = 0
        for byte in prefix:
            sa, sb = int(a.trans[sa, byte]), int(b.trans[sb, byte])
        if min(sa, sb) >= 0 and not any(o.startswith(prefix) for o in more[len(values):]):
            assert lexer._reachable_key(a, sa) == lexer._reachable_key(b, sb)


def _json_case(schema: dict, instance) -> tuple:
    return JSONSchema(schema, property_order="any", extra_properties="allow"), json.dumps(instance, ensure_ascii=False, separators=(",", ":"))


# The split cases, a string counted lazily (``LAZY_LENGTH_FROM`` is far below 300) and a pattern
# (lexers that build states while a walk meets them, which the node-by-node paths must do too),
# and a grammar whose words end inside a token at a byte no word takes (``abc,``).
FEW_CASES = [_json_case(schema, instance) for schema, instance in CASES] + [
    _json_case({"type": "object", "properties": {"d": {"type": "string", "minLength": 3, "maxLength": 300},
                                                 "p": {"type": "string", "pattern": "^[a-f0-9]{2,40}$"}}, "required": ["d"]},
               {"d": "counted, with \"quotes\" and é", "p": "00ff"}),
    (ctrldec.Grammar('start: WORD ("," WORD)* ";"\nWORD: /[a-z]+/'), "the,quick,brown,fox,and,a,dog;"),
    (ctrldec.Grammar('start: (NAME "=" NAME ("." NAME "(" ")")* ";")+\nNAME: /[a-z]+/\n%ignore " "'),
     "x = y.append().get(); id= zz.format() ; a=b;"),
]

# Byte-level BPE keeps words and punctuation apart, so a walk from a token's second lexeme seldom
# meets a word that ends at a byte no word takes ("append" in ".append("): a vocabulary of every
# byte and such tokens, to walk that way too.
_WORDY = [b".append(", b".get(", b" id=", b"id=", b" zz.", b"a=b;", b"the,", b",quick,", b"x = ", b" y.", b"().", b"();"]


def _wordy_info():
    vocab = [bytes([b]) for b in range(256)] + _WORDY
    by_len = sorted(range(len(vocab)), key=lambda i: -len(vocab[i]))

    def encode(text: str) -> list[int]:  # longest match first: any tokenization will do
        data, out = text.encode(), []
        while data:
            i = next(i for i in by_len if data.startswith(vocab[i]))
            out.append(i)
            data = data[len(vocab[i]):]
        return out

    return TokenizerInfo(vocab, eos_token_ids=[0], encode=encode)


@pytest.mark.parametrize("case", range(len(FEW_CASES)))
def test_walks_node_by_node_equal_the_vectorised_walks(default_tokenizer, monkeypatch, case):
    """``_FewNodes`` and ``_walk_few`` (small trie levels and few tokens, in Python, and their
    findings assembled in Python) classify every token as the vectorised levels do: every lexer state met along a text, walked once
    with the Python paths never taken and once with them always taken, and every mask."""
    constraint, text = FEW_CASES[case]
    info = fresh_info(default_tokenizer) if case < len(FEW_CASES) - 1 else _wordy_info()
    grammar = constraint.compile(info)
    assert case != len(CASES) or grammar.lexer.lazy, "the counted string is no longer lazy: the case no longer covers it"
    m = grammar.matcher()
    ids = info.encode(text)
    for i in [*ids, None]:
        ((_, lex),) = m._configs
        key = grammar.lexer.canonical(lex, grammar._max_token_len) if grammar.lexer.lazy else lex
        grammar.lexer.build_many(np.array([key]))
        got = []
        for few in (0, 1 << 30):
            monkeypatch.setattr(engine, "_FEW_NODES", few)
            monkeypatch.setattr(engine, "_FEW_TOKENS", few)
            monkeypatch.setattr(engine, "_FEW_ASSEMBLED", few)
            got.append((normal_form(grammar._classify_root(key)), reference_mask(m)))
        assert got[0][0] == got[1][0]
        np.testing.assert_array_equal(got[0][1], got[1][1])
        if i is not None:
            assert m.accepts(i)
            m.advance(i)
    assert m.is_accepting()


@settings(max_examples=12, deadline=None)
@given(lo=st.integers(0, 40), extra=st.one_of(st.none(), st.integers(0, 40)), wordy=st.booleans())
@example(lo=0, extra=40, wordy=False)
@example(lo=35, extra=None, wordy=False)
@example(lo=33, extra=0, wordy=True)
@example(lo=3, extra=34, wordy=True)
def test_counted_strings_read_from_the_string_scan_equal_a_walk(default_tokenizer, lo, extra, wordy):
    """Inside a counted string at a character boundary, the tokens with a quote, an escape or a
    multi-byte character are classified from the tokenizer's string scan
    (``CompiledGrammar._counted_unsafe``): equal, count by count, to walking them, on a
    byte-level BPE vocabulary and on one of single bytes (which ends tokens inside characters),
    for lengths counted as the text goes and for short ones tabulated."""
    hi = None if extra is None else lo + extra
    schema = {"type": "string", "minLength": lo, **({} if hi is None else {"maxLength": hi})}
    info = _wordy_info() if wordy else fresh_info(default_tokenizer)
    grammar = JSONSchema(schema).compile(info)
    lexer_ = grammar.lexer
    m = grammar.matcher()
    assert m.accepts(info.encode('"')[0])
    m.advance(info.encode('"')[0])
    compared = 0
    for k in range((hi if hi is not None else lo + 3) + 1):
        ((_, lex),) = m._configs
        key = lexer_.canonical(lex, grammar._max_token_len) if lexer_.lazy else lex
        lexer_.build_many(np.array([key]))
        if grammar._counted_position(key) is not None:
            assert normal_form(grammar._classify_shifting(key)) == normal_form(grammar._classify_shifting(key, closed_form=False))
            compared += 1
        x = info.encode("x")[0]
        if not m.accepts(x):
            break
        m.advance(x)
    if lo > 0 or hi is not None:  # counted (past ``LAZY_LENGTH_FROM``) or tabulated (``string_dfa``'s ``_length``)
        assert compared, "no counted state met: the test no longer covers the string scan"


@pytest.mark.parametrize("bound, kind", [(64, "content"), (20, "length")])
def test_counted_strings_of_equal_bounds_share_their_classifications(default_tokenizer, bound, kind):
    """A counted string numbers its states by formula, and a short one is tabulated in a layout
    fixed by its bounds (``string_dfa``), so two grammars' strings of the same bounds have the
    same automaton keys (and share classifications) though they are distinct objects."""
    info = fresh_info(default_tokenizer)
    keys = []
    for schema in ({"type": "object", "properties": {"a": {"type": "string", "maxLength": bound}}},
                   {"type": "array", "items": {"type": "string", "maxLength": bound}}):
        grammar = JSONSchema(schema, extra_properties="forbid").compile(info)
        lexer_ = grammar.lexer
        counted = [t for t, term in enumerate(lexer_.terminals) if lexer_._lazy_terms[t] or "_length" in term.dfa.__dict__]
        assert len(counted) == 1
        keys.append(lexer_._automaton_key(counted[0], 7))
    assert keys[0] == keys[1] and keys[0][0] == kind


# Strings and words whose automata loop on a set of ASCII bytes, or count one (runs), without every
# JSON-safe character agreeing (no ``shift``): the states where a subtree is settled by a subset test.
LOOP_CASES = [
    (JSONSchema({"type": "string", "pattern": "^[a-zA-Z][a-zA-Z0-9_]*[a-zA-Z0-9]$"}), '"customer_name_2"'),
    (JSONSchema({"type": "object", "patternProperties": {"^[a-z][a-z0-9]*$": {"type": "string", "pattern": "^[0-9a-f]+$"}},
                 "additionalProperties": False}), '{"alpha":"00ff","beta9":"deadbeef"}'),
    (ctrldec.Grammar('start: WORD (" " WORD)* "."\nWORD: /[a-zA-Z0-9-]+/'), "Tokens like co-op and 2nd stay word-like."),
    # runs that count: each position of an identifier's groups, a word of bounded length
    (JSONSchema({"type": "string", "pattern": "^[0-9a-zA-Z]{8}-[0-9a-zA-Z]{4}-[0-9a-zA-Z]{12}$"}), '"3f2504e0-4f89-0305e82c3301"'),
    (JSONSchema({"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Za-z0-9_]{3,10}$"},
                                                  "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}}),
     '{"code":"alpha_2","zip":"90210"}'),
]


@pytest.mark.parametrize("case", range(len(LOOP_CASES)))
def test_loop_subtrees_settled_by_a_subset_test_equal_a_walk(default_tokenizer, monkeypatch, case):
    """A subtree entering a lexer state that begins a run of ASCII bytes keeps the tokens whose
    later bytes are all in the run's sets where it leads (``CompiledGrammar._looped``, in Python by
    ``_FewNodes.assembled``) and walks the others: every lexer state met along a text classifies
    every token as with no loop test, and the test is taken on both paths."""
    constraint, text = LOOP_CASES[case]
    info = fresh_info(default_tokenizer)
    grammar = constraint.compile(info)
    taken = []
    looped = engine.CompiledGrammar._looped
    monkeypatch.setattr(engine.CompiledGrammar, "_looped", lambda self, *a: taken.append("vectorised") or looped(self, *a))
    m = grammar.matcher()
    for i in [*info.encode(text), None]:
        ((_, lex),) = m._configs
        key = grammar.lexer.canonical(lex, grammar._max_token_len) if grammar.lexer.lazy else lex
        grammar.lexer.build_many(np.array([key]))
        forms = []
        for tokens, depth, few in ((1, 1 << 30, 0), (1, 1 << 30, 1 << 30), (1 << 30, 0, 0)):
            monkeypatch.setattr(engine, "_LOOP_TOKENS", tokens)
            monkeypatch.setattr(engine, "_LOOP_DEPTH", depth)
            for name in ("_FEW_NODES", "_FEW_TOKENS", "_FEW_ASSEMBLED"):
                monkeypatch.setattr(engine, name, few)
            forms.append(normal_form(grammar._classify_root(key)))
        assert forms[0] == forms[2] and forms[1] == forms[2]
        if i is not None:
            assert m.accepts(i)
            m.advance(i)
    assert m.is_accepting()
    assert "vectorised" in taken, "no subtree was settled by its loop: the case no longer covers it"


def test_runs_are_the_ascii_bytes_that_lead_on_together():
    """``LexerAutomaton.run_chain`` follows, from a state, the one state that at least
    ``_LOOP_BYTES`` ASCII bytes lead back to (``_RUN_BYTES`` on to another), step by step: any
    ``k`` bytes each in the ``k``-th sets
    walk to ``states[k]`` without ending the lexeme, the first step's set is every byte that
    leads there, and the run ends where fewer bytes agree. ``TokenizerInfo.tail_sets`` holds
    each token's bytes after its first in the same layout."""
    grammar = ctrldec.Grammar('start: WORD\nWORD: /[a-c_]x*[a-z0-9]*/ | /#[0-9a-zA-Z]{3}-[0-9]{2}/').compile(
        TokenizerInfo([b"a", b"ab9", b"b\xc3\xa9", b"_x", b"#"]))
    lexer_ = grammar.lexer
    rng = random.Random(0)
    lengths = []
    for state in range(lexer_.n_states):
        lexer_.build(state)
        ends, low, high = lexer_.run_chain(state, 6)
        bits = lambda k: [b for b in range(128) if (int(low[k]) if b < 64 else int(high[k])) >> (b % 64) & 1]  # noqa: E731
        row = lexer_.trans_list[state][:128]
        live = [y for y in set(row) if y >= 0]
        top = max(live, key=row.count, default=-1)
        if top < 0 or row.count(top) < (lexer._LOOP_BYTES if top == state else lexer._RUN_BYTES) or lexer_.eager[top]:
            assert ends[1] == -1 and not lexer_.runs(state)
            continue
        assert lexer_.runs(state) and ends[1] == top and bits(1) == [b for b in range(128) if row[b] == top]
        steps = int((ends >= 0).sum()) - 1
        lengths.append(steps)
        for k in range(1, steps + 1):
            for _ in range(20):  # random texts of k bytes from the k-th sets end in ends[k]
                x = state
                for _ in range(k):
                    x = lexer_.trans_list[x][rng.choice(bits(k))]
                    lexer_.build(x)
                    assert x >= 0 and not lexer_.eager[x]
                assert x == ends[k]
        assert all(not bits(k) for k in range(steps + 1, 7))
    assert 6 in lengths and 3 in lengths  # the loop of [a-z0-9]* and the three letters or digits (two digits alone are too few)
    info = grammar.info
    low, high, other = info.tail_sets()
    for row, token in enumerate(info.trie().order.tolist()):
        tail = info.token_bytes[token][1:]
        assert other[row] == any(b >= 128 for b in tail)
        assert {b for b in range(128) if (int(low[row]) if b < 64 else int(high[row])) >> (b % 64) & 1} == {b for b in tail if b < 128}


_RUN_PIECES = st.sampled_from(["[a-h]", "[a-h0-3]", "[0-3]", "[a-h_-]", "-", "x"])


@settings(max_examples=60, deadline=None)
@given(pieces=st.lists(st.tuples(_RUN_PIECES, st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=4),
       extra=st.lists(st.text("abcdh013_-x", min_size=2, max_size=9), max_size=60), star=st.booleans())
def test_run_subtrees_settled_by_a_subset_test_equal_a_walk(pieces, extra, star):
    """Tokens settled by their state's run (``run_chain``: loops, counted character classes and
    their ends) classify as a walk of every token does, from every lexer state of random
    patterns of counted character classes, with tokens that stay inside a run, leave it, or
    outlast it (thresholds lowered so that these small classes make runs)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lexer, "_LOOP_BYTES", 3)
        patch.setattr(lexer, "_RUN_BYTES", 3)
        pattern = "x" + "".join(f"{c}{{{lo},{lo + more}}}" for c, lo, more in pieces) + ("[a-h]*" if star else "")
        vocab = [bytes([b]) for b in range(32, 127)] + sorted({t.encode() for t in extra} - {bytes([b]) for b in range(256)})
        grammar = ctrldec.Grammar(f'start: "<" WORD ">"\nWORD: /{pattern}/').compile(TokenizerInfo(vocab, eos_token_ids=[0]))
        lexer_ = grammar.lexer
        for state in range(lexer_.n_states):
            lexer_.build(state)
            forms = []
            for tokens in (1, 1 << 30):  # every subtree tested against its state's run, or none
                patch.setattr(engine, "_LOOP_TOKENS", tokens)
                forms.append(normal_form(grammar._classify_root(state)))
            assert forms[0] == forms[1], (pattern, state)


@settings(max_examples=40, deadline=None)
@given(words=st.lists(st.text("abc", min_size=1, max_size=5), min_size=1, max_size=6, unique=True),
       extra=st.lists(st.binary(min_size=1, max_size=6).map(lambda b: bytes(97 + x % 4 for x in b)), max_size=40))
def test_states_of_literals_alone_walk_only_the_tokens_along_them(words, extra):
    """A state where only literals are alive and none is complete walks only the tokens that are
    a prefix of one or begin with one (``CompiledGrammar._classify_literals``, and ``_classify``
    of the tokens that enter it at their first byte): equal to a walk of the whole vocabulary, for keywords that are prefixes of each other and tokens that run
    on past them into the next word (every byte, and random runs of the words' letters)."""
    alternatives = " | ".join(json.dumps(w) for w in words)
    grammar = ctrldec.Grammar(f"start: item+\nitem: {alternatives}").compile(
        TokenizerInfo([bytes([b]) for b in range(256)] + sorted(set(extra) - {bytes([b]) for b in range(256)}), eos_token_ids=[0]))
    assert check_listed_states(grammar)[0]


def check_listed_states(grammar) -> tuple[int, int]:
    """Every non-accepting lexer state whose members' strings are listed (``literal_rests``)
    classifies along them as a walk of the whole vocabulary does; (states compared, those with
    an automaton's strings listed)."""
    lexer_ = grammar.lexer
    compared = listed = 0
    for state in range(lexer_.n_states):
        lexer_.build(state)
        rests = lexer_.literal_rests(state)
        if rests is None or lexer_.accept[state] >= 0:
            continue
        plain = normal_form(grammar._classify_root(state))
        assert normal_form(grammar._classify_literals(state, rests)) == plain
        # the tokens after a lexeme that ended at their first byte, classified from here (a
        # child classification): only those along the literals are walked, the same result
        every = np.arange(grammar.vocab_size, dtype=np.int64)
        assert normal_form(grammar._classify(every, np.zeros(len(every), np.int64), state)) == plain
        compared += 1
        listed += any(lexer_._literals[t] is None for t, _ in lexer_.members(state))
    return compared, listed


def test_a_closed_objects_keys_are_classified_along_the_names(default_tokenizer):
    """The keys of an object with no other properties: every state inside a name classifies as
    a walk of the vocabulary does, and the masks along an instance equal the reference."""
    schema = {"type": "object", "properties": {k: {"type": "integer"} for k in ("name", "names", "nickname", "id", "identity")},
              "additionalProperties": False}
    info = fresh_info(default_tokenizer)
    compiled = JSONSchema(schema, property_order="any").compile(info)
    lexer_ = compiled.lexer
    literal_states = [s for s in range(lexer_.n_states) if lexer_.literal_rests(s) is not None and lexer_.accept[s] < 0]
    assert len(literal_states) > 10
    for state in literal_states:
        assert normal_form(compiled._classify_literals(state, lexer_.literal_rests(state))) == normal_form(compiled._classify_root(state))
    assert replay(compiled, info, '{"nickname":1,"identity":2,"names":3}') > 5


def test_a_lexeme_at_its_last_count_still_ends_before_a_character():
    """``/.{1,4}/`` at its fourth character rejects every character, multi-byte ones at their
    first byte, yet accepts: a token that fills it and goes on (``bcd;`` after ``a``) ends the
    lexeme there and continues in the next, so its counts must not read as dead."""
    vocab = [bytes([b]) for b in range(256)] + [b"bcd;", b"bcde", "bé;".encode()]
    grammar = ctrldec.Grammar('start: A ";"\nA: /.{1,4}/').compile(TokenizerInfo(vocab, eos_token_ids=[0]))
    m = grammar.matcher()
    m.advance(ord("a"))
    allowed = set(m.allowed_token_ids().tolist())
    assert {256, 258} <= allowed and 257 not in allowed
    np.testing.assert_array_equal(m.mask(), reference_mask(m))


@settings(max_examples=40, deadline=None)
@given(words=st.lists(st.text("abc", min_size=1, max_size=5), min_size=1, max_size=6, unique=True),
       extra=st.lists(st.binary(min_size=1, max_size=6).map(lambda b: bytes(97 + x % 4 for x in b)), max_size=40),
       looped=st.booleans())
def test_states_of_a_finite_automaton_walk_only_the_tokens_along_its_strings(words, extra, looped):
    """An enum-like terminal (one automaton for several words, some prefixes of others): its
    states list their strings left (``finite_rests``) and classify as ``_classify_literals``
    does, equal to a walk of the whole vocabulary (with a loop beside the words, the states
    where it is alive list nothing)."""
    pattern = "|".join(words) + ("|c(ab)*" if looped else "")
    grammar = ctrldec.Grammar(f'start: item+\nitem: WORD ";"\nWORD: /({pattern})/').compile(
        TokenizerInfo([bytes([b]) for b in range(256)] + sorted(set(extra) - {bytes([b]) for b in range(256)}), eos_token_ids=[0]))
    _, listed = check_listed_states(grammar)
    assert listed or looped  # without a loop, the state after the start lists the words


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.binary(max_size=5).map(lambda b: bytes(97 + x % 3 for x in b)), min_size=1, max_size=12),
       loop=st.sampled_from(["", "b*", "(ab)+c"]), limit=st.integers(1, 12))
def test_finite_rests_list_exactly_the_strings_left(words, loop, limit):
    """``finite_rests`` from each state of an automaton: the strings that lead to acceptance,
    when there are at most ``limit`` of them; None when there are more, or infinitely many."""
    dfa = bytedfa.strings(words)
    if loop:
        dfa = bytedfa.product(dfa, bytedfa.compile_regex(loop), "or")
    for state in range(dfa.n_states):
        got = bytedfa.finite_rests(dfa, state, limit)
        # every string of up to 12 bytes from ``state`` (the words have at most 5; loops go longer)
        found, frontier = set(), [(state, b"")]
        while frontier:
            x, text = frontier.pop()
            if dfa.accepting[x]:
                found.add(text)
            if len(text) < 12:
                frontier += [(int(dfa.trans[x, b]), text + bytes([b])) for b in range(256) if dfa.trans[x, b] >= 0]
        infinite = any(len(t) >= 6 for t in found)
        if infinite or len(found) > limit:
            assert got is None
        else:
            assert got is not None and sorted(got) == sorted(found)


@settings(max_examples=200, deadline=None)
@given(tokens=st.lists(st.binary(min_size=1, max_size=5).map(lambda b: bytes(97 + x % 3 for x in b)), min_size=1, max_size=40, unique=True),
       texts=st.lists(st.binary(max_size=6).map(lambda b: bytes(97 + x % 3 for x in b)), max_size=8))
def test_rows_along_all_texts_are_the_rows_along_each(tokens, texts):
    """``TokenTrie.rows_along_all``, which walks shared prefixes once, finds the tokens that
    ``rows_along`` finds for the texts one by one."""
    from ctrldec.vocab import TokenTrie

    trie = TokenTrie(tokens)
    each = {t for text in texts for lo, hi in trie.rows_along(text) for t in trie.order[lo:hi].tolist()}
    assert {t for lo, hi in trie.rows_along_all(texts) for t in trie.order[lo:hi].tolist()} == each


def test_long_token_arrays_with_one_fingerprint_stay_apart():
    """``_SharedGroups.intern`` keys long arrays by a fingerprint and compares them on a match:
    two different pairs with the same length, ends, sums and dot product are two entries, and an
    equal copy of either is that entry."""
    shared = engine._SharedGroups(1 << 30)
    n = engine._HASHED_TOKENS + 10
    a = np.arange(n, dtype=np.int64)
    b = a.copy()
    b[1], b[2] = a[2], a[1]  # same length, ends and sum; offsets all zero: the same dot product
    pos = np.zeros(n, dtype=np.int64)
    first, second = shared.intern(a, pos), shared.intern(b, pos.copy())
    assert first[0] is not second[0]
    np.testing.assert_array_equal(second[0], b)
    assert shared.intern(a.copy(), pos.copy())[0] is first[0]
    assert shared.intern(b.copy(), pos.copy())[0] is second[0]


def _texts_within(dfa: ByteDFA, state: int, ahead: int) -> set:
    """The texts of up to ``ahead`` bytes that live from ``state``, with their acceptance (a
    text that dies is absent)."""
    return reachable_language(dfa, state, ahead + 1)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fold_classes_join_the_states_no_short_text_tells_apart(data):
    """``fold_classes(dfa, ahead)`` puts two states in one class (named by its lowest state)
    exactly when every text of up to ``ahead`` bytes is accepted from both or neither, and dies
    from both or neither: checked against the texts themselves, and against Moore's rounds
    done whole (the function re-reads only the states a split can reach)."""
    n = data.draw(st.integers(2, 7))
    dfa = random_dfa(data.draw, n)
    ahead = data.draw(st.integers(0, 4))
    folds = bytedfa.fold_classes(dfa, ahead)
    for a in range(n):
        assert folds[a] <= a and folds[folds[a]] == folds[a]
        for b in range(a):
            assert (folds[a] == folds[b]) == (_texts_within(dfa, a, ahead) == _texts_within(dfa, b, ahead)), (a, b)
    cls = dfa.accepting.astype(np.int64)
    for _ in range(ahead):  # whole rounds: (class, successors' classes) per state
        rows = [(int(cls[s]), *[int(cls[t]) if t >= 0 else -1 for t in dfa.trans[s]]) for s in range(n)]
        ids = {row: i for i, row in enumerate(dict.fromkeys(rows))}
        cls = np.array([ids[row] for row in rows])
    assert [min(np.flatnonzero(cls == cls[s])) for s in range(n)] == folds.tolist()
    assert bytedfa.fold_classes(dfa, ahead) is folds  # kept on the automaton


def fold_spy(monkeypatch) -> list[bool]:
    """Whether each automaton ``fold_classes`` was asked about folded some states, as asked."""
    folded: list[bool] = []
    fold = lexer.fold_classes

    def spy(dfa, ahead):
        found = fold(dfa, ahead)
        folded.append(found is not None and len(set(found.tolist())) < dfa.n_states)
        return found

    monkeypatch.setattr(lexer, "fold_classes", spy)
    return folded


def test_a_counting_pattern_shares_one_classification_far_from_its_bound(default_tokenizer, monkeypatch):
    """A counter has a lexer state per count; those further from the bound than the longest
    token (80 ``#``) are keyed by their fold class and share one classification, and every
    mask up to the bound still equals a plain walk's: 80 ``#`` fit from count 40, not from 41
    (folding for shorter texts than a token makes those two one class, and fails here)."""
    info = fresh_info(default_tokenizer)
    folded = fold_spy(monkeypatch)
    compiled = ctrldec.Grammar("start: HASHES\nHASHES: /#{1,120}/").compile(info)
    (hash_id,) = info.encode("#")
    m = compiled.matcher()
    for _ in range(120):
        check_classification(m)
        m.advance(hash_id)
    check_classification(m)
    assert any(folded), "no automaton was folded: the test no longer covers it"
    ahead = compiled._max_token_len + engine._FOLD_MARGIN
    keys = {compiled.lexer.automata_key(state, ahead)[0] for state in compiled._groups}
    assert len(keys) < len(compiled._groups) - 20  # the counts far from the bound share a key


def test_a_word_counting_pattern_shares_one_classification_per_word_far_from_its_bound(default_tokenizer, monkeypatch):
    """A pattern that counts words has a lexer state per word; far from the bound (more bytes
    away than the longest token) those states are keyed by their fold class and share one
    classification, and every mask along an instance that reaches the bound still equals a
    plain walk's (folding for texts shorter than a token fails here)."""
    info = fresh_info(default_tokenizer)
    folded = fold_spy(monkeypatch)
    schema = {"type": "object", "properties": {"text": {"type": "string", "pattern": r"^(?:\S+\s+){0,60}\S+$"}}, "required": ["text"]}
    compiled = JSONSchema(schema).compile(info)
    text = " ".join(["word"] * 45 + ["élan", "x"] * 8)  # 61 words: the last ones are at the bound
    replay(compiled, info, json.dumps({"text": text}, ensure_ascii=False, separators=(",", ":")))
    assert any(folded), "no automaton was folded: the test no longer covers it"
    lexer_ = compiled.lexer
    ahead = compiled._max_token_len + engine._FOLD_MARGIN
    keys = {lexer_.automata_key(state, ahead)[0] for state in compiled._groups}
    assert len(keys) < len(compiled._groups) - 10  # most words' states share a key


def test_fold_classes_are_the_same_when_every_row_hashes_alike(monkeypatch):
    """``_unique_rows`` groups rows by a hash and checks the grouping; when rows collide (here:
    every row, with all weights 0) it falls back to comparing them whole, with the same classes."""
    pairs = bytedfa.compile_regex("(?:ab|c){0,20}d?")
    hashed = bytedfa._refined(pairs.trans, np.asarray(pairs.accepting), 12)
    monkeypatch.setattr(bytedfa, "_ROW_WEIGHTS", np.zeros(1024, dtype=np.int64))
    np.testing.assert_array_equal(bytedfa._refined(pairs.trans, np.asarray(pairs.accepting), 12), hashed)
    assert len(set(hashed.tolist())) < pairs.n_states  # something folded: the fallback had work to do
