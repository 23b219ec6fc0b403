"""The speculative verifier and its drafters on tiny random models: lossless for greedy (token for
token) and for sampling (chi-square against the exact distribution of one-token-at-a-time
decoding, enumerated), with and without a constraint, with Mirostat; batching; bad input."""

from __future__ import annotations


import pytest
import torch

import ctrldec
from ctrldec.samplers import FullMask
from ctrldec.samplers.base import SamplingParams
from ctrldec.controllers.base import Controls
from ctrldec.speculative import Draft, ModelDrafter, TokenRecycling, early_exit_model
from helpers import byte_level_tokenizer, peaked_llama, sentencepiece_tokenizer, tiny_llama

DRAFTERS = [["prompt_lookup"], ["recycling"], ["early_exit"], ["model"], ["prompt_lookup", "recycling", "early_exit"]]


@pytest.fixture(scope="module")
def tok():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return peaked_llama(len(tok), 12.0)  # drafts get accepted, outputs concentrate


@pytest.fixture(scope="module")
def draft_model(tok):
    m = tiny_llama(len(tok), seed=0)
    with torch.no_grad():  # the target's weights, perturbed: a correlated but different proposal
        m.lm_head.weight.mul_(10.0).add_(torch.randn_like(m.lm_head.weight))
    return m


def spec(names, draft_model, **kw):
    # adaptive=False unless asked: the sizer cuts drafts by measured pass times, so on a busy
    # machine it may verify none and a test would check no draft at all
    full = ["forced", *names]
    return ctrldec.Speculative(full, early_exit_layers=1, draft_model=draft_model if "model" in names else None,
                               **{"adaptive": False, **kw})


PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick"


@pytest.mark.parametrize("names", DRAFTERS, ids="+".join)
@pytest.mark.parametrize("constrained", [False, True], ids=["free", "regex"])
def test_greedy_is_token_for_token_the_same(tok, model, draft_model, names, constrained):
    constraint = ctrldec.Regex(r"[a-z ]{0,40}\.") if constrained else None
    prompt = tok(PROMPT)["input_ids"]
    plain = ctrldec.generate(model, tok, prompt, constraint=constraint, greedy=True, max_new_tokens=30, lookahead=0)
    s = spec(names, draft_model)
    for _ in range(2):  # the second call starts with what recycling learned in the first
        out = ctrldec.generate(model, tok, prompt, constraint=constraint, greedy=True, max_new_tokens=30, speculative=s)
        assert out.token_ids == plain.token_ids
        assert out.text == plain.text
    drafted = {k.split("/")[1] for k in out.timing if k.startswith("verified/")}
    assert drafted <= set(names)


@pytest.mark.parametrize("names", [["recycling"], ["early_exit"]], ids="+".join)
def test_batch_speculates_per_row(tok, model, draft_model, names):
    prompts = [tok(p)["input_ids"] for p in (PROMPT, "SELECT name, count(*) FROM users", "a,b,c\n1,2,3\n")]
    constraints = [None, ctrldec.Regex(r"[a-z ,]{0,20}"), ctrldec.Regex(r"[0-9,\n]{1,12}")]
    single = [ctrldec.generate(model, tok, p, constraint=c, greedy=True, max_new_tokens=20, lookahead=0)
              for p, c in zip(prompts, constraints)]
    batch = ctrldec.Decoder(model, tok).generate_batch(prompts, constraint=constraints, greedy=True, max_new_tokens=20,
                                                       speculative=spec(names, draft_model))
    assert [r.token_ids for r in batch] == [r.token_ids for r in single]


# -- sampled outputs keep the distribution -------------------------------------------------------------

