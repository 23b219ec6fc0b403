"""ctrldec's decoding loop: fast-forward, prompt lookup, the result, batches, bad input."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_llama

import ctrldec
from ctrldec import CtrldecError


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=5)


def test_greedy_equals_hf_generate_with_the_processor(tok, model):
    grammar = ctrldec.Grammar.builtin("arithmetic")
    prompt = tok("compute: ", add_special_tokens=False)["input_ids"]
    ours = ctrldec.generate(model, tok, prompt, constraint=grammar, greedy=True, fast_forward=False, max_new_tokens=20)
    ids = torch.tensor([prompt])
    hf = model.generate(ids, logits_processor=[grammar.logits_processor(tok, max_new_tokens=20)], max_new_tokens=20, do_sample=False, pad_token_id=0)
    hf_new = [t for t in hf[0, len(prompt):].tolist() if t != tok.eos_token_id]
    assert ours.token_ids == hf_new  # both budget-aware (the loop's default; the processor given the budget)
    ours = ctrldec.generate(model, tok, prompt, constraint=grammar, greedy=True, fast_forward=False, max_new_tokens=20, budget_aware=False)
    hf = model.generate(ids, logits_processor=[grammar.logits_processor(tok)], max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert ours.token_ids == [t for t in hf[0, len(prompt):].tolist() if t != tok.eos_token_id]  # and both not


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
    out = ctrldec.generate(model, tok, [7], constraint=regex, greedy=True, max_new_tokens=3, budget_aware=False)
    assert out.truncated and out.finish_reason == "length" and regex.is_prefix(out.text)
    with pytest.raises(ctrldec.BudgetError, match="needs max_new_tokens >= 31"):  # the default: complete, or refused up front
        ctrldec.generate(model, tok, [7], constraint=regex, greedy=True, max_new_tokens=3)


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
    hf = model.generate(torch.tensor([prompt]), logits_processor=[schema.logits_processor(tok, max_new_tokens=40)], max_new_tokens=40,
                        do_sample=False, pad_token_id=tok.eos_token_id)
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
    from ctrldec.decoding import Sequence

    info = tokenizer_info(tok)
    prompt = tok('copy this: {"name": "value", "ok": true}', add_special_tokens=False)["input_ids"]
    out = info.encode('{"name":')
    eos = frozenset(info.eos_token_ids)
    compact = Sequence(prompt, ctrldec.Grammar.builtin("json_compact").compile(info).matcher(), info, eos, max_new_tokens=64)
    free = Sequence(prompt, ctrldec.Unconstrained(info.vocab_size, eos), info, eos, max_new_tokens=64)
    for seq in (compact, free):
        seq.commit_forced(out)
    draft = info.decode_bytes(ctrldec.PromptLookup(16).propose(compact, 16).tokens)
    assert draft.startswith(b'"value",') and b" " not in draft  # the compact grammar's spacing
    assert ctrldec.PromptLookup(16).propose(free, 16).tokens  # unconstrained: drafted as written


@pytest.mark.model
def test_default_model_generate_batch_equals_single_runs(default_model):
    model, tok = default_model
    decoder = ctrldec.Decoder(model, tok)
    schema = ctrldec.JSONSchema({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                                 "required": ["name", "age"]})
    prompts = ["Describe a person as JSON.", "A cat as JSON, please.", "Write a JSON object for a city and its mayor.", "Hi"]
    constraints = [schema, schema, schema, None]
    singles = [decoder.generate(p, constraint=c, greedy=True, max_new_tokens=32) for p, c in zip(prompts, constraints)]
    batch = decoder.generate_batch(prompts, constraint=constraints, greedy=True, max_new_tokens=32)
    assert [r.token_ids for r in batch] == [r.token_ids for r in singles]
    assert max(r.timing["forward_passes"] for r in batch) == max(r.timing["forward_passes"] for r in singles)
