"""Two changes to a Hugging Face model's forward pass that leave every logit bit for bit the same
and make the loop's passes cheaper on a CPU.

- ``growing_cache(model)``: a ``DynamicCache`` whose full-attention layers keep their keys and
  values in a buffer with room to spare. transformers' ``DynamicLayer`` concatenates the whole past
  with the new columns at every step (a fresh allocation and a copy of every layer's cache per
  pass, per row); here a pass writes its columns in place and attention reads a view of the
  filled part. ``crop`` only moves the end. Everything else a ``DynamicLayer`` does (row
  selection, reordering, deep copies) goes through ``keys``/``values`` as before.
- ``grouped_attention(configs)``: while a pass runs, attention modules with grouped key/value
  heads (Llama, Qwen, Mistral: fewer KV heads than query heads) use ``"ctrldec_sdpa"``: the same
  ``scaled_dot_product_attention`` call as transformers' ``"sdpa"``, but on a CPU it passes
  ``enable_gqa=True`` also under an attention mask instead of copying each KV head once per
  query head (transformers does that copy whenever a pass feeds several tokens against a
  cache: every verification, tree and batched pass of this loop). Elsewhere it is ``"sdpa"``
  itself. The switch holds only during ctrldec's own passes and is undone after them (counted
  across threads); a model that is not on ``"sdpa"`` is left as it is.

What each saves per pass shape: ``python examples/pass_width.py`` (figures in docs/decoding.md,
"What a pass costs"). ``tests/decoding/test_fastpath.py`` checks the logits equal, bit for bit,
to transformers' own path through every cache operation the loop uses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["ATTENTION", "attention", "growing_cache", "attention_configs", "grouped_attention"]

ATTENTION = "ctrldec_sdpa"

try:  # a transformers without these interfaces gets neither change
    from transformers import AttentionInterface
    from transformers.cache_utils import DynamicCache, DynamicLayer
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
except ImportError:  # pragma: no cover - older transformers
    DynamicLayer = None  # type: ignore[assignment,misc]


def _grouped_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
                  dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any,
                  ) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, with grouped KV heads read in place under a mask on a CPU."""
    if (getattr(module, "num_key_value_groups", 1) > 1 and attention_mask is not None and query.shape[2] > 1
            and query.device.type == "cpu" and kwargs.get("position_bias") is None and kwargs.get("softcap") is None
            and not kwargs.get("output_attentions")):
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


def attention(config: Any) -> Callable[..., tuple[torch.Tensor, None]]:
    """The function attention modules reading ``config`` (a model on ``"sdpa"``) reach through
    their attention interface: ``"ctrldec_sdpa"``'s while ``grouped_attention`` holds the config,
    else ``"sdpa"``'s. Called as ``f(module, query, key, value, mask, scaling=module.scaling)``."""
    return _grouped_sdpa if config._attn_implementation == ATTENTION else sdpa_attention_forward


if DynamicLayer is not None:
    AttentionInterface.register(ATTENTION, _grouped_sdpa)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks are sdpa's

    class GrowingLayer(DynamicLayer):
        """A ``DynamicLayer`` whose ``keys``/``values`` are views of the filled columns of a
        buffer; ``update`` writes in place and doubles the buffer when it is full."""

        _ROOM = 256  # columns allocated at least

        def __init__(self, **kwargs: Any) -> None:
            self._buffers: dict[str, torch.Tensor | None] = {"keys": None, "values": None}
            self._filled = {"keys": 0, "values": 0}  # apart: a caller may set keys, then read values, then set them
            super().__init__(**kwargs)

        def _view(self, name: str) -> torch.Tensor | None:
            buffer = self._buffers[name]
            return buffer if buffer is None or buffer.dim() != 4 else buffer[:, :, : self._filled[name]]

        def _adopt(self, name: str, tensor: torch.Tensor | None) -> None:
            self._buffers[name] = tensor  # a 4-D tensor becomes the buffer as it is (full: the next update grows it)
            self._filled[name] = tensor.shape[2] if tensor is not None and tensor.dim() == 4 else 0

        keys = property(lambda self: self._view("keys"), lambda self, t: self._adopt("keys", t))  # type: ignore[assignment]
        values = property(lambda self: self._view("values"), lambda self, t: self._adopt("values", t))  # type: ignore[assignment]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, m = self._filled["keys"], key_states.shape[2]
            keys, values = self._buffers["keys"], self._buffers["values"]
            if keys is None or keys.dim() != 4 or n + m > keys.shape[2]:
                room = max(2 * (n + m), self._ROOM)
                grown = []
                for old, new in ((keys, key_states), (values, value_states)):
                    buffer = new.new_empty((new.shape[0], new.shape[1], room, new.shape[3]))
                    if n:
                        buffer[:, :, :n] = old[:, :, :n]  # type: ignore[index]
                    grown.append(buffer)
                keys, values = grown
                self._buffers["keys"], self._buffers["values"] = keys, values
            keys[:, :, n: n + m] = key_states
            values[:, :, n: n + m] = value_states
            self._filled["keys"] = self._filled["values"] = n + m
            return keys[:, :, : n + m], values[:, :, : n + m]

        def get_seq_length(self) -> int:
            return self._filled["keys"] if self.is_initialized else 0

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                super().crop(tokens_to_remove)  # transformers' error for the legacy form
            elif self.is_initialized:
                for name in self._filled:
                    self._filled[name] = max(0, self._filled[name] + tokens_to_remove)


def growing_cache(model: Any) -> Any:
    """An empty cache for ``model`` made of ``GrowingLayer``s, or None (the model makes its own)
    where its layers are not all plain full attention (sliding windows, state-space layers) or
    its config does not say."""
    if DynamicLayer is None or getattr(model, "config", None) is None:
        return None
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # a config transformers cannot read layer types from: its own cache then
        return None
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [GrowingLayer() for _ in cache.layers]
    return cache


def attention_configs(model: Any) -> list[Any]:
    """The configs that ``model``'s attention modules with grouped KV heads read their attention
    implementation from (an early-exit model's modules read the full model's)."""
    if DynamicLayer is None or not hasattr(model, "modules"):
        return []
    found: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(module, "num_key_value_groups", 1) > 1 and config is not None and hasattr(config, "_attn_implementation_internal"):
            found.setdefault(id(config), config)
    return list(found.values())


_lock = threading.Lock()
_switched: dict[int, list[Any]] = {}  # id(config) -> [config (held: ids stay unique), passes inside, switched by us]


@contextmanager
def grouped_attention(configs: Sequence[Any]) -> Iterator[None]:
    """Inside: the configs on ``"sdpa"`` read ``"ctrldec_sdpa"`` (see the module docstring)."""
    if not configs:
        yield
        return
    with _lock:
        for config in configs:
            entry = _switched.setdefault(id(config), [config, 0, False])
            if entry[1] == 0 and config._attn_implementation_internal == "sdpa":
                config._attn_implementation_internal = ATTENTION
                entry[2] = True
            entry[1] += 1
    try:
        yield
    finally:
        with _lock:
            for config in configs:
                entry = _switched[id(config)]
                entry[1] -= 1
                if entry[1] == 0:
                    if entry[2] and config._attn_implementation_internal == ATTENTION:
                        config._attn_implementation_internal = "sdpa"
                    del _switched[id(config)]
