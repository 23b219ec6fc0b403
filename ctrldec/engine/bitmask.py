"""Token bitmasks: the one home for their layout and for turning them into boolean masks.

Layout (xgrammar's and llguidance's): ``uint32`` words, bit ``i % 32`` of word ``i // 32`` set when
token ``i`` is allowed. A mask may be narrower than the model's logits (a tokenizer smaller than
the embedding matrix) or wider (padding words): ``unpack`` pads with False or trims to ``width``.

>>> import numpy as np
>>> words = allocate(1, 40)
>>> words[0, 0] = 0b101; words[0, 1] = 1          # tokens 0, 2 and 32
>>> np.flatnonzero(unpack(words[0], 40)).tolist()
[0, 2, 32]
>>> unpack(words, 34).shape
(1, 34)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["words_for", "allocate", "unpack", "to_bool_tensor", "write_words"]


def words_for(vocab_size: int) -> int:
    """How many 32-bit words hold one mask over ``vocab_size`` tokens."""
    return (vocab_size + 31) // 32


def allocate(rows: int, vocab_size: int) -> np.ndarray:
    """Zeroed masks: ``uint32[rows, words_for(vocab_size)]``."""
    return np.zeros((rows, words_for(vocab_size)), dtype=np.uint32)


def unpack(words: np.ndarray, width: int) -> np.ndarray:
    """``uint32[..., W]`` -> ``bool[..., width]``; columns past the mask are False."""
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")
    if bits.shape[-1] < width:
        pad = [(0, 0)] * (bits.ndim - 1) + [(0, width - bits.shape[-1])]
        bits = np.pad(bits, pad)
    return bits[..., :width].astype(bool)


def to_bool_tensor(words: np.ndarray, width: int):
    """``unpack`` as a ``torch.bool`` tensor (for ``masked_fill`` on logits)."""
    import torch

    return torch.from_numpy(unpack(words, width))


def write_words(mask: np.ndarray, out: Any) -> bool:
    """Copy the bitmask ``mask`` into ``out`` (numpy or torch, 32-bit words, any length): words
    past ``mask`` are zeroed, a shorter ``out`` is trimmed. False when ``mask`` allows nothing."""
    target = out.numpy() if hasattr(out, "numpy") else out
    target = target.view(np.uint32)
    n = min(len(target), len(mask))
    target[:n] = mask[:n]
    target[n:] = 0
    return bool(mask.any())
