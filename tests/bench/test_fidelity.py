"""``bench fidelity`` end to end on a tiny random model: a few hundred samples per method."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import byte_level_tokenizer, tiny_llama

from ctrldec.bench import fidelity
from ctrldec.errors import CtrldecError

CASE = fidelity.Case("tiny", "word: carts\nword: cats\nword: ", fidelity._regex("(cat|car|cart|dog)s?"),
                     "words of different lengths", biased=True)


@pytest.fixture(scope="module")
def report():
    tok = byte_level_tokenizer()
    return fidelity.run(tiny_llama(len(tok), seed=1), tok, samples=240, particles=[2, 8], cases=[CASE], seed=0,
                        asap_samples=[10, 100, 240], asap_batch=8)


def test_every_method_has_a_row_and_smc_its_evidence(report):
    case = report["cases"][0]
    assert [r["method"] for r in case["rows"]] == ["masking (exact)", "masking", "AWRS", "SMC-2", "SMC-8", "SMC-2 exact",
                                                   "SMC-8 exact", "IS-2", "IS-8", "P* draws (floor)"]
    runs = {r["method"]: r.get("runs") for r in case["rows"]}
    assert runs["masking"] == runs["AWRS"] == 240 and runs["SMC-2"] == runs["SMC-2 exact"] == runs["IS-2"] == 120
    assert runs["SMC-8"] == runs["IS-8"] == 30
    for r in case["rows"]:
        assert r["kl"] >= 0 and 0 <= r["tv"] <= 1
    assert [(e["method"], e["particles"]) for e in case["smc"]] == [("SMC-2", 2), ("SMC-8", 8), ("SMC-2 exact", 2),
                                                                    ("SMC-8 exact", 8), ("IS-2", 2), ("IS-8", 8)]
    for e in case["smc"]:
        assert e["log_mean_ml"] == pytest.approx(case["log_p_language"], abs=1.5)
        assert e["mean_log_ml"] <= e["log_mean_ml"] + 1e-9  # Jensen
    json.dumps(report)


def test_sampled_masking_matches_its_exact_distribution(report):
    case = report["cases"][0]
    check = case["masking_check"]
    assert check["tv"] < 3 * check["tv_floor"] + 0.02
    rows = {r["method"]: r for r in case["rows"]}
    for name in ("masking", "AWRS"):  # both sample the exact masking distribution
        assert abs(rows[name]["kl"] - rows["masking (exact)"]["kl"]) < 4 * rows[name]["kl_se"] + 0.1
        assert abs(rows[name]["e_log_p"] - rows["masking (exact)"]["e_log_p"]) < 4 * rows[name]["e_log_p_se"] + 0.1


def test_smc_moves_towards_the_target(report):
    rows = {r["method"]: r for r in report["cases"][0]["rows"]}
    assert rows["masking (exact)"]["kl"] > 1.0  # the random model makes masking far from P*
    assert rows["SMC-8"]["kl"] < rows["masking (exact)"]["kl"] / 2
    assert rows["P* draws (floor)"]["kl"] < rows["SMC-8"]["kl"] and rows["SMC-8"]["kl_floor"] < rows["SMC-8"]["kl"]
    assert rows["SMC-8"]["ess"] < rows["masking"]["ess"] == 240
    assert rows["SMC-8 exact"]["kl"] < rows["masking (exact)"]["kl"] / 2


def test_importance_sampling_reference_is_exact_in_its_weights(report, tok):
    """IS-N draws from masking's exact distribution with weights P/Q_mask: its mean weight is
    P(L) (unbiased), and with many particles its output distribution reaches P*."""
    case = report["cases"][0]
    rows = {r["method"]: r for r in case["rows"]}
    assert rows["IS-8"]["kl"] < rows["masking (exact)"]["kl"] / 2
    prep = fidelity.prepare(tiny_llama(len(tok), seed=1), tok, CASE)
    draws = fidelity.sample_is(prep, 4, 20_000, seed=3)
    weights = np.exp(np.array(draws.log_ml) - prep.exact.log_p_language)  # each run's mean weight / P(L)
    assert abs(weights.mean() - 1) < 4 * weights.std(ddof=1) / len(weights) ** 0.5  # 4 SE: false failure < 1e-4
    wide = fidelity.sample_is(prep, 2_000, 20, seed=4).distribution(len(prep.exact.outputs))
    assert fidelity.divergences(wide, prep.exact.p_star)["tv"] < 0.05


def test_report_prints_and_plots(report, tmp_path):
    text = fidelity.format_report(report)
    assert "KL(Q||P*)" in text and "SMC-8 log P(L) estimate" in text and "P* draws (floor)" in text
    assert "tokenizations merged" in text  # "dog" is both do|g and d|o|g
    fidelity.plot(report, str(tmp_path / "fidelity.png"))
    assert (tmp_path / "fidelity.png").stat().st_size > 10_000


def test_asap_curve_is_exact_decreasing_and_reported(report):
    case = report["cases"][0]
    curve = case["asap"]
    assert [r["n"] for r in curve] == [10, 100, 240] and all(r["batched"]["batch"] == 8 for r in curve)
    mask = case["rows"][0]["kl"]
    kls = [r["kl"] for r in curve]
    assert kls == sorted(kls, reverse=True) and kls[-1] <= mask / 10
    assert curve[-1]["log_p_language_bound"] >= case["log_p_language"] - 1e-6
    text = fidelity.format_report(report)
    assert "ASAp after n samples" in text and "KL B=8" in text and "of masking's" in text


def test_methods_can_be_restricted_to_asap(tok):
    report = fidelity.run(tiny_llama(len(tok), seed=1), tok, samples=20, particles=[], cases=[CASE], methods=["asap"],
                          asap_samples=[10], asap_batch=1)
    case = report["cases"][0]
    assert [r["method"] for r in case["rows"]] == ["masking (exact)", "P* draws (floor)"]
    assert len(case["asap"]) == 1 and case["asap"][0]["batched"] is None
    fidelity.format_report(report)
    with pytest.raises(CtrldecError, match="unknown method"):
        fidelity.run(None, None, methods=["nope"])


def test_draws_refuse_an_output_outside_the_language():
    draws = fidelity.Draws({(1, 2): 0})
    draws.add([((1, 2), 0.0), ((1, 2), np.log(3.0))])
    draws.add([])
    assert draws.runs == 2 and draws.failed == 1 and draws.distribution(1).tolist() == [1.0]
    assert draws.ess() == pytest.approx(1.0)  # one run, its two copies of the output merged
    with pytest.raises(CtrldecError, match="not in the constraint's language"):
        draws.add([((3,), 0.0)])


def test_unknown_constraint_names_the_choices():
    with pytest.raises(CtrldecError, match="binary, json, words, yesno"):
        fidelity.run(None, None, cases=["nope"])


def test_cli_checks_its_arguments_before_loading_a_model(capsys):
    from ctrldec.cli import main

    assert main(["bench", "fidelity", "--particles", "4,x"]) == 2
    assert main(["bench", "fidelity", "--constraints", "binary,nope"]) == 2
    assert main(["bench", "fidelity", "--asap-samples", "10,x"]) == 2
    assert main(["bench", "fidelity", "--methods", "asap,nope"]) == 2
    assert main(["bench", "asap", "--constraints", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--asap-samples takes comma-separated integers" in err and "unknown method(s) nope" in err
    assert "--particles takes comma-separated integers" in err and "unknown constraint(s) nope" in err