def exact_distribution(model, tok, prompt, constraint, params, controls, max_new_tokens):
    """Every output of one-token-at-a-time decoding and its probability (FullMask's target, which
    the samplers match exactly), by enumeration."""
    decoder = ctrldec.Decoder(model, tok)
    sampler = FullMask(params, controls)
    out: dict[tuple, float] = {}

    def walk(ids, matcher, state, prob):
        if matcher.is_done() or len(ids) == max_new_tokens:
            out[tuple(ids)] = out.get(tuple(ids), 0.0) + prob
            return
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ids])).logits[0, -1].float()
        target = sampler.target(logits, matcher, state)
        for t in torch.nonzero(target.probs > 1e-12).flatten().tolist():
            p = prob * float(target.probs[t])
            if t in decoder.eos:
                out[tuple(ids)] = out.get(tuple(ids), 0.0) + p
                continue
            fork = matcher.fork()
            fork.advance(t)
            walk(ids + [t], fork, target.choice(t).controls, p)

    walk([], decoder.matcher(constraint), controls.init(), 1.0)
    return out


def chi_square_p(counts: dict, probs: dict, n: int) -> float:
    """p-value of Pearson's chi-square test of ``counts`` against ``probs`` (small cells pooled)."""
    from scipy.stats import chi2

    assert set(counts) <= set(probs), f"outputs that cannot occur: {set(counts) - set(probs)}"
    cells = sorted(probs, key=probs.get, reverse=True)
    big = [c for c in cells if probs[c] * n >= 5]
    rest = [c for c in cells if probs[c] * n < 5]
    observed = [counts.get(c, 0) for c in big] + ([sum(counts.get(c, 0) for c in rest)] if rest else [])
    expected = [probs[c] * n for c in big] + ([sum(probs[c] for c in rest) * n] if rest else [])
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected) if e > 0)
    return float(chi2.sf(stat, max(1, len(observed) - 1)))


CASES = [
    ("free, top-k 4", None, dict(top_k=4), []),
    ("regex, top-k 4", r"[a-z ]{1,12}", dict(top_k=4), []),
    ("tight regex + Mirostat", r"(ab|ba|aab|b){1,3}", {}, [ctrldec.Mirostat(2.0, 1.0)]),
]


@pytest.mark.parametrize("names", DRAFTERS, ids="+".join)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sampled_outputs_keep_the_distribution(tok, model, draft_model, names, case):
    # 3 x 5 tests at a 1e-3 false-failure rate each (fixed seeds: the outcome is reproducible).
    _, pattern, sampling, controllers = case
    constraint = ctrldec.Regex(pattern) if pattern else None
    prompt = tok("ab ba aab b ab ba aab b ab")["input_ids"]
    n, length = 600, 3
    params = SamplingParams(**sampling)
    probs = exact_distribution(model, tok, prompt, constraint, params, Controls(controllers), length)
    decoder = ctrldec.Decoder(model, tok)
    # A wide recycling tree: the regex allows few tokens, rarely among a random model's top 8.
    wide = TokenRecycling(tree=[(i,) for i in range(24)] + [(0, i) for i in range(8)] + [(1, i) for i in range(8)], k=32)
    s = spec([wide if n == "recycling" else n for n in names], draft_model)
    decoder.generate(prompt, constraint=constraint, max_new_tokens=12, seed=0, speculative=s)  # recycling's table starts warm, as it would
    results = decoder.generate_batch([prompt] * n, constraint=constraint, max_new_tokens=length, seed=7, budget_aware=False,
                                     controllers=controllers, speculative=s, **sampling)
    counts: dict[tuple, int] = {}
    for r in results:
        counts[tuple(r.token_ids)] = counts.get(tuple(r.token_ids), 0) + 1
    drafted = sum(r.timing.get("drafted", 0) for r in results)
    accepted = sum(r.timing.get("draft_accepted", 0) for r in results)
    # A random model's top successors rarely fit the tight regex: recycling has nothing valid to draft there.
    assert drafted > 0 or (names == ["recycling"] and case[0].startswith("tight")), "nothing was drafted"
    assert accepted > 0 or names == ["prompt_lookup"] or not drafted, f"{drafted} drafted, none kept"
    assert chi_square_p(counts, probs, n) > 1e-3


