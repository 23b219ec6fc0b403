"""``ctrldec bench memory``: a case runs in its own process and reports its peak growth."""

from __future__ import annotations

import pytest

from ctrldec.bench import memory


def test_long_string_case_holds_its_bound(default_tokenizer):
    report = memory.run(["long-string"])
    (row,) = report["cases"]
    assert row["ok"], row
    assert row["outcome"].startswith(f"generated {memory.LONG} characters") and row["growth_mb"] <= memory.LONG_BOUND_MB
    table = memory.format_report(report)
    assert "| long-string:" in table and "| yes |" in table


def test_a_case_that_fails_is_reported_not_raised():
    report = memory.run(["big-grammar"], timeout=0.5)
    assert not report["ok"] and "timed out" in report["cases"][0]["outcome"]
    with pytest.raises(ValueError, match="the cases are long-string"):
        memory.run(["nope"])


def test_big_schema_is_about_ten_megabytes():
    import json

    text = json.dumps(memory.big_schema(200_000))
    assert 200_000 <= len(text) < 202_000
