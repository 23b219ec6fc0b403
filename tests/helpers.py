"""Tokenizers and models the tests build themselves (no downloads, no default model needed)."""

from __future__ import annotations

import json
from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    'The quick brown fox jumps over the lazy dog. {"name": "value", "n": 12, "ok": true}',
    "SELECT name, count(*) FROM users WHERE age >= 18 GROUP BY name ORDER BY name;",
    "1. e4 e5 2. Nf3 Nc6 3. Bb5 a6 -- (1 + 2) * 3 / 4 ^ 5",
    "café naïve résumé über São Paulo — 東京 北京 こんにちは 😀 🚀",
    "a,b,c\n1,2,3\n\"quoted, field\",x,y\n",
] * 20


@lru_cache(maxsize=None)
def byte_level_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE tokenizer trained on a small corpus, with an EOS token."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<eos>")


@lru_cache(maxsize=None)
def sentencepiece_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A Llama-2-style tokenizer: ``▁`` for spaces, a dummy prefix, ``<0xNN>`` byte fallback."""
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"])
    base = Tokenizer(models.BPE(unk_token="<unk>"))
    base.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    base.train_from_iterator(CORPUS, trainer)
    spec = json.loads(base.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tk.normalizer = base.normalizer
    tk.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tk.add_special_tokens(["<unk>", "<s>", "</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def tiny_llama(vocab_size: int, seed: int = 0):
    """A random-weight 2-layer Llama: real HF generate code paths, milliseconds per step."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def peaked_llama(vocab_size: int, scale: float, seed: int = 0):
    """``tiny_llama`` with its output layer scaled by ``scale``: more peaked distributions, so that
    drafts get kept and outputs concentrate."""
    import torch

    model = tiny_llama(vocab_size, seed=seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model