def test_speculative_sampling_keeps_more_than_sample_and_compare(tok, model, draft_model):
    """The rejection rule with the draft's q is exact and keeps more of a sampled draft."""
    prompt = tok(PROMPT)["input_ids"]
    decoder = ctrldec.Decoder(model, tok)
    kept = {}
    for rule in ("q", "compare"):
        drafter = ModelDrafter(draft_model, max_draft=4, adaptive=False)
        drafter.temperature = 1.0
        if rule == "compare":
            propose = drafter.propose
            drafter.propose = lambda seq, k, propose=propose: Draft(propose(seq, k).tokens)  # drop q
        results = decoder.generate_batch([prompt] * 40, max_new_tokens=16, seed=3, drafters=[drafter])
        kept[rule] = sum(r.timing["draft_accepted"] for r in results) / sum(r.timing["drafted"] for r in results)
    assert kept["q"] > kept["compare"]


# -- pieces -------------------------------------------------------------------------------------------

class _Oracle:
    """Drafts the next tokens of a known output (while the sequence follows it)."""

    name = "oracle"

    def __init__(self, tokens):
        self.tokens = list(tokens)

    def propose(self, seq, k):
        n = len(seq.ids)
        return Draft(self.tokens[n: n + k]) if seq.ids == self.tokens[:n] else Draft([])

    def observe(self, seq, draft, accepted):
        return None


@pytest.mark.parametrize("literal", [" forced literal text ", " the lazy dog jumps "])
def test_a_draft_stops_where_the_constraint_fixes_text(tok, model, literal):
    # Without drafts the loop commits fixed text tokenized canonically, never a draw; a draft
    # kept up to where text becomes fixed must stop there, or the verifier would draw the fixed
    # positions (a draw may pick another split of the same bytes). The oracle drafts the
    # reference output itself, fixed text included, so every token but the fixed ones is kept.
    constraint = ctrldec.Regex("[a-z]{1,3}" + literal + "[a-z]{1,6}[.]")
    prompt = tok(PROMPT)["input_ids"]
    plain = ctrldec.generate(model, tok, prompt, constraint=constraint, greedy=True, max_new_tokens=30, lookahead=0)
    assert "forced" in plain.kinds
    spec = ctrldec.Speculative(["forced", _Oracle(plain.token_ids)], adaptive=False)
    out = ctrldec.generate(model, tok, prompt, constraint=constraint, greedy=True, max_new_tokens=30, speculative=spec)
    assert out.token_ids == plain.token_ids and out.timing["draft_accepted"] > 0


def test_a_tree_draft_is_cut_to_what_the_constraint_allows(tok):
    info = ctrldec.vocab.tokenizer_info(tok)
    matcher = ctrldec.Regex("abc|abd|x").compile(info).matcher()
    a, b, c, d, x = (tok.convert_tokens_to_ids(ch) for ch in "abcdx")
    draft = Draft([a, x, b, c, d, a], parents=[-1, -1, 0, 2, 2, 1])  # a-b-c, a-b-d, x-a
    valid = draft.valid(matcher, room=8)
    assert valid.tokens == [a, x, b, c, d] and valid.parents == [-1, -1, 0, 2, 2]
    assert draft.valid(matcher, room=2).tokens == [a, x, b]
    assert matcher.tokens() == []


def test_recycling_drafts_its_tree_from_the_table(tok):
    r = TokenRecycling(tree=[(0,), (1,), (0, 0)], k=2)
    rows = torch.full((2, len(tok)), -10.0)
    rows[0, [5, 6]] = torch.tensor([3.0, 2.0])
    rows[1, [7, 8]] = torch.tensor([3.0, 2.0])
    r.learn(None, [4, 5], rows)

    class Seq:
        tokens = [1, 4]

    draft = r.propose(Seq(), 8)
    assert draft.tokens == [5, 6, 7] and draft.parents == [-1, -1, 0]


