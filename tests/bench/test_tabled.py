"""The tabled model (``ctrldec.bench.tabled``) on a tiny random model: it enumerates every
tokenization, stores the model's distributions exactly, and ctrldec's loop gives the same tokens
with it as with the real model (greedy, sampled, batched, with drafts and holes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import byte_level_tokenizer, tiny_llama

import ctrldec
from ctrldec.speculative import Draft
from ctrldec.bench.tabled import TabledModel, build_table, enumerate_language, exact_distributions
from ctrldec.errors import CtrldecError

PATTERN = "(cat|car|cart|dog)s?"
# Prompt lookup finds "word:c" earlier in the prompt and drafts what followed it: drafts are
# checked, some rejected, so KV rows get holes.
PROMPT = "word: carts\nword: cats\nword: "


@pytest.fixture(scope="module")
def setup():
    tok = byte_level_tokenizer()
    model = tiny_llama(len(tok), seed=1)
    decoder = ctrldec.Decoder(model, tok)
    constraint = ctrldec.Regex(PATTERN)
    sequences = enumerate_language(constraint, decoder.info, decoder.eos)
    prompt = decoder.encode_prompt(PROMPT)
    table = build_table(model, tok, prompt, sequences, top=len(tok), batch=3)
    tabled = ctrldec.Decoder(TabledModel(table, decoder.width, sorted(decoder.eos)), tok)
    return tok, model, decoder, constraint, sequences, prompt, table, tabled


def _tokenizations(data: bytes, pieces: list[bytes]) -> int:
    """Ways to split ``data`` into vocabulary tokens (dynamic programming over byte offsets)."""
    ways = [1] + [0] * len(data)
    for end in range(1, len(data) + 1):
        ways[end] = sum(ways[end - len(p)] for p in pieces if p and len(p) <= end and data[end - len(p):end] == p)
    return ways[-1]


def test_enumerate_language_lists_every_tokenization_of_every_string(setup):
    tok, _, decoder, constraint, sequences, *_ = setup
    pieces = list(decoder.info.token_bytes)
    strings = {decoder.info.decode_bytes(s[:-1]) for s in sequences}
    assert strings == {f"{w}{s}".encode() for w in ("cat", "car", "cart", "dog") for s in ("", "s")}
    assert len(set(sequences)) == len(sequences) and all(s[-1] in decoder.eos for s in sequences)
    assert len(sequences) == sum(_tokenizations(w, pieces) for w in strings) * len(decoder.eos)


def test_enumerate_language_refuses_large_and_infinite_languages(setup):
    _, _, decoder, *_ = setup
    with pytest.raises(CtrldecError, match="more than 3 token sequences"):
        enumerate_language(ctrldec.Regex(PATTERN), decoder.info, decoder.eos, limit=3)
    with pytest.raises(CtrldecError, match="too large"):
        enumerate_language(ctrldec.Regex("a+"), decoder.info, decoder.eos)


def test_table_holds_the_models_distribution_at_every_node(setup):
    _, model, decoder, _, sequences, prompt, table, _ = setup
    for output, node in table.index.items():
        with torch.no_grad():
            logits = model(torch.tensor([prompt + list(output)])).logits[0, -1]
        expected = torch.log_softmax(logits.double(), dim=-1).numpy()
        np.testing.assert_allclose(table.logits(node), expected, atol=1e-4)
    assert set(table.index) == {s[:j] for s in sequences for j in range(len(s))}


def test_a_truncated_table_is_exact_on_the_stored_ids_and_the_trie(setup):
    tok, model, _, _, sequences, prompt, full, _ = setup
    small = build_table(model, tok, prompt, sequences, top=4)
    for output, node in small.index.items():
        exact = full.logits(full.index[output]).astype(np.float64)
        stored = small.ids[node]
        assert set(small.children[node]) <= set(stored) and len(stored) <= 4 + len(small.children[node])
        np.testing.assert_allclose(small.logp[node], exact[stored], atol=1e-6)
        probs = np.exp(small.logits(node).astype(np.float64))
        assert probs.sum() == pytest.approx(1.0, abs=1e-4)  # the rest of the mass spread uniformly


@pytest.mark.parametrize("options", [
    {"greedy": True},
    {"seed": 0}, {"seed": 1}, {"seed": 2},
    {"seed": 3, "fast_forward": False, "lookahead": 0},
    {"seed": 4, "sampler": ctrldec.AWRS()},
])
def test_generate_gives_the_same_tokens_with_the_tabled_model(setup, options):
    _, model, decoder, constraint, _, prompt, _, tabled = setup
    real = decoder.generate(prompt, constraint=constraint, **options)
    stand_in = tabled.generate(prompt, constraint=constraint, **options)
    assert stand_in.token_ids == real.token_ids
    assert stand_in.log_weight == pytest.approx(real.log_weight, abs=1e-4)


def test_generate_batch_gives_the_same_tokens_with_the_tabled_model(setup):
    _, _, decoder, constraint, _, prompt, _, tabled = setup
    real = decoder.generate_batch([prompt] * 12, constraint=constraint, seed=5)
    stand_in = tabled.generate_batch([prompt] * 12, constraint=constraint, seed=5)
    assert [r.token_ids for r in stand_in] == [r.token_ids for r in real]
    assert sum(r.timing.get("drafted", 0) for r in stand_in) > 0  # drafts, some rejected: rows with holes


class _TreeOfLetters:
    """A drafter proposing the same small tree every step: a, b at the root; c, a under a; b under b."""

    name = "letters"

    def __init__(self, tok):
        self.ids = [tok.convert_tokens_to_ids(x) for x in "abc"]

    def propose(self, seq, k):
        a, b, c = self.ids
        return Draft([a, b, c, a, b], parents=[-1, -1, 0, 0, 1])

    def observe(self, seq, draft, accepted):
        pass


def test_draft_trees_give_the_same_tokens_with_the_tabled_model():
    """Tree drafts reach the model as 4-D tree masks; the table must read each node's prefix from them."""
    tok = byte_level_tokenizer()
    model = tiny_llama(len(tok), seed=1)
    decoder = ctrldec.Decoder(model, tok)
    constraint = ctrldec.Regex("[abc]{5}")
    prompt = decoder.encode_prompt(PROMPT)
    table = build_table(model, tok, prompt, enumerate_language(constraint, decoder.info, decoder.eos), top=len(tok))
    tabled = ctrldec.Decoder(TabledModel(table, decoder.width, sorted(decoder.eos)), tok)
    outputs = []
    for d in (decoder, tabled):
        spec = ctrldec.Speculative([_TreeOfLetters(tok)], adaptive=False)
        runs = [d.generate(prompt, constraint=constraint, seed=s, speculative=spec) for s in range(8)]
        outputs.append([r.token_ids for r in runs])
        assert sum(r.timing.get("verified/letters", 0) for r in runs) >= 8
    assert outputs[0] == outputs[1]


