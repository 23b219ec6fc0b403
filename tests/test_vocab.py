"""Vocabulary bytes: token id -> the exact bytes it adds, for both tokenizer styles."""

from __future__ import annotations

import random

import pytest
from helpers import byte_level_tokenizer, sentencepiece_tokenizer

from ctrldec import TokenizerError, TokenizerInfo

PIECES = [
    "hello", "world", "The", "json", "x", "42", "3.14", "-", "_", "{", "}", '"', ":", ",", "\\",
    "café", "naïve", "Ünïcödé", "ß", "Ærøskøbing",  # accents
    "東京", "北京市", "こんにちは", "한국어", "中文字符",  # CJK
    "😀", "🚀", "👩‍💻", "🇫🇷", "🧪",  # emoji, a ZWJ sequence, a flag
    " ", "  ", "   ", "\t", "\n", "\n\n", " \t \n", "\r\n", "        ",  # whitespace runs
]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def roundtrip_failures(tokenizer, expected_prefix: str = "") -> list[str]:
    info = TokenizerInfo.from_huggingface(tokenizer, cache=False)
    failures = []
    for text in random_texts(1000):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if info.decode_bytes(ids) != (expected_prefix + text).encode("utf-8"):
            failures.append(text)
    return failures


@pytest.mark.model
def test_default_tokenizer_bytes_roundtrip_1000_texts(default_tokenizer):
    assert roundtrip_failures(default_tokenizer) == []


def test_built_byte_level_tokenizer_roundtrip():
    assert roundtrip_failures(byte_level_tokenizer()) == []


def test_sentencepiece_tokenizer_roundtrip_1000_texts():
    # Llama-2-style tokenizers prepend a dummy "▁" to the text: its bytes are a leading space,
    # which is what the first token adds when it follows other text (as generated tokens do).
    assert roundtrip_failures(sentencepiece_tokenizer(), expected_prefix=" ") == []


def test_sentencepiece_byte_fallback_tokens_are_single_bytes():
    tok = sentencepiece_tokenizer()
    info = TokenizerInfo.from_huggingface(tok, cache=False)
    assert info.kind == "sentencepiece"
    assert info.token_bytes[tok.convert_tokens_to_ids("<0xE6>")] == b"\xe6"
    assert info.token_bytes[tok.convert_tokens_to_ids("<0x0A>")] == b"\n"


def test_special_tokens_have_no_bytes():
    tok = byte_level_tokenizer()
    info = TokenizerInfo.from_huggingface(tok, cache=False)
    assert info.token_bytes[tok.eos_token_id] == b""
    assert tok.eos_token_id in info.special_ids
    assert info.eos_token_ids == (tok.eos_token_id,)


def test_logits_wider_than_tokenizer_pads_with_empty_ids():
    tok = byte_level_tokenizer()
    info = TokenizerInfo.from_huggingface(tok, vocab_size=len(tok) + 13, cache=False)
    assert info.vocab_size == len(tok) + 13
    assert info.token_bytes[-13:] == [b""] * 13


def test_logits_narrower_than_tokenizer_drops_ids():
    tok = byte_level_tokenizer()
    info = TokenizerInfo.from_huggingface(tok, vocab_size=len(tok) - 5, cache=False)
    assert info.vocab_size == len(tok) - 5


def test_wordpiece_tokenizer_is_refused_with_a_clear_error():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordPiece({"[UNK]": 0, "hello": 1, "##ing": 2}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")
    with pytest.raises(TokenizerError, match="WordPiece"):
        TokenizerInfo.from_huggingface(tok, cache=False)


def test_disk_cache_gives_the_same_table(tmp_path, monkeypatch):
    monkeypatch.setenv("CTRLDEC_CACHE", str(tmp_path))
    tok = sentencepiece_tokenizer()
    first = TokenizerInfo.from_huggingface(tok)
    assert list((tmp_path / "tokenizers").iterdir())
    second = TokenizerInfo.from_huggingface(tok)
    assert second.token_bytes == first.token_bytes and second.hash == first.hash


def test_byte_table_pads_tokens():
    info = TokenizerInfo([b"a", b"bcd", b""], special_ids={2})
    table, lengths = info.byte_table()
    assert lengths.tolist() == [1, 3, 0]
    assert bytes(table[1, :3]) == b"bcd"


def test_tokens_without_bytes_have_first_byte_256():
    """``first_bytes`` gives a token without bytes (a special token) 256, and ``first_byte_words``
    puts it in row 256 alone: read as byte 0 (a uint8 table's 256 wraps), it was picked with every
    token that begins with a NUL byte."""
    info = TokenizerInfo([b"\x00a", b"a", b"", b"\x00"], special_ids={2})
    assert info.first_bytes().tolist() == [0, 97, 256, 0]
    words = info.first_byte_words()
    assert words[256, 0] == 1 << 2
    assert words[0, 0] == (1 << 0) | (1 << 3)
