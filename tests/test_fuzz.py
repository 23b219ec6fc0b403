"""Differential fuzzing (``ctrldec bench fuzz``) at a small budget, and the cases it found, kept.

The corpus under ``tests/fuzz_corpus/`` holds every disagreement the fuzzer has found (with why):
ctrldec must now agree with the reference on each, or refuse the schema in strict mode (never
accept what the reference rejects).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import byte_level_tokenizer

import ctrldec
from ctrldec.bench import fuzz

CORPUS = sorted((Path(__file__).parent / "fuzz_corpus").glob("*.jsonl"))
CASES = [json.loads(line) for path in CORPUS for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("case", CASES, ids=[c.get("why", c["text"])[:60] for c in CASES])
def test_kept_case_agrees_with_the_reference(case):
    ours, reference = fuzz.replay_case(case)
    assert reference == case["reference"], "the reference changed its mind: check the stored verdict"
    assert ours in (None, reference), f"ctrldec says {ours}, the reference {reference}"


def test_the_corpus_pins_verdicts_not_only_refusals():
    verdicts = [fuzz.replay_case(c)[0] for c in CASES]
    assert sum(v is not None for v in verdicts) >= len(CASES) // 2


def _tokenizer():
    return byte_level_tokenizer()


@pytest.mark.slow
def test_fuzz_finds_no_disagreement_in_its_ci_budget():
    """CI's budget (``CTRLDEC_FUZZ_SECONDS``, 120 s by default); the bench runs for 30 minutes.
    Mask probes of grammars are left out here: a known gap (below) makes them fail."""
    report = fuzz.run(float(os.environ.get("CTRLDEC_FUZZ_SECONDS", 120)), _tokenizer(), seed=0)
    print(fuzz.format_report(report))
    assert report["schemas_compiled"] > 50 and report["grammars_compiled"] > 20 and report["token_replays"] > 100
    found = [d for d in report["disagreements"] if not (d["kind"] == "grammar" and d["what"] == "tokens")]
    assert not found, fuzz.format_report({**report, "disagreements": found})


@pytest.mark.xfail(strict=True, reason="known gap: the mask allows a digit after '{8' though NUM NUM can never be lexed apart")
def test_adjacent_greedy_terminals_leave_no_dead_end():
    grammar = ctrldec.Grammar('start: "{" NUM NUM | "x"\nNUM: /[0-9]+/\n')
    tok = _tokenizer()
    m = grammar.matcher(tok)
    assert m.advance_bytes(b"{")
    assert not m.advance_bytes(b"8"), "no sentence starts with '{8': greedy lexing reads every digit run as one NUM"


def test_fuzzer_reports_a_planted_disagreement(monkeypatch):
    """The fuzzer can fail: with a validator that rejects everything, valid instances disagree."""

    class Nothing:
        def is_valid(self, _value):
            return False

    monkeypatch.setattr(fuzz, "validator", lambda schema: Nothing())
    report = fuzz.run(3.0, None, seed=0, grammar_share=0.0)
    assert report["disagreements"] and report["disagreements"][0]["what"] == "verdict"


def test_cli_budget_words():
    from ctrldec.cli import _seconds

    assert (_seconds("90"), _seconds("30s"), _seconds("10m"), _seconds("1h")) == (90, 30, 600, 3600)
    with pytest.raises(ctrldec.CtrldecError, match="--budget"):
        _seconds("ten")
