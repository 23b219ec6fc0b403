"""``ctrldec bench ead`` and the benches' pictures on a tiny model: threshold 0 is the full model
alone (full share and agreement 100%), a threshold no entropy reaches leaves every token to the
small model, and the plots are written."""

from __future__ import annotations

import copy
import json

import pytest
from helpers import byte_level_tokenizer, tiny_llama

from ctrldec.bench import ead, plots

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}}, "required": ["a", "b"]}
TASKS = {"gsm8k_test.jsonl": "question", "bbh_tracking_shuffled_objects_three.jsonl": "input", "last_letters.jsonl": "question"}


@pytest.fixture(scope="module")
def tiny():
    tok = copy.deepcopy(byte_level_tokenizer())
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    model = tiny_llama(len(tok), seed=1)
    return model, tok


@pytest.fixture
def data(tmp_path):
    for name, key in TASKS.items():
        (tmp_path / name).write_text(json.dumps({key: "The quick brown fox"}) + "\n", encoding="utf-8")
    (tmp_path / "Toy.jsonl").write_text(json.dumps({"id": "s0", "split": "Toy", "schema": json.dumps(SCHEMA)}) + "\n",
                                        encoding="utf-8")
    return tmp_path


def test_threshold_zero_is_the_full_model_and_a_high_one_the_small_model(tiny, data, tmp_path):
    model, tok = tiny
    report = ead.run(model, tok, free_text=str(data), jsonschemabench=str(data), splits=["Toy"], limit=3,
                     thresholds=(0.0, 100.0), layers=1, max_new_tokens=24)
    assert report["layers"] == 1 and set(report["sets"]) == {"free", "schemas"}
    for part in report["sets"].values():
        rows = part["rows"]
        assert rows["0"]["full_share"] == 1.0 and rows["0"]["agreement"] == 1.0 and rows["0"]["loglik_gap"] == 0.0
        assert rows["100"]["full_share"] == 0.0
    assert report["sets"]["schemas"]["rows"]["100"]["valid"] == 1
    text = ead.format_report(report)
    assert "full alone" in text and "threshold" in text
    ead.plot(report, str(tmp_path / "ead.png"))
    assert (tmp_path / "ead.png").stat().st_size > 1000


def test_coverage_and_speed_pictures_are_written(tmp_path):
    split = {"schemas": 10, "passing": 7}
    coverage = {"schemas": 20, "engines": {"ctrldec": {"splits": {"A": split, "B": split, "all": {"schemas": 20, "passing": 14}}},
                                           "peer": {"splits": {"A": split, "B": split, "all": {"schemas": 20, "passing": 14}}}}}
    plots.coverage(coverage, str(tmp_path / "coverage.png"))
    rows = {"a": {"tokens_per_s": 25.0}, "xa": {"tokens_per_s": 40.0}}
    plots.speed({"pairs": 2, "max_new_tokens": 16, "configs": rows, "free_text": rows}, {"a": "(a) HF"}, str(tmp_path / "speed.png"))
    assert (tmp_path / "coverage.png").stat().st_size > 1000 and (tmp_path / "speed.png").stat().st_size > 1000
