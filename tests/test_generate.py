"""ctrldec's decoding loop: exact mask-free sampling, fast-forward, the result, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import byte_level_tokenizer, tiny_llama
from scipy.stats import chisquare

import ctrldec
from ctrldec import CtrldecError
from ctrldec.generate import crop_cache, fork_cache
from ctrldec.samplers.sampling import SamplingParams, choose

# A toy "model": a fixed next-token distribution over single-letter tokens, constrained by a
# regex that allows about a third of them.
LETTERS = [chr(c).encode() for c in range(ord("a"), ord("z") + 1)] + [b""]
TOY_INFO = ctrldec.TokenizerInfo(LETTERS, special_ids={26}, eos_token_ids=[26])
TOY_LOGITS = torch.tensor(np.random.default_rng(0).normal(0, 2, size=27), dtype=torch.float32)
ALLOWED_RE = ctrldec.Regex("[aeiouxyz]")


def masked_then_warped(params: SamplingParams) -> np.ndarray:
    """The reference: restrict to allowed tokens, renormalise, then warp (full knowledge)."""
    m = ALLOWED_RE.matcher(TOY_INFO)
    allowed = m.allowed_token_ids()
    p = torch.softmax(TOY_LOGITS.double() / params.temperature, dim=-1).numpy()
    q = np.zeros_like(p)
    q[allowed] = p[allowed]
    q /= q.sum()
    order = [t for t in np.argsort(-q, kind="stable") if q[t] > 0]
    if params.top_k:
        order = order[: params.top_k]
    w = q[order] / q[order].sum()
    if params.top_p < 1:
        cut = int(np.searchsorted(np.cumsum(w), params.top_p * (1 - 1e-12)))
        order, w = order[: cut + 1], w[: cut + 1] / w[: cut + 1].sum()
    if params.min_p > 0:
        keep = [i for i in range(len(order)) if w[i] >= params.min_p * w[0]]
        order, w = [order[i] for i in keep], w[keep] / w[keep].sum()
    out = np.zeros_like(p)
    out[order] = w
    return out


@pytest.mark.parametrize(
    "params",
    [SamplingParams(), SamplingParams(temperature=0.6), SamplingParams(top_k=3), SamplingParams(top_p=0.7),
     SamplingParams(min_p=0.3), SamplingParams(temperature=1.4, top_k=5, top_p=0.9, min_p=0.05)],
    ids=["plain", "temperature", "top_k", "top_p", "min_p", "all"],
)
def test_mask_free_sampler_matches_the_masked_distribution(params, record_property):
    """20,000 draws, chi-square p > 0.01 (fixed seed: a new seed fails 1% of the time by chance)."""
    generator = torch.Generator().manual_seed(1234)
    counts = np.zeros(27)
    checks = 0
    draws = 20_000
    for _ in range(draws):
        choice = choose(TOY_LOGITS, ALLOWED_RE.matcher(TOY_INFO), params, generator, max_checks=8)
        counts[choice.token] += 1
        checks += choice.checks
    expected = masked_then_warped(params)
    support = expected > 0
    assert counts[~support].sum() == 0, "a token outside the warped, masked support was drawn"
    if support.sum() > 1:
        assert chisquare(counts[support], expected[support] * draws).pvalue > 0.01
    record_property("mean_checks_per_token", checks / draws)
    print(params, "mean accepts checks per token:", checks / draws)


def test_greedy_takes_the_most_likely_allowed_token():
    choice = choose(TOY_LOGITS, ALLOWED_RE.matcher(TOY_INFO), SamplingParams(greedy=True))
    allowed = ALLOWED_RE.matcher(TOY_INFO).allowed_token_ids()
    assert choice.token == allowed[int(TOY_LOGITS[allowed].argmax())]


@pytest.fixture(scope="module")
def tok():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=5)


def test_greedy_equals_hf_generate_with_the_processor(tok, model):
    grammar = ctrldec.Grammar.builtin("arithmetic")
    prompt = tok("compute: ", add_special_tokens=False)["input_ids"]
    ours = ctrldec.generate(model, tok, prompt, constraint=grammar, greedy=True, fast_forward=False, max_new_tokens=20)
    ids = torch.tensor([prompt])
    hf = model.generate(ids, logits_processor=[grammar.logits_processor(tok)], max_new_tokens=20, do_sample=False, pad_token_id=0)
    hf_new = [t for t in hf[0, len(prompt):].tolist() if t != tok.eos_token_id]
    assert ours.token_ids == hf_new


def test_fast_forward_feeds_forced_text_in_one_pass(tok, model):
    regex = ctrldec.Regex('\\{"status": "(ok|failed)", "code": [0-9]\\}')
    out = ctrldec.generate(model, tok, [1, 2, 3], constraint=regex, greedy=True, max_new_tokens=40)
    assert regex.matches(out.text) and out.finish_reason == "eos"
    assert "forced" in out.kinds
    assert out.timing["forward_passes"] < len(out.token_ids)  # several tokens per pass
    assert len(out.logprobs) == len(out.token_ids) and all(lp <= 0 for lp in out.logprobs)


def test_sampling_under_a_constraint_is_always_valid(tok, model):
    json = ctrldec.Grammar.builtin("json_compact")
    for seed in range(5):
        out = ctrldec.generate(model, tok, [5, 6], constraint=json, seed=seed, max_new_tokens=30)
        assert json.is_prefix(out.text)
        assert out.truncated or json.matches(out.text)


def test_truncated_output_is_a_valid_prefix(tok, model):
    regex = ctrldec.Regex("[a-z]{30}")
    out = ctrldec.generate(model, tok, [7], constraint=regex, greedy=True, max_new_tokens=3)
    assert out.truncated and out.finish_reason == "length" and regex.is_prefix(out.text)


def test_streaming_yields_the_text(tok, model):
    decoder = ctrldec.Decoder(model, tok)
    pieces = list(decoder.stream([9, 10], constraint=ctrldec.Regex("[a-z ]{5,12}\\."), seed=3, max_new_tokens=20))
    assert "".join(pieces) == decoder.last_result.text


def test_stop_strings(tok, model):
    out = ctrldec.generate(model, tok, [3], constraint=ctrldec.Regex("(ab)+c"), greedy=True, max_new_tokens=20, stop=["ba"])
    assert out.finish_reason == "stop" and "ba" not in out.text


def test_bad_input(tok, model):
    with pytest.raises(CtrldecError, match="empty"):
        ctrldec.generate(model, tok, "   ")
    with pytest.raises(CtrldecError, match="max_new_tokens"):
        ctrldec.generate(model, tok, [1], max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        ctrldec.generate(model, tok, [1], temperature=0)


def test_batch_of_independent_prompts(tok, model):
    results = ctrldec.Decoder(model, tok).generate_batch([[1], [2, 3], [4, 5, 6]], constraint=ctrldec.Regex("[0-9]+"), seed=0, max_new_tokens=5)
    assert len(results) == 3 and all(r.text.isdigit() or r.truncated for r in results)


def test_cache_fork_and_crop(tok, model):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    other = fork_cache(cache)
    crop_cache(other, 2)
    assert other.get_seq_length() == 2 and cache.get_seq_length() == 4


def test_custom_generate_callable(tok, model):
    run = ctrldec.custom_generate(ctrldec.Regex("(yes|no)"), tokenizer=tok)
    ids = torch.tensor([[1, 2]])
    out = model.generate(ids, custom_generate=run, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert tok.decode(out[0, 2:], skip_special_tokens=True) in {"yes", "no"}


@pytest.mark.model
def test_default_model_greedy_loop_equals_hf_processor(default_model):
    model, tok = default_model
    schema = ctrldec.JSONSchema({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]})
    decoder = ctrldec.Decoder(model, tok)
    prompt = decoder.encode_prompt("Describe a person as JSON.")
    ours = decoder.generate(prompt, constraint=schema, greedy=True, fast_forward=False, max_new_tokens=40)
    hf = model.generate(torch.tensor([prompt]), logits_processor=[schema.logits_processor(tok)], max_new_tokens=40, do_sample=False, pad_token_id=tok.eos_token_id)
    assert ours.token_ids == [t for t in hf[0, len(prompt):].tolist() if t != tok.eos_token_id]


def test_prompt_lookup_is_lossless_for_greedy(tok, model):
    prompt = tok("ab ab ab ab ab ab ab", add_special_tokens=False)["input_ids"]
    regex = ctrldec.Regex("( ?ab)+")
    with_lookup = ctrldec.generate(model, tok, prompt, constraint=regex, greedy=True, max_new_tokens=24)
    without = ctrldec.generate(model, tok, prompt, constraint=regex, greedy=True, max_new_tokens=24, lookahead=0)
    assert with_lookup.token_ids == without.token_ids
    assert with_lookup.timing["drafted"] > 0


def test_prompt_lookup_keeps_the_sampling_distribution(tok, model):
    """Two-sample chi-square over the 8 outputs of [ab]{3}, 1,500 samples per mode."""
    from scipy.stats import chi2_contingency

    prompt = tok("aba bab aab abb", add_special_tokens=False)["input_ids"]
    regex = ctrldec.Regex("[ab]{3}")
    decoder = ctrldec.Decoder(model, tok)
    outcomes = ["".join(x) for x in __import__("itertools").product("ab", repeat=3)]
    table = []
    for lookahead in (0, 8):
        counts = dict.fromkeys(outcomes, 0)
        for seed in range(1500):
            counts[decoder.generate(prompt, constraint=regex, seed=seed, max_new_tokens=8, lookahead=lookahead).text] += 1
        table.append([counts[o] + 1 for o in outcomes])
    assert chi2_contingency(table).pvalue > 0.01


def test_text_lookup_drafts_across_whitespace_under_a_compact_grammar(tok):
    from ctrldec.constraints import tokenizer_info
    from ctrldec.generate import _Lookup

    info = tokenizer_info(tok)
    prompt = tok('copy this: {"name": "value", "ok": true}', add_special_tokens=False)["input_ids"]
    m = ctrldec.Grammar.builtin("json_compact").compile(info).matcher()
    out = info.encode('{"name":')
    for t in out:
        m.advance(t)
    lookup = _Lookup(info, prompt)
    lookup.extend(info.decode_bytes(out))
    draft = info.decode_bytes(lookup.draft(m, out, 16))
    assert draft.startswith(b'"value",') and b" " not in draft  # the compact grammar's spacing
    assert lookup.draft(None, out, 16)  # unconstrained: drafted as written
