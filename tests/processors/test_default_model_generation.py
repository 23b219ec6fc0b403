"""The default model under each shipped grammar: greedy, 20 samples, beam search (4 beams).

Every finished output (EOS reached) must be a sentence of the grammar and parse with Lark;
an output cut off by max_new_tokens must still be a valid prefix.
"""

from __future__ import annotations

from pathlib import Path

import lark
import pytest
import torch

import ctrldec

GRAMMARS = Path(__file__).resolve().parents[2] / "grammars"
PROMPTS = {
    "json": "Give a JSON object describing a cat, with keys name and age.",
    "json_compact": "Give a JSON object describing a dog, with keys name and age.",
    "arithmetic": "Write an arithmetic expression that equals 10.",
    "csv": "Write a CSV table with a header row and two rows about fruits.",
    "sql_select": "Write a SQL query that selects the names of users older than 30.",
    "python_expr": "Write a Python expression that adds up the list xs.",
    "chess": "Write the first three moves of a chess game in PGN notation.",
}
MAX_NEW = 48

pytestmark = [pytest.mark.model, pytest.mark.slow]


def run(model, tok, name, **kwargs):
    grammar = ctrldec.Grammar.builtin(name)
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPTS[name]}], add_generation_prompt=True, return_tensors="pt")["input_ids"]
    proc = grammar.logits_processor(tok)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), logits_processor=[proc], max_new_tokens=MAX_NEW, pad_token_id=tok.eos_token_id, **kwargs)
    reference = lark.Lark((GRAMMARS / f"{name}.lark").read_text(), parser="lalr")
    finished = 0
    for row in out:
        new = row[ids.shape[1] :]
        text = tok.decode(new, skip_special_tokens=True)
        if (new == tok.eos_token_id).any():
            finished += 1
            assert grammar.matches(text), f"{name}: finished output is not a sentence: {text!r}"
            reference.parse(text)
        else:
            assert grammar.is_prefix(text), f"{name}: output left the language: {text!r}"
    return finished, len(out)


def test_prompts_cover_every_grammar():
    assert {p.stem for p in GRAMMARS.glob("*.lark")} == set(PROMPTS)


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_greedy_sampling_and_beams_stay_valid(default_model, name, record_property):
    model, tok = default_model
    counts = {"greedy": run(model, tok, name, do_sample=False)}
    torch.manual_seed(0)
    counts["sample20"] = run(model, tok, name, do_sample=True, temperature=1.0, top_k=0, num_return_sequences=20)
    counts["beam4"] = run(model, tok, name, do_sample=False, num_beams=4)
    record_property("finished", counts)
    print(name, counts)
