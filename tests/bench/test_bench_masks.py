"""``ctrldec bench masks`` measures what it says on documents it can check."""

from __future__ import annotations

import json

import pytest
from helpers import byte_level_tokenizer

from ctrldec.bench import masks
from ctrldec.bench.engines import available_engines
from ctrldec.constraints import builtin_grammar_path

DOCS = [json.dumps(v) for v in ({"a": [1, 2.5, None]}, [True, {"k": "é☃"}], "text", {"nested": {"x": [[], {}]}})]


def test_ctrldec_replays_valid_documents_without_rejections():
    text = builtin_grammar_path("json").read_text()
    report = masks.run(text, DOCS, byte_level_tokenizer(), engines=["ctrldec"], compile_repeats=2, check_every=2)
    (engine,) = report["engines"]
    assert engine["valid_tokens_rejected"] == 0 and engine["dead_tokens_allowed"] == 0
    assert engine["tokens"] == report["tokens"] > 0
    assert engine["mask_us"]["n"] == report["tokens"] + len(DOCS)  # one mask per position, end included
    assert engine["accepts_us"]["n"] == report["tokens"]
    assert engine["dead_tokens_checked"] > 0
    assert "ctrldec" in masks.format_table(report)


@pytest.mark.skipif(set(available_engines()) == {"ctrldec"}, reason="no peer engine installed (pip install 'ctrldec[bench]')")
def test_peers_run_side_by_side():
    text = builtin_grammar_path("json").read_text()
    report = masks.run(text, DOCS, byte_level_tokenizer(), compile_repeats=1)
    for engine in report["engines"]:
        assert engine["error"] is None and engine["valid_tokens_rejected"] == 0, engine


def test_jsonschemabench_reader(shared_data):
    docs = masks.jsonschemabench_docs(str(shared_data / "jsonschemabench"))
    assert len(docs) > 1000 and all(isinstance(d, str) for _, d in docs)
