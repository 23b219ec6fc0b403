"""``Runner``: every call to the model goes through here.

One forward pass feeds each row of a batch its own number of tokens (the committed tokens it has
not fed yet, plus a draft), left-padded to the longest, with the attention mask and position ids
the ``KVCache`` derives from its holes; it keeps the logits of only the last positions each row
needs (projecting every prompt position onto the vocabulary is most of a long prefill's cost),
and the last hidden states on request (contrastive search). A lone row without holes goes
through the model exactly as ``model(input_ids, past_key_values=cache)``.

The runner holds no per-generation state, so one runner (and one model) serves many threads.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from . import fastpath
from .kv import KVCache
from .llama import llama_pass

__all__ = ["Runner", "Forward"]


@dataclass
class Forward:
    """One pass's output, per row: ``logits[r]`` is ``float32[keep[r], vocab]`` for the last
    ``keep[r]`` fed positions of row ``r`` (row ``j`` is the distribution after that position's
    token); ``hidden[r]`` the same positions' last hidden states, when asked for."""

    logits: list[torch.Tensor]
    hidden: list[torch.Tensor] | None = None


class Runner:
    """The model calls of ctrldec's loop, for one causal LM."""

    def __init__(self, model: Any, pad_token_id: int = 0, *, fast_path: bool = True) -> None:
        self.model = model
        # A KV buffer that grows in place and grouped KV heads read in place (``fastpath``): the
        # same logits, bit for bit, as transformers' own path (``fast_path=False``).
        self.fast_path = fast_path
        self._grouped = fastpath.attention_configs(model) if fast_path else []
        # and, for a plain transformers Llama, its pass without the module machinery (``llama``)
        self._llama = llama_pass(model) if fast_path else None
        self.width = int(model.get_output_embeddings().weight.shape[0])
        # A real id for padding columns: they are masked, but their embeddings must be finite.
        self.pad_token_id = pad_token_id
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        config = getattr(model, "config", None)
        context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        self.context: int | None = int(context) if isinstance(context, int) and context > 0 else None

    def new_cache(self, rows: int) -> KVCache:
        """An empty cache for ``rows`` sequences (a runner over two models pairs two)."""
        return KVCache(rows)

    def forward(self, kv: KVCache, feeds: Sequence[Sequence[int]], keep: Sequence[int], *,
                hidden: bool | Sequence[int] = False, parents: Sequence[Sequence[int] | None] | None = None,
                sequences: Sequence[Any] = ()) -> Forward:
        """Append ``feeds[r]`` to row ``r`` of ``kv`` in one pass; logits for the last ``keep[r]``
        positions; with ``hidden``, the last hidden states of the same positions (True) or of the
        last ``hidden[r]`` (a prompt's every position, for contrastive search's context); with
        ``parents``, a row's feed is a tree of branches (``KVCache.step_layout``). ``sequences``
        (the rows' ``Sequence``) is for runners that route rows by their state; this one needs none."""
        if len(feeds) != kv.rows or len(keep) != kv.rows:
            raise ValueError(f"{len(feeds)} feeds and {len(keep)} keeps for a cache of {kv.rows} rows")
        counts = [len(f) for f in feeds]
        width = max(counts)
        mask, positions, new = kv.step_layout(counts, parents)
        if self.context is not None and new.size and int(new.max()) >= self.context:
            row = int(np.argmax(new.max(axis=1)))
            raise ModelError(f"row {row} needs position {int(new.max())}, past the model's context of {self.context} "
                             "positions (config.max_position_embeddings): shorten the prompt or max_new_tokens")
        plain = kv.plain and kv.rows == 1 and mask.dim() == 2
        ids = [[self.pad_token_id] * (width - len(f)) + list(f) for f in feeds]
        extra: dict[str, Any] = {} if plain else {"attention_mask": mask, "position_ids": positions}
        cache = kv.cache if kv.cache is not None or not self.fast_path else fastpath.growing_cache(self.model)
        out, logits = None, None
        with torch.no_grad(), fastpath.grouped_attention(self._grouped):
            if self._llama is not None and hidden is False and cache is not None:
                logits = self._llama(torch.tensor(ids), cache, max(max(keep), 1), **extra)
            if logits is None:
                out = self.model(input_ids=torch.tensor(ids), **{self._cache_arg: cache}, use_cache=True,
                                 logits_to_keep=max(max(keep), 1), output_hidden_states=hidden is not False, **extra)
                cache, logits = getattr(out, "cache", None) or out.past_key_values, out.logits
        kv.appended(new, cache)
        logits = logits.float()
        # a finite sum rules out NaN and inf in one read; only otherwise are the logits searched
        broken = None if bool(torch.isfinite(logits.sum())) else torch.isnan(logits) | torch.isposinf(logits)
        if broken is not None and bool(broken.any()):
            row, at, token = (int(i) for i in broken.nonzero()[0])
            raise ModelError(f"the model returned a {'NaN' if torch.isnan(logits[row, at, token]) else 'inf'} logit "
                             f"(row {row}, token {token}): no distribution to decode from (check the weights and dtype)")
        states = out.hidden_states[-1] if out is not None and hidden is not False else None
        held = keep if hidden is True else hidden
        return Forward(
            logits=[logits[r, logits.shape[1] - k:] for r, k in enumerate(keep)],
            hidden=None if states is None else [states[r, states.shape[1] - k:] for r, k in enumerate(held)],  # type: ignore[arg-type]
        )
