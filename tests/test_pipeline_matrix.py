"""Every cell of the compatibility matrix (``pipeline_matrix.py``): each "yes" runs on a tiny model
and its output is checked (valid under the constraint; greedy and search rows equal to the same
call without the column's addition where that addition is lossless; batches equal to single
calls); each "no" raises a ``CtrldecError`` that names both parts. The README and docs tables are
rendered from the same data and must be current."""

from __future__ import annotations

import pytest
import torch

import ctrldec
import pipeline_matrix as pm
from helpers import tiny_llama

PROMPT = "The quick brown fox jumps over the lazy dog. The quick"
YES = [(r, c) for r in pm.ROWS for c in pm.COLUMNS if (r, c) not in pm.NO]
DETERMINISTIC = {"greedy", "contrastive", "beam", "diverse beam"}  # outputs that do not depend on the random stream


@pytest.fixture(scope="module")
def model(peaked_model):
    return peaked_model


@pytest.fixture(scope="module")
def draft_model(tok):
    m = tiny_llama(len(tok), seed=0)
    with torch.no_grad():
        m.lm_head.weight.mul_(5.0).add_(torch.randn_like(m.lm_head.weight))
    return m


def _valid(result, constraint) -> None:
    if result.truncated:
        assert constraint.is_prefix(result.text), result.text
    else:
        assert constraint.matches(result.text), result.text


def _run(model, tok, row, column, draft_model, prompt=PROMPT):
    opts = pm.options(row, column, draft_model)
    ids = tok(prompt)["input_ids"]
    result = ctrldec.generate(model, tok, ids, **opts)
    if column in pm.DRAFTERS:  # again, with what recycling learned in the first call
        result = ctrldec.generate(model, tok, ids, **opts)
    return result, opts


@pytest.mark.parametrize("row,column", YES, ids=[f"{r}-{c}" for r, c in YES])
def test_yes_cell_runs_and_is_valid(tok, model, draft_model, row, column):
    if column == "batching":
        return _batch(tok, model, row)
    if column == "HF model.generate":
        return _hf(tok, model, row)
    result, opts = _run(model, tok, row, column, draft_model)
    _valid(result, opts["constraint"])
    if column in pm.CONTROLLERS:
        sampled = [s for s, kind in zip(result.steps, result.kinds) if kind == "sampled"]
        assert sampled and all(s.controls for s in sampled)  # the controller reported at every sampled step
    if column in pm.DRAFTERS and row in DETERMINISTIC:
        plain = ctrldec.generate(model, tok, tok(PROMPT)["input_ids"], **pm.options(row, "forced"))
        assert result.token_ids == plain.token_ids  # drafts are lossless
    if column in pm.DRAFTERS and column != "forced" and row not in pm.SEARCHES:
        assert result.timing.get("verified", 0) > 0  # the drafter's drafts reached the verifier
    if column == "EAD":
        assert len(result.models) == len(result.token_ids) and set(result.models) <= {"small", "full"}


def _batch(tok, model, row):
    prompts = [tok(PROMPT)["input_ids"], tok("SELECT name FROM users")["input_ids"]]
    if row == "ASAp":  # an oracle learns one prompt: a batch is several samples of it in one round
        prompts = [prompts[0], prompts[0]]
    opts = pm.options(row, "regex")
    results = ctrldec.Decoder(model, tok).generate_batch(prompts, **opts)
    assert len(results) == 2
    for i, (prompt, result) in enumerate(zip(prompts, results)):
        _valid(result, opts["constraint"])
        if row != "ASAp":  # ASAp's oracle learns from each call: a second call is another round
            single = pm.options(row, "regex")
            if "seed" in single:
                single["seed"] += i  # generate_batch gives row i the stream of seed + i
            assert ctrldec.generate(model, tok, prompt, **single).token_ids == result.token_ids


def _hf(tok, model, row):
    constraint = ctrldec.Regex(pm.REGEX)
    ids = torch.tensor([tok(PROMPT)["input_ids"]])
    common = {"max_new_tokens": 40, "pad_token_id": 0}
    torch.manual_seed(0)
    if row in ("greedy", "sampling"):
        out = model.generate(ids, logits_processor=[constraint.logits_processor(tok, max_new_tokens=40)],
                             do_sample=row == "sampling", **common)
    elif row == "ASAp":
        out = model.generate(ids, logits_processor=[ctrldec.ASApOracle().logits_processor(constraint, tok)], do_sample=True, **common)
    elif row in ("AWRS", "SMC"):
        run = ctrldec.custom_generate(constraint, tokenizer=tok, sampler=pm.row_options(row)["sampler"], seed=1)
        out = model.generate(ids, custom_generate=run, **common)
    else:
        search = {"contrastive": {"penalty_alpha": 0.6, "top_k": 3}, "beam": {"num_beams": 3},
                  "diverse beam": {"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 0.5}}[row]
        out = model.generate(ids, custom_generate=ctrldec.custom_generate(constraint, tokenizer=tok), do_sample=False,
                             **search, **common)
    text = tok.decode([t for t in out[0, ids.shape[1]:].tolist() if t != 0])
    assert constraint.is_prefix(text), text


NOS = sorted(pm.NO)


@pytest.mark.parametrize("row,column", NOS, ids=[f"{r}-{c}" for r, c in NOS])
def test_no_cell_raises_naming_both_parts(tok, model, draft_model, row, column):
    with pytest.raises(ctrldec.CtrldecError) as err:
        _run(model, tok, row, column, draft_model)
    message = str(err.value)
    assert pm.ROW_NAMES[row] in message and pm.COLUMN_NAMES[column] in message, message


def test_every_cell_is_filled():
    assert set(pm.NO) <= {(r, c) for r in pm.ROWS for c in pm.COLUMNS}
    assert len(YES) + len(pm.NO) == len(pm.ROWS) * len(pm.COLUMNS)


@pytest.mark.parametrize("path", list(pm.TARGETS), ids=lambda p: p.name)
def test_the_documented_matrix_is_current(path):
    assert path.read_text(encoding="utf-8") == pm.updated(path), f"run: python tests/pipeline_matrix.py --write ({path.name})"
