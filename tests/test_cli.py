"""The ``ctrldec`` command: output only on stdout; bad input is one line on stderr, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import tiny_llama


def ctrldec(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctrldec.cli", *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctrldec: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_model_path():
    assert_one_line_error(ctrldec("generate", "hi", "--model", "/no/such/model"), "does not exist", "/no/such/model")


def test_directory_that_is_not_a_causal_lm(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}))
    assert_one_line_error(ctrldec("generate", "hi", "--model", str(tmp_path)), "not a causal language model", "t5")


def test_folder_without_config(tmp_path):
    assert_one_line_error(ctrldec("generate", "hi", "--model", str(tmp_path)), "config.json")


def test_tokenizer_that_cannot_be_mapped_to_bytes(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[EOS]": 1, "hello": 2, "##ing": 3, "1": 4}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", eos_token="[EOS]").save_pretrained(tmp_path)
    tiny_llama(len(vocab)).save_pretrained(tmp_path)
    result = ctrldec("generate", "hello", "--model", str(tmp_path), "--regex", "[0-9]+", "--no-chat-template")
    assert_one_line_error(result, "cannot map tokens", "WordPiece")


def test_grammar_errors_come_before_loading_the_model(tmp_path):
    bad = tmp_path / "bad.lark"
    bad.write_text('start: WORD\nWORD: /(?<=x)a/\n')
    assert_one_line_error(ctrldec("generate", "hi", "--grammar", str(bad)), "WORD", "line 2")
    assert_one_line_error(ctrldec("generate", "hi", "--regex", "a(?=b)"), "lookaround")


def test_schema_policy_flags_reach_the_constraint(tmp_path):
    from ctrldec.cli import _constraint, _parser
    from ctrldec.constraints.jsonschema.compiler import Policy

    path = tmp_path / "s.json"
    path.write_text(json.dumps({"type": "object", "properties": {"a": {}}, "minProperties": 2}))
    assert _constraint(_parser().parse_args(["generate", "hi", "--schema", str(path)])).policy == Policy("forbid")
    flags = ["--extra-properties", "allow", "--max-string-length", "5", "--max-items", "3"]
    assert _constraint(_parser().parse_args(["generate", "hi", "--schema", str(path), *flags])).policy == Policy("allow", 5, 3)
    assert_one_line_error(ctrldec("generate", "hi", "--schema", str(path)), "extra_properties='forbid' leaves no instance")
    assert_one_line_error(ctrldec("generate", "hi", "--schema", str(path), "--max-items", "-1"), "max_items must be")


def test_bad_numbers():
    assert_one_line_error(ctrldec("generate", "hi", "--max-new-tokens", "0"), "max-new-tokens")
    assert_one_line_error(ctrldec("generate", "hi", "--mirostat", "0"), "tau must be a positive number")
    assert_one_line_error(ctrldec("generate", "hi", "--mirostat", "3", "--mirostat-eta", "-1"), "eta")
    assert_one_line_error(ctrldec("generate", "hi", "--entropy-temperature", "1.5:0.5"), "t_min must be <= t_max")
    assert_one_line_error(ctrldec("generate", "hi", "--entropy-temperature", "1.5"), "T_MIN:T_MAX")
    assert_one_line_error(ctrldec("generate", "hi", "--sampler", "smc", "--particles", "0"), "at least one particle")
    assert_one_line_error(ctrldec("generate", "hi", "--sampler", "smc", "--ess-threshold", "1.5"), "ess_threshold")
    assert_one_line_error(ctrldec("generate", "hi", "--sampler", "awrs", "--temperature", "0"), "--temperature > 0")
    assert_one_line_error(ctrldec("generate", "hi", "--particles", "4"), "--particles needs --sampler smc")
    assert_one_line_error(ctrldec("generate", "hi", "--weights", "exact"), "--weights exact needs --sampler awrs or smc")


def test_asap_arguments_are_checked_before_the_model_loads(tmp_path):
    asap = ("generate", "hi", "--regex", "a|b", "--sampler", "asap")
    assert_one_line_error(ctrldec(*asap, "--temperature", "0"), "greedy decoding is meaningless with ASAp")
    assert_one_line_error(ctrldec(*asap, "--temperature", "0.7"), "temperature 1")
    assert_one_line_error(ctrldec("generate", "hi", "--sampler", "asap"), "needs a constraint")
    assert_one_line_error(ctrldec("generate", "hi", "--samples", "3"), "need --sampler asap")
    assert_one_line_error(ctrldec(*asap, "--samples", "0"), "at least 1")
    bad = tmp_path / "o.npz"
    bad.write_bytes(b"garbage")
    assert_one_line_error(ctrldec(*asap, "--oracle", str(bad)), "not an ASAp oracle file")


@pytest.mark.model
def test_generate_with_asap_prints_k_outputs_and_keeps_its_oracle(tmp_path):
    oracle = tmp_path / "o.npz"
    args = ("generate", "Is water wet? Answer yes or no.", "--regex", "(yes|no)", "--sampler", "asap", "--samples", "5",
            "--oracle", str(oracle), "--seed", "1")
    result = ctrldec(*args, "--batch", "2")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5 and set(result.stdout.split()) <= {"yes", "no"}
    assert oracle.exists() and "5 samples" in result.stderr
    again = ctrldec(*args)
    assert again.returncode == 0 and "10 samples" in again.stderr
    other = ctrldec("generate", "Is fire cold?", *args[2:])
    assert_one_line_error(other, "learned a prompt")


@pytest.mark.model
@pytest.mark.parametrize("sampler,weights", [("awrs", "estimate"), ("smc", "estimate"), ("smc", "exact")])
def test_generate_with_awrs_and_smc(sampler, weights):
    particles = ["--particles", "4"] if sampler == "smc" else []
    result = ctrldec("generate", "Is water wet? Answer yes or no.", "--regex", "(yes|no)", "--sampler", sampler,
                     *particles, "--weights", weights, "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"yes", "no"}
    assert ("particles complete" in result.stderr) == (sampler == "smc")


@pytest.mark.model
def test_generate_with_mirostat_and_a_regex():
    result = ctrldec("generate", "Name a color.", "--regex", "[a-z]{3,10}", "--mirostat", "3", "--seed", "1",
                     "--entropy-temperature", "0.7:1.3")
    assert result.returncode == 0, result.stderr
    assert 3 <= len(result.stdout.strip()) <= 10 and result.stdout.strip().isalpha()


@pytest.mark.model
def test_generate_with_regex_prints_only_the_output():
    result = ctrldec("generate", "Is water wet? Answer yes or no.", "--regex", "(yes|no)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"yes", "no"}


@pytest.mark.model
def test_generate_with_grammar_and_truncation_status(tmp_path):
    result = ctrldec("generate", "Write a JSON list of three numbers.", "--grammar", "grammars/json_compact.lark", "--max-new-tokens", "2",
                     "--no-budget-aware")
    assert result.returncode == 3 and "truncated" in result.stderr
    assert result.stdout.strip()  # the output so far is still printed


@pytest.mark.model
def test_generate_budget_aware_finishes_or_refuses_in_one_line(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"type": "object", "properties": {"colors": {"type": "array", "items": {"type": "string"}}},
                                "required": ["colors"]}))
    result = ctrldec("generate", "List ten colors as JSON.", "--schema", str(path), "--max-new-tokens", "12")  # the default
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout)["colors"], list)
    assert_one_line_error(ctrldec("generate", "hi", "--regex", "[0-9]{12}", "--max-new-tokens", "4"),
                          "needs max_new_tokens >= 13")


@pytest.mark.model
def test_info_names_the_default_model():
    result = ctrldec("info")
    assert result.returncode == 0 and "SmolLM2-135M-Instruct" in result.stdout


@pytest.mark.parametrize("flags, needles", [
    (["--alpha", "0.6"], ["--alpha need --search"]),
    (["--search", "beam", "--groups", "2"], ["--search beam cannot be combined with --groups", "--beams"]),
    (["--search", "beam", "--sampler", "smc"], ["cannot be combined with --sampler smc"]),
    (["--search", "contrastive", "--alpha", "1.5"], ["alpha must be in [0, 1]"]),
    (["--search", "diverse-beam", "--beams", "6", "--groups", "4"], ["beams=6 is not divisible by groups=4"]),
    (["--search", "diverse-beam", "--diversity", "0"], ["diversity must be > 0"]),
])
def test_search_flags_are_checked_before_the_model_loads(flags, needles):
    assert_one_line_error(ctrldec("generate", "hi", "--model", "/no/such/model", *flags), *needles)


@pytest.mark.parametrize("flags, needles", [
    (["--speculative", "lookup"], ["no drafter named 'lookup'", "forced, prompt_lookup, recycling, early_exit, model"]),
    (["--speculative", "forced", "--max-draft", "0"], ["max_draft (γ) must be at least 1"]),
    (["--max-draft", "4"], ["need --speculative"]),
    (["--speculative", "model"], ["needs a draft model object"]),
    (["--speculative", "forced", "--no-fast-forward"], ["leave 'forced' out"]),
    (["--ead", "-1"], ["threshold must be a finite entropy >= 0"]),
    (["--ead", "1", "--ead-window", "0"], ["window must be an integer >= 1"]),
    (["--ead-layers", "4"], ["need --ead THRESHOLD"]),
    (["--ead", "1", "--sampler", "asap", "--samples", "2", "--regex", "a|b"], ["--ead with --sampler asap"]),
    (["--ead", "1", "--search", "contrastive"], ["ContrastiveSearch", "ead=", "hidden states"]),
])
def test_speculative_and_ead_flags_are_checked_before_the_model_loads(flags, needles):
    assert_one_line_error(ctrldec("generate", "hi", "--model", "/no/such/model", *flags), *needles)


@pytest.mark.model
def test_generate_with_speculative_drafters():
    args = ("generate", "Count from 1 to 12, separated by commas.", "--max-new-tokens", "30")
    plain = ctrldec(*args)
    drafted = ctrldec(*args, "--speculative", "forced,prompt_lookup,recycling,early_exit", "--max-draft", "4", "--early-exit", "6")
    assert plain.returncode == 0 and drafted.returncode == 0, drafted.stderr
    assert drafted.stdout == plain.stdout


@pytest.mark.model
def test_generate_with_ead_reports_the_full_models_share():
    args = ("generate", "Count from 1 to 12, separated by commas.", "--max-new-tokens", "20")
    plain = ctrldec(*args)
    switched = ctrldec(*args, "--ead", "0")
    assert plain.returncode == 0 and switched.returncode == 0, switched.stderr
    assert switched.stdout == plain.stdout  # threshold 0: the full model writes every token
    assert "ctrldec: EAD: the full model wrote" in switched.stderr
