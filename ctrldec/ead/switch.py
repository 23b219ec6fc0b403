"""Entropy-adaptive decoding (EAD, arXiv 2502.06833): a small model writes the easy stretches, the
full model the hard ones, switched per sequence on the rolling entropy of their predictions.

>>> switch = ctrldec.EntropySwitch(threshold=1.5)                                       # doctest: +SKIP
>>> out = ctrldec.generate(model, tok, prompt, greedy=True, ead=switch)                  # doctest: +SKIP
>>> out.models.count("full") / len(out.models), out.timing["ead/switches"]              # doctest: +SKIP

The rule, per sequence: every pass gives the entropy (in nats) of the writing model's raw
distribution at the sequence's last fed position (before the constraint and any warper), and
the window holds the last ``window`` of them. A sequence starts on the small model. When a pass
of the small model brings the window's mean to ``threshold`` or above, the full model writes that
very step instead (the hard token itself comes from it) and keeps writing while the mean stays
there; once the mean falls below ``threshold`` and it has written ``min_dwell`` passes, the
small model takes over again. With ``threshold`` 0 the full model writes every token, so EAD is
then the full model alone, token for token.

The pieces: ``PairedKV`` keeps one ``KVCache`` per model for the same rows (crops, forks and
reorders go to both); ``SwitchRunner`` stands where the ``Runner`` does, feeds each row to the
model that writes it, prefixed by the committed tokens that model has not seen yet (it catches up
in the same pass when it takes over), and records which model wrote each token
(``GenerationResult.models``). Everything above it (samplers, the verifier and its drafters,
SMC, beams) decodes from whichever model's logits come back, so EAD composes with all of them
except the ones that need the model's hidden states (contrastive search).

EAD is lossy by design: the output follows neither model's distribution. ``ctrldec bench ead``
measures the share of tokens from the full model, the speed, and the gap to the full model alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..decoding.kv import KVCache
from ..decoding.runner import Forward, Runner
from ..decoding.sequence import Sequence
from ..errors import CtrldecError
from ..speculative.config import check_same_tokenizer
from ..speculative.model import early_exit_model

__all__ = ["EntropySwitch", "PairedKV", "SwitchRunner"]

SMALL, FULL = "small", "full"
# of the target's layers, for the early-exit small model when not given: at a quarter (8 of
# SmolLM2's 30) it wrote closer to the full model per unit of speed than at an eighth on
# `ctrldec bench ead` (README); the speculative self-draft is shallower, since only its
# kept tokens matter there
SMALL_LAYERS = 0.25


class EntropySwitch:
    """``ead=`` of ``ctrldec.generate``: see the module docstring.

    ``small``: any causal LM with the target's tokenizer (``small_tokenizer``, when given, is
    checked against the target's), or None for the target's own first ``layers`` layers with its
    final norm and head, the self-draft of ``Speculative`` (default: a quarter of the layers).
    ``window`` (>= 1): passes the entropy is averaged over. ``threshold`` (>= 0, nats): the mean
    entropy at which the full model takes over. ``min_dwell`` (>= 0): passes the full model
    writes before it may hand back.
    """

    def __init__(self, small: Any = None, *, layers: int | None = None, window: int = 5, threshold: float = 1.0,
                 min_dwell: int = 4, small_tokenizer: Any = None) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise CtrldecError(f"EntropySwitch window must be an integer >= 1 (passes the entropy is averaged over), got {window!r}")
        if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0:
            raise CtrldecError(f"EntropySwitch threshold must be a finite entropy >= 0 (nats), got {threshold!r}")
        if isinstance(min_dwell, bool) or not isinstance(min_dwell, int) or min_dwell < 0:
            raise CtrldecError(f"EntropySwitch min_dwell must be an integer >= 0, got {min_dwell!r}")
        if small is not None and layers is not None:
            raise CtrldecError("EntropySwitch: give small= (a model) or layers= (the target's early exit), not both")
        if small is None and small_tokenizer is not None:
            raise CtrldecError("EntropySwitch: small_tokenizer= is given without small=")
        self.small = small
        self.layers = layers
        self.window = window
        self.threshold = float(threshold)
        self.min_dwell = min_dwell
        self.small_tokenizer = small_tokenizer
        self._built: dict[int, tuple[Any, Runner]] = {}  # id(target) -> (target, the small model's runner), built once

    def __repr__(self) -> str:
        small = f"layers={self.layers}" if self.small is None else f"small={type(self.small).__name__}"
        return f"EntropySwitch({small}, window={self.window}, threshold={self.threshold}, min_dwell={self.min_dwell})"

    def runner(self, target: Runner, tokenizer: Any) -> SwitchRunner:
        """The runner of one call on ``target``'s model."""
        built = self._built.get(id(target.model))
        if built is None or built[0] is not target.model:  # (an id can be reused once its model is gone)
            built = (target.model, Runner(self._small_model(target, tokenizer), pad_token_id=target.pad_token_id,
                                               fast_path=target.fast_path))
            self._built[id(target.model)] = built
        return SwitchRunner(built[1], target, self)

    def _small_model(self, target: Runner, tokenizer: Any) -> Any:
        if self.small is None:
            total = target.model.config.num_hidden_layers
            return early_exit_model(target.model, self.layers or max(1, round(SMALL_LAYERS * total)))
        check_same_tokenizer(self.small, self.small_tokenizer, tokenizer, target.width, role="EAD's small model")
        width = int(self.small.get_output_embeddings().weight.shape[0])
        if width != target.width:
            raise CtrldecError(f"EAD's small model scores {width} tokens and the full model {target.width}: both must "
                               "score the same vocabulary (same tokenizer, same output width)")
        return self.small

    def after(self, state: _State, entropy: float) -> _State:
        """The state after a pass of ``state.model`` whose distribution had ``entropy``."""
        window = (*state.window, entropy)[-self.window:]
        mean = sum(window) / len(window)
        dwell = state.dwell + 1
        if state.model == SMALL and mean >= self.threshold:
            return _State(FULL, window, 1, state.switches + 1)  # the full model writes this step: its first pass
        if state.model == FULL and mean < self.threshold and dwell >= self.min_dwell:
            return _State(SMALL, window, 0, state.switches + 1)
        return _State(state.model, window, dwell, state.switches)


