"""Llama's forward pass, the same arithmetic as transformers', without its module machinery.

A decode step of a small model on a CPU spends a fifth of its time outside the kernels: about 300
``nn.Module.__call__``s, keyword plumbing, decorators and the attention-interface lookup per pass,
and ~90 tensor operations per layer. ``LlamaPass`` runs the same computations on the model's own
weights and cache, with fewer calls: each projection is the one ``mm`` ``F.linear`` would reach
(on the tokens of all rows as one matrix, with the weight's transposed view kept from pass to
pass), query and key heads are rotated together, and every norm is one ``F.rms_norm`` call in
float32. The logits are transformers' bit for bit (``tests/decoding/test_fastpath.py``) and every
cache operation of the loop works unchanged. SmolLM2-135M, 300 tokens of context
(``python examples/pass_width.py``): 1 token 32.5 ms through ``model(...)``, 27.5 ms here; 3
tokens 40.4 -> 31.5; 8 rows of 1 token 70.8 -> 59.2.

It serves only what it reproduces exactly: transformers' ``LlamaForCausalLM`` with its own
modules (not subclasses, not a PEFT or quantized ``Linear``), on ``"sdpa"`` attention, in eval
mode, with no hook on any module and no ``forward`` patched onto one (checked at every pass, so
a hook registered later, e.g. to steer activations, is honoured: the pass then goes through
``model(...)``). Anything else, and every pass that asks for hidden states, goes through the
model as before.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch.nn import functional as F

from . import fastpath

__all__ = ["LlamaPass", "llama_pass"]

try:
    from torch.nn.modules import module as _torch_module
    from transformers.activations import SiLUActivation
    from transformers.masking_utils import create_causal_mask
    from transformers.models.llama import modeling_llama as _llama
except ImportError:  # pragma: no cover - a transformers without Llama
    _llama = None  # type: ignore[assignment]
else:  # activations whose forward is ``F.silu`` as imported (not since swapped for another kernel)
    _SILU = {torch.nn.SiLU: torch.nn.SiLU.forward, SiLUActivation: SiLUActivation.forward}

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
        self._projections: dict[int, tuple[Any, ...]] = {}  # id(Linear) -> its last ``_projection``

    def _layers(self) -> list[tuple[Any, ...]] | None:
        """Per layer, what the pass reads: the attention module, the norms' weights and epsilons,
        the seven projections (``_projection``) and the activation; None when one of the
        modules is not transformers' own (a subclass, an adapter, a hook): such a pass must go
        through the model. Weights are read from each module's ``_parameters`` at every pass, so
        a swapped or reloaded weight is used as the model would use it."""
        projections, self._projections = self._projections, {}  # threads racing here only lose kept views
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
        config = None  # the one config every attention module reads (transformers gives them the model's)
        for layer in itertools.islice(inner.layers._modules.values(), inner.config.num_hidden_layers):  # a slice would build a ModuleList
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
            config = attn.config if config is None else config
            if attn.config is not config:
                return None
            rows.append((attn, _norm(norm1), _norm(norm2), *(self._projection(p, projections) for p in (q, k, v, o, gate, up, down)),
                         F.silu if _SILU.get(type(act), 0) is type(act).forward and not getattr(act, "inplace", False) else act.forward))
        return rows

    def _projection(self, linear: Any, last: dict[int, tuple[Any, ...]]) -> tuple[Any, ...]:
        """(the weight transposed, or None where there is a bias; the bias; the weight), the
        transposed view kept from the last pass while the weight is the same tensor on the same
        memory with the same shape and strides."""
        weight, bias = linear._parameters["weight"], linear._parameters["bias"]
        layout = (weight.data_ptr(), weight.shape, weight.stride())
        kept = last.get(id(linear))
        if kept is None or kept[0] is not linear or kept[1] is not weight or kept[2] is not bias or kept[3] != layout:
            kept = (linear, weight, bias, layout, (weight.t() if bias is None else None, bias, weight))
        self._projections[id(linear)] = kept
        return kept[4]

    def __call__(self, input_ids: torch.Tensor, cache: Any, logits_to_keep: int, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None) -> torch.Tensor | None:
        """The logits of the last ``logits_to_keep`` positions, with ``cache`` updated, as
        ``model(input_ids=..., past_key_values=cache, use_cache=True, logits_to_keep=...,
        attention_mask=..., position_ids=...).logits``; None (nothing run) when the model is not
        in the form this reproduces.

        The tokens of every row are one matrix (rows x tokens, hidden) for the projections, as
        ``F.linear`` flattens them itself; query and key heads are rotated together, in the
        (rows, tokens, heads, head_dim) layout, and transposed to transformers' layout after:
        element-wise operations, the same values."""
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
        cos, sin = cos.unsqueeze(2), _signed_halves(sin.unsqueeze(2))  # over (rows, tokens, heads, head_dim)
        rows, tokens, width = hidden.shape
        hidden = hidden.view(rows * tokens, width)
        head_dim = layers[0][0].head_dim
        half, heads = head_dim // 2, layers[0][3][2].shape[0] // head_dim  # query heads: q_proj's rows
        attend = fastpath.attention(layers[0][0].config)  # for the whole pass: the switch holds during passes
        for attn, norm1, norm2, q_proj, k_proj, v_proj, o_proj, gate, up, down, act in layers:
            residual = hidden
            x = _rms_norm(hidden, *norm1)
            qk = torch.cat((_linear(x, q_proj), _linear(x, k_proj)), dim=1).view(rows, tokens, -1, head_dim)
            qk = qk * cos + torch.cat((qk[..., half:], qk[..., :half]), dim=-1) * sin
            query, key = qk[:, :, :heads].transpose(1, 2), qk[:, :, heads:].transpose(1, 2)
            value = _linear(x, v_proj).view(rows, tokens, -1, head_dim).transpose(1, 2)
            key, value = cache.update(key, value, attn.layer_idx)
            out, _ = attend(attn, query, key, value, mask, scaling=attn.scaling)
            hidden = residual + _linear(out.reshape(rows * tokens, -1), o_proj)
            residual = hidden
            x = _rms_norm(hidden, *norm2)
            hidden = residual + _linear(act(_linear(x, gate)) * _linear(x, up), down)
        hidden = _rms_norm(hidden, *_norm(inner.norm)).view(rows, tokens, width)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:, :]
        head = self.model.lm_head
        return F.linear(hidden, head.weight, head.bias)


def _norm(norm: Any) -> tuple[torch.Tensor, float]:
    return norm._parameters["weight"], norm.variance_epsilon


def _linear(x: torch.Tensor, projection: tuple[Any, ...]) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` on a matrix ``x``: without a bias that is ``x @ weight.T``,
    the one ``mm`` ``F.linear`` would call, without its dispatch through ``matmul``."""
    transposed, bias, weight = projection
    return torch.mm(x, transposed) if bias is None else F.linear(x, weight, bias)


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``LlamaRMSNorm.forward``: in float32, ``F.rms_norm`` runs the same operations in one call."""
    dtype = hidden.dtype
    if dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(hidden, hidden.shape[-1:], weight, eps)
    x = hidden.to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    return weight * x.to(dtype)


def _signed_halves(sin: torch.Tensor) -> torch.Tensor:
    """``sin`` with its first half negated: ``rotate_half(x) * sin``, that is
    ``cat(-x2, x1) * cat(s1, s2)``, equals ``cat(x2, x1) * cat(-s1, s2)`` exactly (a sign moves
    between the factors of a product), one negation per pass instead of one per layer."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