def test_smc_gives_the_same_particles_with_the_tabled_model(setup):
    _, _, decoder, constraint, _, prompt, _, tabled = setup
    real = decoder.generate(prompt, constraint=constraint, seed=6, sampler=ctrldec.SMC(particles=6), fast_forward=False)
    stand_in = tabled.generate(prompt, constraint=constraint, seed=6, sampler=ctrldec.SMC(particles=6), fast_forward=False)
    assert [p.token_ids for p in stand_in.smc.particles] == [p.token_ids for p in real.smc.particles]
    np.testing.assert_allclose(stand_in.smc.log_weights, real.smc.log_weights, atol=1e-4)


def test_tabled_model_names_a_prefix_it_does_not_know(setup):
    _, _, decoder, _, _, prompt, _, tabled = setup
    outside = next(t for t in range(10, 600) if (t,) not in tabled.model.table.index)
    with pytest.raises(CtrldecError, match=rf"output prefix \[{outside}\] is not in the table"):
        tabled.model(torch.tensor([prompt + [outside]]))
    with pytest.raises(CtrldecError, match="another prompt"):
        tabled.generate(decoder.encode_prompt("something else"), constraint=ctrldec.Regex(PATTERN))


def test_exact_distributions_match_the_model_and_sum_to_one(setup):
    _, model, _, _, sequences, prompt, table, _ = setup
    exact = exact_distributions(table, sequences)
    assert exact.p_star.sum() == pytest.approx(1.0) and exact.q_mask.sum() == pytest.approx(1.0)
    with torch.no_grad():
        direct = []
        for s in sequences:
            logp = torch.log_softmax(model(torch.tensor([prompt + list(s)])).logits[0].double(), dim=-1)
            direct.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(s)))
    assert exact.log_p_language == pytest.approx(float(np.logaddexp.reduce(direct)), abs=1e-4)