@dataclass(frozen=True)
class _State:
    """One sequence's switch (immutable: forked sequences share it until either moves)."""

    model: str
    window: tuple[float, ...] = ()
    dwell: int = 0  # passes since the last switch
    switches: int = 0


class PairedKV:
    """One ``KVCache`` per model over the same rows. Row operations go to both; ``forget`` (a draft
    tree's rejected branches, counted back from the end of the row's last feed) goes to the cache
    that pass fed."""

    def __init__(self, rows: int) -> None:
        self.caches = {SMALL: KVCache(rows), FULL: KVCache(rows)}
        self.fed_last = np.array([FULL] * rows, dtype=object)  # the model that row's last feed went to

    @property
    def rows(self) -> int:
        return self.caches[FULL].rows

    def crop(self, row: int, length: int) -> None:
        for kv in self.caches.values():
            kv.crop(row, length)

    def forget(self, row: int, columns: Seq[int]) -> None:
        if any(c >= 0 for c in columns):
            raise ValueError("PairedKV.forget takes columns counted from the end (negative)")
        self.caches[self.fed_last[row]].forget(row, columns)

    def compact_if_sparse(self) -> None:
        for kv in self.caches.values():
            kv.compact_if_sparse()

    def select_rows(self, indices: Seq[int]) -> None:
        for kv in self.caches.values():
            kv.select_rows(indices)
        self.fed_last = self.fed_last[np.asarray(indices, dtype=np.int64)]

    def place_rows(self, indices: Seq[int]) -> np.ndarray:
        """``KVCache.place_rows`` on the full model's cache, the same placement on the other's."""
        idx = np.asarray(indices, dtype=np.int64)
        lead, other = (FULL, SMALL) if self.caches[FULL].cache is not None else (SMALL, FULL)
        slots = self.caches[lead].place_rows(idx)
        order = np.empty(len(idx), dtype=np.int64)
        order[slots] = idx
        self.caches[other].select_rows(order)
        self.fed_last = self.fed_last[order]
        return slots


