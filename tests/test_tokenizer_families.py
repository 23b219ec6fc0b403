"""Every tokenizer family Hugging Face causal models use, trained here (no downloads).

For each: vocabulary bytes round trip, the mask equals an oracle over the whole vocabulary (the
byte automaton: a token is allowed exactly when the text so far plus its bytes can still be
completed, EOS exactly when the text so far is complete), and the HF processor makes a tiny random
model write JSON that the jsonschema validator accepts.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache

import jsonschema
import pytest
from helpers import CORPUS, byte_level_tokenizer, sentencepiece_tokenizer, tiny_llama
from test_vocab import random_texts
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

import ctrldec
from ctrldec.constraints import tokenizer_info

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "n": {"type": "integer", "minimum": 0, "maximum": 99},
                   "tags": {"type": "array", "items": {"enum": ["a", "café", "東京"]}, "maxItems": 2}},
    "required": ["name", "n"],
}
TEXTS = ['{"name":"x","n":7}', '{"name":"café","n":42,"tags":["東京","a"]}', '{"name":"","n":0,"tags":[]}']


@lru_cache(maxsize=None)
def unigram_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A T5/ALBERT-style Unigram tokenizer (``▁`` for spaces, a dummy prefix) with byte fallback."""
    base = Tokenizer(models.Unigram())
    base.pre_tokenizer = pre_tokenizers.Metaspace()
    base.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    spec = json.loads(base.to_str())
    vocab = [tuple(x) for x in spec["model"]["vocab"]]
    have = {piece for piece, _ in vocab}
    vocab += [(f"<0x{b:02X}>", -20.0) for b in range(256) if f"<0x{b:02X}>" not in have]
    tk = Tokenizer(models.Unigram(vocab, unk_id=spec["model"]["unk_id"], byte_fallback=True))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tk.add_special_tokens(["<pad>", "</s>", "<unk>"])
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


@lru_cache(maxsize=None)
def added_tokens_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with added tokens inside the vocabulary: plain text ones (a chat model's
    ``{"name":`` shortcut) and special ones (``<|im_end|>``, a tool tag)."""
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(byte_level_tokenizer().backend_tokenizer.to_str()),
                                  eos_token="<eos>", pad_token="<eos>")
    tok.add_tokens(['{"name":', '"n":', " café"])
    tok.add_special_tokens({"additional_special_tokens": ["<|im_end|>", "<|tool|>"]})
    return tok


def plain(text: str) -> str:
    return text


def dummy_prefix(text: str) -> str:
    """Llama-2 style: a ``▁`` is always prepended; its bytes are a leading space."""
    return " " + text


def metaspace_prefix(text: str) -> str:
    """T5 style (``Metaspace``, prepend "always"): the ``▁`` is prepended unless the text starts
    with a space already."""
    return text if text.startswith(" ") else " " + text


FAMILIES = {
    "byte-level BPE": (byte_level_tokenizer, 0, plain),
    "SentencePiece BPE, byte fallback": (sentencepiece_tokenizer, 0, dummy_prefix),
    "Unigram, byte fallback": (unigram_tokenizer, 0, metaspace_prefix),
    "added and special tokens": (added_tokens_tokenizer, 0, plain),
    "logits wider than the tokenizer": (byte_level_tokenizer, 37, plain),
}


@pytest.fixture(params=list(FAMILIES), scope="module")
def family(request):
    make, wider, prefix = FAMILIES[request.param]
    tok = make()
    return tok, len(tok) + wider, prefix


def test_vocabulary_bytes_round_trip(family):
    tok, width, prefix = family
    info = tokenizer_info(tok, width)
    bad = []
    for text in random_texts(300, seed=1) + TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if info.decode_bytes(ids) != prefix(text).encode("utf-8"):
            bad.append(text)
    assert not bad, f"{len(bad)} texts do not round trip, e.g. {bad[:3]}"
    specials = set(tok.all_special_ids)
    assert all(info.token_bytes[t] == b"" for t in specials), "special tokens must have no bytes"
    assert all(info.token_bytes[t] == b"" for t in range(len(tok), width)), "ids past the tokenizer are never text"


def test_mask_equals_the_byte_oracle_over_the_whole_vocabulary(family):
    tok, width, _ = family
    info = tokenizer_info(tok, width)
    constraint = ctrldec.JSONSchema(SCHEMA)
    rng = random.Random(0)
    for text in TEXTS:
        data = text.encode()
        for cut in sorted(rng.sample(range(len(data) + 1), 6)):
            prefix = data[:cut]
            m = constraint.matcher(info)
            if not m.advance_bytes(prefix):
                continue  # a cut inside a character
            allowed = set(m.allowed_token_ids().tolist())
            expected = {t for t, b in enumerate(info.token_bytes) if b and constraint.is_prefix(prefix + b)}
            if constraint.matches(prefix):
                expected |= set(info.eos_token_ids)
            assert allowed == expected, (
                f"after {prefix!r}: missing {[info.token_bytes[t] for t in sorted(expected - allowed)][:8]}, "
                f"extra {[info.token_bytes[t] for t in sorted(allowed - expected)][:8]}"
            )


def test_processor_makes_a_tiny_model_write_valid_json(family):
    import torch

    tok, width, _ = family
    model = tiny_llama(width, seed=3)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    info = tokenizer_info(tok, width)
    check = jsonschema.Draft202012Validator(SCHEMA)
    prompt = torch.tensor([tok("Write JSON:", add_special_tokens=False)["input_ids"]])
    for seed in range(3):
        torch.manual_seed(seed)
        processor = ctrldec.JSONSchema(SCHEMA).logits_processor(tok, vocab_size=width, max_new_tokens=48)
        out = model.generate(prompt, logits_processor=[processor], max_new_tokens=48, do_sample=True,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        new = [t for t in out[0, prompt.shape[1]:].tolist() if t not in info.eos_token_ids]
        text = info.decode_bytes(new).decode("utf-8")
        assert check.is_valid(json.loads(text)), text
