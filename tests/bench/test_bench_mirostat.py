"""``bench mirostat`` on a tiny model: the table has the ceiling row and one row per tau."""

from __future__ import annotations

from helpers import byte_level_tokenizer, tiny_llama

from ctrldec.bench import mirostat


def test_bench_mirostat_reports_each_tau_and_the_ceiling():
    tok = byte_level_tokenizer()
    report = mirostat.run(tiny_llama(len(tok), seed=2), tok, taus=[2.0, 3.0], prompts=2, max_new_tokens=12)
    assert [r["tau"] for r in report["rows"]] == [None, 2.0, 3.0]
    for r in report["rows"]:
        assert 0 < r["tokens"] <= 24 and r["mean_surprise"] >= 0
    assert report["rows"][0]["error"] is None and report["rows"][1]["error"] == report["rows"][1]["mean_surprise"] - 2.0
    text = mirostat.format_report(report)
    assert "none" in text and "ceiling" in text