class SwitchRunner:
    """Stands where ``Runner`` does: each row goes to the model that writes it (see the module docstring)."""

    def __init__(self, small: Runner, full: Runner, switch: EntropySwitch) -> None:
        self.runners = {SMALL: small, FULL: full}
        self.model = full.model
        self.width = full.width
        self.switch = switch

    def new_cache(self, rows: int) -> PairedKV:
        return PairedKV(rows)

    def forward(self, kv: PairedKV, feeds: Seq[Seq[int]], keep: Seq[int], *, hidden: bool | Seq[int] = False,
                parents: Seq[Seq[int] | None] | None = None, sequences: Seq[Sequence] = ()) -> Forward:
        """The small model's rows first; those whose window now reaches the threshold are fed to
        the full model instead, with its own rows, in one more pass (the small model's pass on them
        is undone, so its cache holds only committed tokens)."""
        if hidden is not False:
            raise CtrldecError("ead= with a strategy that compares hidden states (search=ContrastiveSearch(...)): the two "
                               "models' hidden states are not comparable; drop one of the two")
        states = [seq.extras.get(SwitchRunner) or _State(SMALL) for seq in sequences]
        logits: list[torch.Tensor | None] = [None] * len(feeds)
        small = [r for r, (s, f) in enumerate(zip(states, feeds)) if s.model == SMALL and f]
        for r, rows in self._pass(SMALL, kv, small, feeds, keep, parents, sequences).items():
            states[r] = self.switch.after(states[r], _entropy(rows[-1])) if len(rows) else states[r]
            if states[r].model == FULL:
                kv.caches[SMALL].crop(r, sequences[r].fed)  # keep what it caught up on, drop this step's feed
            else:
                logits[r] = rows
        full = [r for r, (s, f) in enumerate(zip(states, feeds)) if s.model == FULL and f and logits[r] is None]
        for r, rows in self._pass(FULL, kv, full, feeds, keep, parents, sequences).items():
            logits[r] = rows
            if len(rows) and r not in small:  # a row that switched up this step counted its small entropy already
                states[r] = self.switch.after(states[r], _entropy(rows[-1]))
        for r, (seq, state) in enumerate(zip(sequences, states)):
            if logits[r] is None:
                logits[r] = torch.empty(0, self.width)
                continue
            seq.extras[SwitchRunner] = state
            seq.counters["ead/switches"] = state.switches
        return Forward(logits=logits)  # type: ignore[arg-type]

    def _pass(self, name: str, kv: PairedKV, rows: list[int], feeds: Seq[Seq[int]], keep: Seq[int],
              parents: Seq[Seq[int] | None] | None, sequences: Seq[Sequence]) -> dict[int, torch.Tensor]:
        """Feed ``rows`` to model ``name``, each prefixed by the committed tokens it has not seen; their logits."""
        if not rows:
            return {}
        cache = kv.caches[name]
        catch = {r: sequences[r].tokens[cache.length(r): sequences[r].fed] for r in rows}
        n = len(feeds)
        out = self.runners[name].forward(
            cache, [list(catch[r]) + list(feeds[r]) if r in catch else [] for r in range(n)],
            [keep[r] if r in catch else 0 for r in range(n)],
            parents=None if parents is None else [_shift(parents[r], len(catch[r])) if r in catch else None for r in range(n)])
        for r in rows:
            kv.fed_last[r] = name
            seq = sequences[r]
            seq.producer = name
            for key, add in ((f"ead/passes_{name}", 1), (f"ead/catch_up_{name}", len(catch[r]))):
                seq.counters[key] = seq.counters.get(key, 0) + add
        return {r: out.logits[r] for r in rows}


def _shift(tree: Seq[int] | None, n: int) -> list[int] | None:
    """A feed's tree (``KVCache.step_layout``) with ``n`` chain tokens put in front of it."""
    if tree is None or n == 0:
        return None if tree is None else list(tree)
    return list(range(-1, n - 1)) + [n - 1 if p < 0 else p + n for p in tree]


def _entropy(row: torch.Tensor) -> float:
    logp = torch.log_softmax(row.float(), dim=-1)
    return float(-(logp.exp() * logp.nan_to_num(neginf=0.0)).sum())