def test_early_exit_model_shares_weights_and_leaves_the_model_alone(tok, model):
    short = early_exit_model(model, 1)
    assert len(short.model.layers) == 1 and len(model.model.layers) == 2
    assert short.lm_head.weight is model.lm_head.weight
    ids = torch.tensor([tok("The quick")["input_ids"]])
    with torch.no_grad():
        full, early = model(ids).logits, short(ids).logits
    assert not torch.allclose(full, early)
    with pytest.raises(ctrldec.CtrldecError, match="give 1 to 1"):
        early_exit_model(model, 2)


def test_bad_input_is_named(tok, model, draft_model):
    with pytest.raises(ctrldec.CtrldecError, match="at least 1"):
        ctrldec.Speculative(max_draft=0)
    with pytest.raises(ctrldec.CtrldecError, match="forced, prompt_lookup, recycling, early_exit, model"):
        ctrldec.Speculative(["lookup"])
    with pytest.raises(ctrldec.CtrldecError, match="needs draft_model"):
        ctrldec.Speculative(["model"])
    other = sentencepiece_tokenizer()
    with pytest.raises(ctrldec.CtrldecError, match="tokenizer differs"):
        s = ctrldec.Speculative(["model"], draft_model=draft_model, draft_tokenizer=other)
        ctrldec.generate(model, tok, [1, 2], speculative=s, max_new_tokens=2)
    narrow = tiny_llama(100)
    with pytest.raises(ctrldec.CtrldecError, match="scores 100 tokens"):
        ctrldec.generate(model, tok, [1, 2], speculative=ctrldec.Speculative(["model"], draft_model=narrow), max_new_tokens=2)
    with pytest.raises(ctrldec.CtrldecError, match="speculative= replaces lookahead"):
        ctrldec.generate(model, tok, [1, 2], speculative=ctrldec.Speculative(), lookahead=4)
    with pytest.raises(ctrldec.CtrldecError, match="cannot be combined with speculative"):
        ctrldec.generate(model, tok, [1, 2], speculative=ctrldec.Speculative(), search=ctrldec.BeamSearch(2))


def test_kv_forget_and_compact_keep_the_logits(tok, model):
    """Holes from a tree's rejected branches, then compaction: the same logits as a plain run."""
    from ctrldec.decoding.kv import KVCache
    from ctrldec.decoding.runner import Runner

    ids = tok(PROMPT)["input_ids"][:12]
    runner = Runner(model)
    kv = KVCache(1)
    runner.forward(kv, [ids[:8]], [1])
    # a tree: 8 -> {9 -> 10, 50}; keep the path 9, 10
    runner.forward(kv, [[ids[8], ids[9], 50, ids[10]]], [4], parents=[[-1, 0, 0, 1]])
    kv.forget(0, [kv.columns - 2])
    assert kv.length(0) == 11
    kv.compact()
    assert kv.plain
    got = runner.forward(kv, [[ids[11]]], [1]).logits[0][0]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0, -1].float()
    assert torch.allclose(got, want, atol=1e-5)



def test_prompt_lookup_ignores_whitespace_and_tries_older_occurrences():
    from ctrldec.speculative.drafters import PromptLookup, _LookupState

    lookup = PromptLookup()

    def continuation(text: bytes) -> bytes:
        state = _LookupState(None, 0, bytearray(), bytearray(), [], 8)
        lookup._extend(state, text)
        return lookup._continuation(state)

    # the schema in the prompt, then a compact output: whitespace is ignored, what followed is drafted
    assert continuation(b'{"type": "object", "properties": {"name": x} {"type":"object","pro').startswith(b'perties": {"name"')
    # the newest occurrence has one byte after it; an older one has more
    assert continuation(b'a.json b.json and then more text after it c.json d.json').startswith(b" and then more")
