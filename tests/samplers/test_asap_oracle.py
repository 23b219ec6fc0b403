"""The ASAp oracle: EFG updates by hand, the sparse reweighting, the node limit, files and keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ctrldec
from ctrldec.errors import CtrldecError
from ctrldec.samplers.asap import ROOT, ASApOracle, ASApStep, OracleKey, Step

EOS = 9
KEY = OracleKey((1, 2, 3), "c1", "t1", "Regex('x')")


def _two_paths() -> ASApOracle:
    """Root: token 1 (p .5), token 2 (p .3), EOS (p .2). After 1: only token 3 (p .4); after 1 3: only
    EOS (p .25). After 2: EOS (p .5) and one other token (p .1), never explored."""
    oracle = ASApOracle()
    root = (0.2, 0.8, 2)
    oracle.observe([Step(1, math.log(0.5), *root), Step(3, math.log(0.4), 0.0, 0.4, 1),
                    Step(EOS, math.log(0.25), 0.25, 0.0, 0, eos=True)])
    return oracle


def test_efg_is_updated_bottom_up_with_unexplored_children_counting_one():
    oracle = _two_paths()
    n1 = oracle.child(ROOT, 1)
    n13 = oracle.child(n1, 3)
    assert oracle.efg(n13) == pytest.approx(0.25)
    assert oracle.efg(n1) == pytest.approx(0.4 * 0.25)  # its only allowed token is explored
    assert oracle.efg(ROOT) == pytest.approx(0.2 + 0.3 + 0.5 * 0.1)  # EOS 1, token 2 unexplored: 1
    oracle.observe([Step(2, math.log(0.3), 0.2, 0.8, 2), Step(EOS, math.log(0.5), 0.5, 0.1, 1, eos=True)])
    n2 = oracle.child(ROOT, 2)
    assert oracle.efg(n2) == pytest.approx(0.5 + 0.1)
    assert oracle.efg(ROOT) == pytest.approx(0.2 + 0.5 * 0.1 + 0.3 * 0.6)  # every allowed token explored
    assert oracle.log_p_language_bound == pytest.approx(math.log(0.43))
    before = oracle.efg(ROOT)
    oracle.observe([Step(2, math.log(0.3), 0.2, 0.8, 2), Step(EOS, math.log(0.5), 0.5, 0.1, 1, eos=True)])
    assert oracle.efg(ROOT) == before and len(oracle) == 4  # observing a path again changes nothing


def test_reweighting_is_p_times_efg_renormalised():
    oracle = _two_paths()
    logp = torch.full((10,), -math.inf, dtype=torch.float64)
    logp[[1, 2, EOS]] = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()
    q = torch.softmax(oracle.reweighted(logp, ROOT), -1)
    expected = np.array([0.5 * 0.1, 0.3, 0.2]) / (0.05 + 0.3 + 0.2)
    assert q[[1, 2, EOS]].numpy() == pytest.approx(expected)
    assert q.sum().item() == pytest.approx(1.0)
    assert torch.equal(oracle.reweighted(logp, -1), logp)  # an unexplored node: masking


def test_step_stats_split_eos_from_the_other_allowed_tokens():
    logp = torch.full((10,), -math.inf, dtype=torch.float64)
    logp[[1, 2, EOS]] = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()
    z_eos, z_open, n_open = ASApOracle.step_stats(logp, [EOS])
    assert (z_eos, n_open) == (pytest.approx(0.2), 2) and z_open == pytest.approx(0.8)


def test_past_max_nodes_paths_are_cut_and_estimates_stay_over_estimates():
    full, small = ASApOracle(), ASApOracle(max_nodes=2)
    path = [Step(1, math.log(0.5), 0.0, 1.0, 2), Step(3, math.log(0.4), 0.0, 1.0, 2),
            Step(EOS, math.log(0.1), 0.1, 0.0, 0, eos=True)]
    for oracle in (full, small):
        oracle.observe(path)
    assert len(small) == 2 and small.dropped == 1 and len(full) == 3
    assert small.efg(ROOT) >= full.efg(ROOT) and small.efg(small.child(ROOT, 1)) == 1.0
    assert small.memory_size_bytes < full.memory_size_bytes


def test_save_and_load_give_identical_distributions(tmp_path):
    oracle = _two_paths()
    oracle.bind(KEY)
    oracle.save(tmp_path / "o.npz")
    again = ASApOracle.load(tmp_path / "o.npz", key=KEY)
    assert again.key == KEY and len(again) == len(oracle) and again.samples == 1
    logp = torch.log_softmax(torch.randn(10, dtype=torch.float64), -1)
    for node in range(len(oracle)):
        assert torch.equal(again.reweighted(logp, node), oracle.reweighted(logp, node))
        assert again.efg(node) == oracle.efg(node)
    assert again.child(again.child(ROOT, 1), 3) == oracle.child(oracle.child(ROOT, 1), 3)


def test_an_oracle_for_another_prompt_or_constraint_is_refused(tmp_path):
    oracle = _two_paths()
    oracle.bind(KEY)
    oracle.save(tmp_path / "o.npz")
    with pytest.raises(CtrldecError, match="learned constraint Regex"):
        ASApOracle.load(tmp_path / "o.npz", key=OracleKey(KEY.prompt, "other", "t1", "Regex('y')"))
    with pytest.raises(CtrldecError, match="learned a prompt of 3 tokens, not this one of 2"):
        oracle.bind(OracleKey((1, 2), "c1", "t1"))
    with pytest.raises(CtrldecError, match="tokenizer"):
        oracle.bind(OracleKey(KEY.prompt, "c1", "t2"))


@pytest.mark.parametrize("content", [b"", b"not a zip file", None], ids=["empty", "garbage", "foreign npz"])
def test_a_corrupt_oracle_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "o.npz"
    if content is None:
        np.savez(path, meta=np.array('{"format": "something else"}'))
    else:
        path.write_bytes(content)
    with pytest.raises(CtrldecError, match="not an ASAp oracle file"):
        ASApOracle.load(path)
    with pytest.raises(CtrldecError, match="cannot read"):
        ASApOracle.load(tmp_path / "missing.npz")


def test_a_tampered_trie_is_refused(tmp_path):
    oracle = _two_paths()
    oracle.save(tmp_path / "o.npz")
    with np.load(tmp_path / "o.npz") as data:
        columns = dict(data)
    columns["efg"][1] = 7.0
    np.savez(tmp_path / "bad.npz", **columns)
    with pytest.raises(CtrldecError, match="corrupt"):
        ASApOracle.load(tmp_path / "bad.npz")


def test_asap_equals_masking_where_masking_is_exact():
    """Every token allowed after every prefix (each prefix viable and complete): each allowed mass is
    1, so every EFG is 1 and ASAp's distribution is masking's at every node it has learned."""
    info = ctrldec.TokenizerInfo([b"a", b"b", b""], special_ids={2}, eos_token_ids=[2])
    constraint = ctrldec.Regex("[ab]*")
    oracle = ASApOracle()
    rng = torch.Generator().manual_seed(0)

    def logits(prefix):  # a fixed random "model"
        return torch.randn(3, generator=torch.Generator().manual_seed(hash(tuple(prefix)) % 2**31), dtype=torch.float64)

    for _ in range(60):
        m, step, prefix = constraint.matcher(info), ASApStep(oracle, [2]), []
        while len(prefix) < 6:
            token = step.choose(logits(prefix), m, rng).token
            if token == 2:
                break
            m.advance(token)
            prefix.append(token)
        oracle.observe(step.steps)
    assert len(oracle) > 10
    for node in range(len(oracle)):
        assert oracle.efg(node) == pytest.approx(1.0, abs=1e-12)
        logp = torch.log_softmax(torch.randn(3, dtype=torch.float64), -1)
        assert torch.softmax(oracle.reweighted(logp, node), -1).numpy() == pytest.approx(torch.exp(logp).numpy(), abs=1e-12)
