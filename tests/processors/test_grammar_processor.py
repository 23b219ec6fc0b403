"""GrammarLogitsProcessor inside ``model.generate``: greedy, sampling, beams, batches, reuse."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import tiny_llama

import ctrldec
from ctrldec import DeadEndError

ARITH = ctrldec.Grammar.builtin("arithmetic")


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok))


def new_text(tok, out, prompt_len):
    return [tok.decode(row[prompt_len:], skip_special_tokens=True) for row in out]


def check_outputs(constraint, texts, finished):
    for text, done in zip(texts, finished):
        assert constraint.is_prefix(text), text
        if done:
            assert constraint.matches(text), text


def finished_rows(tok, out, prompt_len):
    return [(row[prompt_len:] == tok.eos_token_id).any().item() for row in out]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(do_sample=False),
        dict(do_sample=True, num_return_sequences=6),
        dict(num_beams=4, num_return_sequences=4, do_sample=False),
    ],
    ids=["greedy", "sample", "beam"],
)
def test_generate_stays_in_the_language(tok, model, kwargs):
    torch.manual_seed(0)
    ids = tok("compute: ", return_tensors="pt")["input_ids"]
    proc = ARITH.logits_processor(tok)
    out = model.generate(ids, logits_processor=[proc], max_new_tokens=24, pad_token_id=tok.eos_token_id, **kwargs)
    check_outputs(ARITH, new_text(tok, out, ids.shape[1]), finished_rows(tok, out, ids.shape[1]))


def test_batch_rows_are_independent_with_left_padding(tok, model):
    tok.padding_side = "left"
    batch = tok(["a", "a much longer prompt here"], return_tensors="pt", padding=True)
    json = ctrldec.Grammar.builtin("json_compact")
    proc = json.logits_processor(tok)
    torch.manual_seed(1)
    out = model.generate(**batch, logits_processor=[proc], max_new_tokens=20, do_sample=True, pad_token_id=tok.eos_token_id)
    n = batch["input_ids"].shape[1]
    check_outputs(json, new_text(tok, out, n), finished_rows(tok, out, n))


def test_processor_output_is_a_function_of_the_prefix(tok):
    proc = ARITH.logits_processor(tok)
    ids = torch.tensor([tok("9 ", add_special_tokens=False)["input_ids"], tok("x ", add_special_tokens=False)["input_ids"]])
    scores = torch.randn(2, len(tok))
    first = proc(ids, scores.clone())
    again = proc(ids, scores.clone())
    swapped = proc(ids.flip(0), scores.flip(0).clone())
    assert torch.equal(first, again) and torch.equal(first, swapped.flip(0))


def test_reusable_across_generate_calls(tok, model):
    proc = ARITH.logits_processor(tok)
    ids = tok("go ", return_tensors="pt")["input_ids"]
    runs = [model.generate(ids, logits_processor=[proc], max_new_tokens=12, do_sample=False, pad_token_id=0) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_logits_wider_than_tokenizer_never_pick_padding(tok):
    wide = tiny_llama(len(tok) + 50, seed=3)
    with torch.no_grad():
        wide.lm_head.weight[len(tok) :] += 100.0  # the padding ids would win without the mask
    proc = ARITH.logits_processor(tok)
    ids = tok("1", return_tensors="pt")["input_ids"]
    out = wide.generate(ids, logits_processor=[proc], max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert (out[0, ids.shape[1] :] < len(tok)).all()


def test_forces_eos_when_the_grammar_is_done(tok, model):
    regex = ctrldec.Regex("42")
    proc = regex.logits_processor(tok)
    ids = tok("answer: ", return_tensors="pt")["input_ids"]
    out = model.generate(ids, logits_processor=[proc], max_new_tokens=10, do_sample=False, pad_token_id=0)
    new = out[0, ids.shape[1] :].tolist()
    assert tok.decode(new, skip_special_tokens=True) == "42" and new[-1] == tok.eos_token_id


def test_beam_scores_stay_log_probabilities(tok):
    proc = ARITH.logits_processor(tok)
    ids = tok("x", return_tensors="pt")["input_ids"]
    logprobs = torch.log_softmax(torch.randn(1, len(tok)), dim=-1)
    out = proc(ids, logprobs)
    assert torch.allclose(torch.logsumexp(out, dim=-1), torch.zeros(1), atol=1e-4)


def test_dead_end_raises_instead_of_emitting_an_invalid_token():
    # A vocabulary that can start "ab" but has no token for the "c" the grammar needs next.
    info = ctrldec.TokenizerInfo([b"a", b"b", b"ab", b""], special_ids={3}, eos_token_ids=[3])
    proc = ctrldec.Regex("abc").logits_processor(info)
    proc(torch.tensor([[0]]), torch.zeros(1, 4))  # the prompt
    with pytest.raises(DeadEndError, match="no token is allowed"):
        proc(torch.tensor([[0, 2]]), torch.zeros(1, 4))


def _greedy(model, proc, ids, steps):
    """Greedy decoding through ``proc`` by hand, yielding the ids after each step (so that two
    generations can be interleaved call by call)."""
    for _ in range(steps):
        with torch.no_grad():
            scores = proc(ids, model(ids).logits[:, -1, :])
        ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], dim=1)
        yield ids


def _prompts(tok):
    # lengths far apart: a cache pruned around the current call's length would drop the other's rows
    return [tok(text, return_tensors="pt")["input_ids"] for text in ("a", "a much longer prompt than the first one, " * 4)]


def test_one_processor_serves_interleaved_generations(tok, model):
    json = ctrldec.Grammar.builtin("json_compact")
    alone = [list(_greedy(model, json.logits_processor(tok), p, 16))[-1] for p in _prompts(tok)]
    shared = json.logits_processor(tok)
    for together in zip(*(_greedy(model, shared, p, 16) for p in _prompts(tok))):
        pass
    for ids, expected, prompt in zip(together, alone, _prompts(tok)):
        assert torch.equal(ids, expected)
        new = ids[0, prompt.shape[1] :].tolist()
        text = tok.decode(new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new)
        assert json.is_prefix(text), text  # past EOS the processor leaves rows alone


def test_one_processor_serves_concurrent_generate_calls(tok, model):
    json = ctrldec.Grammar.builtin("json_compact")
    kwargs = dict(max_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id)
    alone = [model.generate(p, logits_processor=[json.logits_processor(tok)], **kwargs) for p in _prompts(tok)]
    shared = json.logits_processor(tok)
    outputs: dict[int, torch.Tensor] = {}
    threads = [threading.Thread(target=lambda i=i, p=p: outputs.__setitem__(i, model.generate(p, logits_processor=[shared], **kwargs)))
               for i, p in enumerate(_prompts(tok) * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [torch.equal(outputs[i], alone[i % 2]) for i in range(4)] == [True] * 4


def test_the_processor_imports_only_layers_below_it():
    """DESIGN.md: imports run downward; the processor works from a constraint's public methods."""
    import ast
    import inspect

    from ctrldec.processors import grammar as module

    tree = ast.parse(inspect.getsource(module))
    type_only = {id(n) for node in tree.body if isinstance(node, ast.If) for n in ast.walk(node)}  # `if TYPE_CHECKING:`
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and id(n) not in type_only]
    assert imported and not [m for m in imported if m.lstrip(".").startswith("constraints")]
