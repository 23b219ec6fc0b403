"""Llama's forward pass, op for op, without transformers' module machinery.

A decode step of a small model on a CPU spends a fifth of its time outside the kernels: about 300
``nn.Module.__call__``s, keyword plumbing, decorators and the attention-interface lookup per pass
(SmolLM2-135M, 300 tokens of context: 34 ms through ``model(...)``, 27 ms here, the same logits).
``LlamaPass`` runs the same tensor operations in the same order, on the model's own weights and
cache, so the logits are transformers' bit for bit (``tests/decoding/test_fastpath.py``), and
every cache operation of the loop works unchanged.

It serves only what it reproduces exactly: transformers' ``LlamaForCausalLM`` with its own
modules (not subclasses, not a PEFT or quantized ``Linear``), on ``"sdpa"`` attention, in eval
mode, with no hook on any module and no ``forward`` patched onto one (checked at every pass, so
a hook registered later, e.g. to steer activations, is honoured: the pass then goes through
``model(...)``). Anything else, and every pass that asks for hidden states, goes through the
model as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from . import fastpath

__all__ = ["LlamaPass", "llama_pass"]

try:
    from torch.nn.modules import module as _torch_module
    from transformers.masking_utils import create_causal_mask
    from transformers.models.llama import modeling_llama as _llama
except ImportError:  # pragma: no cover - a transformers without Llama
    _llama = None  # type: ignore[assignment]

_LAYER_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")


def llama_pass(model: Any) -> LlamaPass | None:
    """A ``LlamaPass`` for ``model`` when it is a plain transformers Llama on sdpa, else None."""
    if _llama is None or fastpath.DynamicLayer is None or type(model) is not _llama.LlamaForCausalLM:
        return None
    if type(getattr(model, "model", None)) is not _llama.LlamaModel:
        return None
    return LlamaPass(model)


def _global_hooks() -> bool:
    return bool(_torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks)


def _plain(module: Any, kind: type | None) -> bool:
    """``module`` is exactly ``kind`` (any type for None), with no forward hook and no forward of its own."""
    return ((kind is None or type(module) is kind) and not module._forward_hooks and not module._forward_pre_hooks
            and "forward" not in module.__dict__)


class LlamaPass:
    """One forward pass of a transformers ``LlamaForCausalLM``, as ``model(...)`` computes it."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def _layers(self) -> list[tuple[Any, ...]] | None:
        """Per layer, the modules the pass uses, or None when one of them is not transformers'
        own (a subclass, an adapter, a hook): such a pass must go through the model."""
        model, inner = self.model, self.model.model
        if model.training or _global_hooks() or not _plain(model, _llama.LlamaForCausalLM) or not _plain(inner, _llama.LlamaModel):
            return None
        if inner.config._attn_implementation not in ("sdpa", fastpath.ATTENTION):
            return None
        if not (_plain(inner.embed_tokens, torch.nn.Embedding) and _plain(inner.norm, _llama.LlamaRMSNorm)
                and _plain(inner.rotary_emb, _llama.LlamaRotaryEmbedding) and _plain(model.lm_head, torch.nn.Linear)):
            return None
        linear = torch.nn.Linear
        rows = []
        for layer in inner.layers[: inner.config.num_hidden_layers]:
            if not _plain(layer, _llama.LlamaDecoderLayer):
                return None
            norm1, attn, norm2, mlp = (layer._modules[name] for name in _LAYER_PARTS)
            q, k, v, o = (attn._modules[name] for name in ("q_proj", "k_proj", "v_proj", "o_proj"))
            gate, up, down = (mlp._modules[name] for name in ("gate_proj", "up_proj", "down_proj"))
            act = mlp._modules["act_fn"]
            if not (_plain(norm1, _llama.LlamaRMSNorm) and _plain(norm2, _llama.LlamaRMSNorm)
                    and _plain(attn, _llama.LlamaAttention) and _plain(mlp, _llama.LlamaMLP)
                    and all(_plain(p, linear) for p in (q, k, v, o, gate, up, down))
                    and _plain(act, None)):
                return None
            rows.append((norm1, attn, q, k, v, o, norm2, gate, up, down, act))
        return rows

    def __call__(self, input_ids: torch.Tensor, cache: Any, logits_to_keep: int, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None) -> torch.Tensor | None:
        """The logits of the last ``logits_to_keep`` positions, with ``cache`` updated, as
        ``model(input_ids=..., past_key_values=cache, use_cache=True, logits_to_keep=...,
        attention_mask=..., position_ids=...).logits``; None (nothing run) when the model is not
        in the form this reproduces."""
        layers = self._layers()
        if layers is None:
            return None
        inner = self.model.model
        hidden = inner.embed_tokens(input_ids)
        if position_ids is None:
            position_ids = (torch.arange(hidden.shape[1], device=hidden.device) + cache.get_seq_length()).unsqueeze(0)
        mask = create_causal_mask(config=inner.config, inputs_embeds=hidden, attention_mask=attention_mask, cache=cache,
                                  position_ids=position_ids)
        cos, sin = inner.rotary_emb(hidden, position_ids=position_ids)
        cos, sin = cos.unsqueeze(1), _signed_halves(sin.unsqueeze(1))
        shape = hidden.shape[:-1]
        for norm1, attn, q_proj, k_proj, v_proj, o_proj, norm2, gate, up, down, act in layers:
            residual = hidden
            x = _rms_norm(hidden, norm1)
            heads = (*shape, -1, attn.head_dim)
            query = F.linear(x, q_proj.weight, q_proj.bias).view(heads).transpose(1, 2)
            key = F.linear(x, k_proj.weight, k_proj.bias).view(heads).transpose(1, 2)
            value = F.linear(x, v_proj.weight, v_proj.bias).view(heads).transpose(1, 2)
            query = query * cos + _swap_halves(query) * sin
            key = key * cos + _swap_halves(key) * sin
            key, value = cache.update(key, value, attn.layer_idx)
            out, _ = fastpath.attend(attn, query, key, value, mask)
            out = out.reshape(*shape, -1).contiguous()
            hidden = residual + F.linear(out, o_proj.weight, o_proj.bias)
            residual = hidden
            x = _rms_norm(hidden, norm2)
            x = act.forward(F.linear(x, gate.weight, gate.bias)) * F.linear(x, up.weight, up.bias)
            hidden = residual + F.linear(x, down.weight, down.bias)
        hidden = _rms_norm(hidden, inner.norm)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:, :]
        head = self.model.lm_head
        return F.linear(hidden, head.weight, head.bias)


def _rms_norm(hidden: torch.Tensor, norm: Any) -> torch.Tensor:
    """``LlamaRMSNorm.forward``: in float32, ``F.rms_norm`` runs the same operations in one call."""
    dtype = hidden.dtype
    if dtype == torch.float32 and norm.weight.dtype == torch.float32:
        return F.rms_norm(hidden, hidden.shape[-1:], norm.weight, norm.variance_epsilon)
    x = hidden.to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + norm.variance_epsilon)
    return norm.weight * x.to(dtype)


def _signed_halves(sin: torch.Tensor) -> torch.Tensor:
    """``sin`` with its first half negated: ``rotate_half(x) * sin``, that is
    ``cat(-x2, x1) * cat(s1, s2)``, equals ``cat(x2, x1) * cat(-s1, s2)`` exactly (a sign moves
    between the factors of a product), one negation per pass instead of one per layer."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((x[..., half:], x[..., :half]), dim=-1)
