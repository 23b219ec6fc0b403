"""Drafters that run a model: a small model with the same tokenizer, or the target's own first
layers (early exit, LayerSkip-style self-drafting: nothing else to ship).

``ModelDrafter`` keeps, per sequence, its own KV cache of the tokens it has seen; each ``propose``
first catches up with the committed tokens in one forward pass (what was drafted and rejected is
cropped away), then drafts one token per pass under a fork of the sequence's matcher, so every
drafted token is one the constraint allows. It drafts greedily when the target decodes greedily
(the draft is then checked by sample-and-compare) and samples from its own constrained
distribution at the target's temperature otherwise, handing the verifier that exact ``q``
(speculative sampling keeps more of it).

Adaptive length (SpecDec++'s stopping rule, with an online estimate instead of a trained head):
the chance that a drafted token is kept is estimated per bin of the drafter's own confidence
(its probability of the token), from the verifier's outcomes; drafting stops when the chance
that some token of the draft is rejected passes ``threshold``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..decoding.kv import KVCache
from ..decoding.runner import Runner
from ..decoding.sequence import Sequence
from ..errors import CtrldecError
from ..samplers.base import masked
from ..samplers.sampling import Greedy
from .drafters import NO_DRAFT, Draft

__all__ = ["ModelDrafter", "early_exit_model"]

_BINS = 10  # confidence bins of the acceptance estimate


@dataclass
class _DraftState:
    owner: Sequence
    kv: KVCache
    stored: list[int] = field(default_factory=list)  # tokens in the draft cache, in order
    confidence: list[float] = field(default_factory=list)  # the last draft's, per token


class ModelDrafter:
    """Drafts from ``model`` (same tokenizer as the target); see the module docstring.

    ``temperature``: None drafts greedily (deterministic drafts), a float samples at that
    temperature and reports ``q``. ``adaptive``: stop early when a rejection becomes likely
    (``threshold``); otherwise always ``max_draft`` tokens.
    """

    def __init__(self, model: Any, *, max_draft: int = 8, adaptive: bool = True, threshold: float = 0.6,
                 temperature: float | None = None, name: str = "model") -> None:
        if max_draft < 1:
            raise CtrldecError(f"max_draft must be at least 1, got {max_draft}")
        if not 0 < threshold < 1:
            raise CtrldecError(f"threshold must be in (0, 1), got {threshold}")
        self.model = model
        self.runner = Runner(model)
        self.max_draft = max_draft
        self.adaptive = adaptive
        self.threshold = threshold
        self.temperature = temperature
        self.name = name
        self._greedy = Greedy()
        self._kept = np.ones(_BINS)  # Beta(1, 1) prior per bin: kept + 1, proposed + 2
        self._seen = np.full(_BINS, 2.0)

    def __repr__(self) -> str:
        return f"ModelDrafter({self.name}, max_draft={self.max_draft}, adaptive={self.adaptive})"

    def at(self, temperature: float | None) -> ModelDrafter:
        """This drafter for one call at ``temperature`` (None: greedy drafts): a copy that shares the
        model and the acceptance estimate, so concurrent calls at other temperatures do not interfere."""
        other = copy.copy(self)
        other.temperature = temperature
        return other

    def acceptance(self) -> list[float]:
        """The current estimate of the chance a drafted token is kept, per confidence bin."""
        return (self._kept / self._seen).tolist()

    def propose(self, seq: Sequence, k: int) -> Draft:
        k = min(k, self.max_draft)
        if k <= 0:
            return NO_DRAFT
        state = self._state(seq)
        tokens = seq.tokens
        common = 0
        limit = min(len(state.stored), len(tokens) - 1)  # feed at least the last token
        while common < limit and state.stored[common] == tokens[common]:
            common += 1
        state.kv.crop(0, common)
        del state.stored[common:]
        feed = tokens[common:]
        fork = seq.matcher.fork()
        drafted: list[int] = []
        qs: list[torch.Tensor] = []
        state.confidence = []
        survive = 1.0
        while len(drafted) < k:
            logits = self.runner.forward(state.kv, [feed], [1]).logits[0][0]
            state.stored += feed
            if self.temperature is None:
                token = self._greedy.choose(logits, fork).token
                confidence = float(torch.softmax(logits, dim=-1)[token])
            else:
                q = torch.softmax(masked(logits / self.temperature, fork).double(), dim=-1)
                token = int(torch.multinomial(q, 1, generator=seq.rng))
                qs.append(q)
                confidence = float(q[token])
            drafted.append(token)
            state.confidence.append(confidence)
            if token in seq.eos or not fork.accepts(token):
                break
            fork.advance(token)
            if fork.is_done():
                break
            feed = [token]
            if self.adaptive:
                survive *= self._estimate(confidence)
                if 1 - survive > self.threshold:
                    break
        return Draft(drafted, qs if self.temperature is not None else None)

    def observe(self, seq: Sequence, draft: Draft, accepted: int) -> None:
        state = seq.extras.get(self)
        if state is None:
            return
        for i, confidence in enumerate(state.confidence[: min(accepted + 1, len(draft.tokens))]):
            b = self._bin(confidence)
            self._seen[b] += 1
            self._kept[b] += i < accepted

    def _estimate(self, confidence: float) -> float:
        b = self._bin(confidence)
        return float(self._kept[b] / self._seen[b])

    @staticmethod
    def _bin(confidence: float) -> int:
        return min(_BINS - 1, int(confidence * _BINS))

    def _state(self, seq: Sequence) -> _DraftState:
        state = seq.extras.get(self)
        if state is None or state.owner is not seq:  # a fork: its own cache (the parent's is not ours to crop)
            state = _DraftState(seq, KVCache(1))
            seq.extras[self] = state
        return state


def _decoder_layers(model: Any) -> tuple[Any, str]:
    """The module holding ``model``'s decoder layers and the attribute name of the list."""
    for path, attr in (("model", "layers"), ("transformer", "h"), ("gpt_neox", "layers")):
        inner = getattr(model, path, None)
        if inner is not None and isinstance(getattr(inner, attr, None), torch.nn.ModuleList):
            return inner, attr
    raise CtrldecError(f"early exit needs a decoder-only model with its layers at model.layers, transformer.h or "
                       f"gpt_neox.layers; {type(model).__name__} has none of them: give a draft model instead")


def early_exit_model(model: Any, layers: int) -> Any:
    """The first ``layers`` decoder layers of ``model``, then its final norm and LM head, as a
    model of its own that shares every weight (no copy): a draft model with the same tokenizer."""
    inner, attr = _decoder_layers(model)
    total = len(getattr(inner, attr))
    if not 1 <= layers < total:
        raise CtrldecError(f"early exit after {layers} layers: the model has {total}, so give 1 to {total - 1}")
    path = next(name for name, module in model.named_children() if module is inner)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:layers]
    short_inner = copy.copy(inner)
    short_inner._modules = dict(inner._modules)
    short_inner._modules[attr] = torch.nn.ModuleList(list(getattr(inner, attr))[:layers])
    short_inner.config = config
    short = copy.copy(model)
    short._modules = dict(model._modules)
    short._modules[path] = short_inner
    short.config = config
    return short
