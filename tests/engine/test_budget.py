"""Budget-aware completion (``engine/budget.py``, ``engine/completion.py``): the completion bound is
witnessed by a real completion, equals the byte search's shortest where that search is feasible,
and a budgeted matcher never reaches a dead end and always ends complete within its budget."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from helpers import byte_level_tokenizer, tiny_llama
from hypothesis import given, settings
from hypothesis import strategies as st

import ctrldec
from ctrldec.engine.bitmask import unpack
from ctrldec.engine.budget import BudgetMatcher, budgeted
from ctrldec.engine.compiled import UNBOUNDED
from ctrldec.vocab import tokenizer_info

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 3},
        "age": {"type": "integer", "minimum": 10},
        "tags": {"type": "array", "items": {"enum": ["a", "bb"]}, "minItems": 2},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"]},
    },
    "required": ["name", "age", "tags", "address"],
}
OPEN = {"type": "object", "properties": {"id": {"type": "integer"}, "extra": {}}, "required": ["id", "extra"]}
CONSTRAINTS = {
    "person": lambda: ctrldec.JSONSchema(PERSON),
    "open": lambda: ctrldec.JSONSchema(OPEN, extra_properties="allow"),
    "flexible": lambda: ctrldec.JSONSchema(PERSON, whitespace="flexible"),
    "regex": lambda: ctrldec.Regex(r"(ab|c)+d{3}"),
    "lark": lambda: ctrldec.Grammar('start: "(" item ("," item)* ")"\nitem: WORD | start\nWORD: /[a-z]+/\n'),
}


@pytest.fixture(scope="module")
def info():
    return tokenizer_info(byte_level_tokenizer())


def _random_walk(matcher, rng: random.Random, steps: int) -> None:
    """Advance ``matcher`` over up to ``steps`` random allowed tokens (EOS excluded)."""
    g = matcher.grammar
    for _ in range(steps):
        allowed = [t for t in np.flatnonzero(unpack(matcher.mask(), g.vocab_size)).tolist() if t not in g.info.eos_token_ids]
        if not allowed:
            return
        matcher.advance(rng.choice(allowed))


@pytest.mark.parametrize("name", sorted(CONSTRAINTS))
def test_the_bound_is_witnessed_by_a_completion_that_ends_the_output(info, name):
    g = CONSTRAINTS[name]().compile(info)
    rng = random.Random(0)
    for trial in range(12):
        m = g.matcher()
        _random_walk(m, rng, rng.randrange(0, 25))
        bound = m.completion_bound()
        assert bound < UNBOUNDED
        text = m.shortest_completion()
        assert text is not None, (name, trial)
        probe = m.fork()
        assert probe.advance_bytes(text) and probe.is_accepting(), (name, trial, text)
        assert bound <= len(text)


@pytest.mark.parametrize("name", ["person", "regex", "lark"])
def test_the_grammar_completion_is_as_short_as_the_byte_search(info, name):
    """Where a breadth-first search over bytes is feasible, it finds the same shortest length."""
    constraint = CONSTRAINTS[name]()
    g = constraint.compile(info)
    rng = random.Random(1)
    for _ in range(10):
        m = g.matcher()
        _random_walk(m, rng, rng.randrange(0, 20))
        prefix = info.decode_bytes(m.tokens())
        searched = g.completion(prefix)
        built = m.shortest_completion()
        assert searched is not None and built is not None
        assert len(built) == len(searched), (prefix, built, searched)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(CONSTRAINTS)), slack=st.integers(0, 30), seed=st.integers(0, 10**6))
def test_a_budgeted_walk_never_dead_ends_and_ends_complete_within_budget(info, name, slack, seed):
    constraint = CONSTRAINTS[name]()
    g = constraint.compile(info)
    need = g.matcher().completion_bound() + 1
    budget = need + slack
    m = budgeted(g.matcher(), budget)
    rng = random.Random(seed)
    eos = g.info.eos_token_ids
    while not m.is_done():
        allowed = np.flatnonzero(unpack(m.mask(), g.vocab_size)).tolist()
        assert allowed, f"dead end after {m.num_tokens} of {budget} tokens"
        for t in rng.sample(range(g.vocab_size), 30):  # the mask and accepts agree
            assert m.accepts(t) == (t in set(allowed))
        t = rng.choice(allowed)
        m.advance(t)
        if t in eos:
            break
    assert m.num_tokens <= budget
    text = info.decode_bytes([t for t in m.tokens() if t not in eos])
    assert constraint.matches(text), text


def test_validate_tokens_and_forks_share_the_budget(info):
    g = ctrldec.Regex(r"a{2,40}").compile(info)
    a = info.encode("a")[0]
    m = budgeted(g.matcher(), 5)
    assert m.validate_tokens([a] * 6) == 4  # four a's, then EOS must fit
    m.advance(a)
    f = m.fork()
    assert isinstance(f, BudgetMatcher) and f.remaining == m.remaining == 4
    f.advance(a)
    assert f.remaining == 3 and m.remaining == 4
    f.rollback(1)
    assert f.remaining == 4


def test_a_budget_below_the_shortest_output_is_refused_before_generating(info):
    g = ctrldec.JSONSchema(PERSON).compile(info)
    need = g.matcher().completion_bound() + 1
    budgeted(g.matcher(), need)  # fits exactly
    with pytest.raises(ctrldec.BudgetError, match=rf"needs max_new_tokens >= {need}\b") as e:
        budgeted(g.matcher(), need - 1)
    assert '{"name":"' in str(e.value)  # shows the shortest output
    with pytest.raises(ctrldec.BudgetError, match="at least 1"):
        budgeted(g.matcher(), 0)


@pytest.fixture(scope="module")
def tiny():
    tok = byte_level_tokenizer()
    return tiny_llama(len(tok), seed=3), tok


@pytest.mark.parametrize("budget", [None, 0, 7, 40])
def test_the_loop_and_the_processor_finish_every_output_within_budget(tiny, budget):
    model, tok = tiny
    constraint = ctrldec.JSONSchema(PERSON)
    need = constraint.compile(tokenizer_info(tok, model.config.vocab_size)).matcher().completion_bound() + 1
    n = need + budget if budget is not None else need
    for seed in range(3):
        out = ctrldec.generate(model, tok, "x", constraint=constraint, max_new_tokens=n, budget_aware=True, seed=seed, chat=False)
        assert len(out.token_ids) <= n and out.finish_reason == "eos", out
        assert constraint.matches(out.text) and json.loads(out.text)["age"] >= 10
    ids = tok("x", return_tensors="pt").input_ids
    proc = constraint.logits_processor(tok, max_new_tokens=n)
    rows = model.generate(ids, logits_processor=[proc], max_new_tokens=n, do_sample=True, num_return_sequences=3,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    for row in rows[:, ids.shape[1]:].tolist():
        text = tok.decode([t for t in row if t != tok.eos_token_id])
        assert constraint.matches(text), text


def test_budget_aware_needs_a_constraint_and_refuses_asap(tiny):
    model, tok = tiny
    with pytest.raises(ctrldec.CtrldecError, match="needs a constraint"):
        ctrldec.generate(model, tok, "x", max_new_tokens=5, budget_aware=True, chat=False)
    with pytest.raises(ctrldec.CtrldecError, match="budget_aware=True with sampler=ASAp"):
        ctrldec.generate(model, tok, "x", constraint=ctrldec.Regex("a+"), max_new_tokens=5, budget_aware=True,
                         sampler=ctrldec.ASAp(), chat=False)
    with pytest.raises(ctrldec.BudgetError, match="needs max_new_tokens >= 7"):
        ctrldec.generate(model, tok, "x", constraint=ctrldec.Regex("a{6}"), max_new_tokens=4, budget_aware=True, chat=False)


@pytest.mark.parametrize("name", ["person", "open", "lark"])
def test_the_bound_does_not_depend_on_what_was_asked_before(info, name):
    """Budget masks are cached per state and shared by sequences and threads: a state's bound must
    be the same whichever states were bounded before it."""
    from ctrldec.constraints.grammar import clear_caches

    rng = random.Random(5)
    walks = []
    for _ in range(8):
        m = CONSTRAINTS[name]().compile(info).matcher()
        _random_walk(m, rng, rng.randrange(0, 30))
        walks.append(m.tokens())

    def bounds(order):
        clear_caches()
        g = CONSTRAINTS[name]().compile(info)
        out = {}
        for i in order:
            m = g.matcher()
            for t in walks[i]:
                m.advance(t)
            out[i] = (m.completion_bound(), [m.completion_bound_after(t) for t in range(0, g.vocab_size, 7)])
        return out

    assert bounds(range(8)) == bounds(reversed(range(8)))
