"""``bench coverage``'s table states how many masks pass the mask bar's 0.5 ms, beside the p99."""

from __future__ import annotations

from ctrldec.bench.coverage import format_bench


def test_the_table_counts_the_masks_over_half_a_millisecond():
    split = {"schemas": 2, "compiled": 2, "passing": 2, "passing_reference": 2, "valid_rejected": 0, "invalid_accepted": 0,
             "disputed": 0, "compile_ms": {"n": 2, "p50": 3.0, "p99": 9.0}, "mask_us": {"n": 1234, "p50": 4.0, "p99": 480.0},
             "masks_over_500us": 11}
    report = {"schemas": 2, "engines": {"ctrldec-strict": {"splits": {"all": split}}}}
    text = format_bench(report)
    assert "ctrldec-strict: 11 of 1,234 masks over 0.5 ms (a p99 under 0.5 ms allows 12)" in text
    del split["masks_over_500us"]  # a report written before the count existed still prints
    assert "masks over" not in format_bench(report)


def test_a_splits_summary_counts_the_masks_over_half_a_millisecond():
    from ctrldec.bench.coverage import _split_summary

    lists = {"schemas": [1, 1], "compiled": [True, True], "passing": [True, False], "valid_rejected": [0, 1], "valid": [2, 3],
             "invalid_accepted": [0, 0], "disputed": [0, 0], "passing_reference": [True, False], "compile_ms": [1.0, 2.0],
             "mask_us": [10.0, 500.0, 500.5, 700.0]}
    summary = _split_summary(lists)
    assert summary["masks_over_500us"] == 2 and summary["mask_us"]["n"] == 4
    assert summary["passing"] == 1 and summary["valid_rejected"] == 1 and summary["valid_of_compiled"] == 5
