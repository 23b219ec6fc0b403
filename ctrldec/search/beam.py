"""``BeamSearch`` and ``DiverseBeamSearch``: the B most likely outputs under a constraint, or B
different ones.

Beam search keeps the ``beams`` best partial outputs by their summed log-probability; each step
every live beam is extended by one token in **one batched forward pass** (the survivors' KV cache
rows are placed with ``KVCache.place_rows``: a beam's first child keeps its row, a further child is
copied into the row of a beam that has none). Under a constraint every beam carries its own
forked ``Matcher`` and the scores are ``log p~``, the model's distribution restricted to what the
constraint allows and **renormalized** (so a token the constraint forces costs nothing, and an EOS
is a candidate only where the constraint may end).

A step, per prompt (transformers' beam search, 4.x and 5.x, step for step):

1. the candidates are every (beam, token) pair scored ``score(beam) + log p~(token)``; the best
   ``(1 + #EOS) * beams`` are ranked;
2. an EOS candidate, or one that reaches ``max_new_tokens``, *finishes* a hypothesis if it ranks
   among the first ``beams``; the finished hypotheses keep the ``beams`` best by
   ``score / length ** length_penalty`` (length in generated tokens, the EOS counted);
3. the first ``beams`` candidates that do not finish are the next beams;
4. the search stops when no live beam can beat the worst kept hypothesis (``early_stopping``:
   False is transformers' heuristic, the best live score divided by its current length; True
   stops as soon as ``beams`` hypotheses are kept; ``"never"`` with a positive length penalty
   divides by the longest length instead), or when no beam is left.

With ``fast_forward`` (the default of ``ctrldec.generate``), the tokens the constraint fixes are
appended to a beam right after the token that led to them, canonically tokenized and at no cost
to its score, and fed in the same forward pass as its next step: schema keys and punctuation cost
no step at all.

With ``recombine`` (the default), two candidates with the same text are one: under a grammar a
text can be tokenized many ways (``,"`` or ``,`` then ``"``), and transformers' beam search
spends its beams on such copies (``ctrldec bench search``: 4.45 different objects among 6
hypotheses on 20 schemas); only the best-scoring tokenization of a text is kept, among the next
beams of a group and among the hypotheses of all groups.

``BeamSearch(B, recombine=False)`` with ``fast_forward=False`` is exactly transformers'
``generate(num_beams=B)``, and under a constraint ``generate(num_beams=B,
logits_processor=[GrammarLogitsProcessor(...)])``: the same hypotheses with the same scores (the
tests compare them token for token).

**Diverse beam search** (Vijayakumar et al., AAAI 2018; ALGORITHMS.md) splits the beams into
``groups`` of ``beams / groups``; each step the groups are extended in order, and a candidate of
group g is ranked by its score minus ``diversity`` times the number of beams of groups ``0..g-1``
that chose the same token at this step (Hamming diversity). The penalty steers the choice at that
step only: the scores the beams carry, and the hypotheses' scores, stay the model's
log-probabilities (transformers' old ``group_beam_search`` added the penalty to the running score;
the paper's objective does not). Each group keeps its own hypotheses and stops on its own; with
one group it is beam search, step for step.

The result is the best hypothesis; ``result.search`` (a ``SearchReport``) holds all of them.

>>> import ctrldec                                                                       # doctest: +SKIP
>>> out = ctrldec.generate(model, tok, "A cat as JSON:", constraint=ctrldec.JSONSchema(schema),
...                        search=ctrldec.DiverseBeamSearch(beams=6, groups=3, diversity=0.5))  # doctest: +SKIP
>>> [h.text for h in out.search.hypotheses]                                              # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import numpy as np
import torch

from ..controllers.base import Controls
from ..decoding.loop import Batch
from ..decoding.sequence import GenerationResult, Sequence
from ..errors import CtrldecError
from ..numeric import log_softmax
from ..samplers.base import Choice
from ..speculative.drafters import Drafter
from .common import certain_drafters, constrained_logp, fast_forward

__all__ = ["BeamSearch", "DiverseBeamSearch", "SearchReport"]


@dataclass(frozen=True)
class SearchReport:
    """Every hypothesis a search returned, best first: ``scores[i]`` is hypothesis ``i``'s ranking
    score (its summed ``log p~`` divided by its length to the ``length_penalty``), ``groups[i]``
    the group that found it (diverse beam search; 0 otherwise)."""

    hypotheses: list[GenerationResult]
    scores: list[float]
    groups: list[int]

    @property
    def texts(self) -> list[str]:
        return [h.text for h in self.hypotheses]


class BeamSearch:
    """Beam search under any constraint: ``ctrldec.generate(..., search=BeamSearch(beams=4))``.

    Args:
        beams: live beams per prompt, and hypotheses returned (>= 1).
        length_penalty: hypotheses are ranked by ``score / length ** length_penalty`` (1.0 as in
            transformers; 0: raw log-probability; > 1 favours longer outputs).
        early_stopping: False (transformers' default heuristic), True or ``"never"`` (see the
            module docstring).
        recombine: beams and hypotheses with the same text (another tokenization of it, which
            under a grammar often differs only in how punctuation is split) are merged, the best
            score kept, so the ``beams`` hypotheses are ``beams`` different texts (across groups
            too). False is transformers' beam search, which keeps such duplicates.
    """

    groups = 1
    diversity = 0.0
    # options this search cannot honour, and why (``generate`` raises with the reason)
    refuses = {"ead": "beam scores add log-probabilities, and under EAD hypotheses on different models would be "
                      "ranked by different models"}

    def __init__(self, beams: int = 4, length_penalty: float = 1.0, early_stopping: bool | str = False, *,
                 recombine: bool = True) -> None:
        if isinstance(beams, bool) or not isinstance(beams, int) or beams < 1:
            raise CtrldecError(f"beams must be an integer >= 1, got {beams!r}")
        if not isinstance(length_penalty, (int, float)) or not math.isfinite(length_penalty):
            raise CtrldecError(f"length_penalty must be a finite number, got {length_penalty!r}")
        if early_stopping not in (True, False, "never"):
            raise CtrldecError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
        self.beams = beams
        self.length_penalty = float(length_penalty)
        self.early_stopping = early_stopping
        self.recombine = bool(recombine)
        self.controls = Controls()

    def __repr__(self) -> str:
        return f"BeamSearch(beams={self.beams}, length_penalty={self.length_penalty}, recombine={self.recombine})"

    def strategy(self, drafters: Seq[Drafter] = ()) -> _Run:
        """The strategy for one generate call (it holds that call's beams)."""
        return _Run(self, certain_drafters(drafters))


class DiverseBeamSearch(BeamSearch):
    """Diverse (group) beam search: ``beams`` split into ``groups``, Hamming diversity ``diversity``
    (> 0 when there is more than one group). See the module docstring."""

    def __init__(self, beams: int = 6, groups: int = 3, diversity: float = 0.5, length_penalty: float = 1.0,
                 early_stopping: bool | str = False, *, recombine: bool = True) -> None:
        super().__init__(beams, length_penalty, early_stopping, recombine=recombine)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise CtrldecError(f"groups must be an integer >= 1, got {groups!r}")
        if beams % groups:
            raise CtrldecError(f"beams={beams} is not divisible by groups={groups}: every group needs the same "
                               "number of beams")
        if not isinstance(diversity, (int, float)) or not math.isfinite(diversity) or (groups > 1 and diversity <= 0):
            raise CtrldecError(f"diversity must be > 0 with groups={groups} (0 would make every group the same beam "
                               f"search), got {diversity!r}")
        self.groups = groups
        self.diversity = float(diversity)

    def __repr__(self) -> str:
        return f"DiverseBeamSearch(beams={self.beams}, groups={self.groups}, diversity={self.diversity})"


@dataclass
class _Beam:
    seq: Sequence
    score: float  # summed log p~ of the chosen tokens (forced tokens add 0)
    token: int = -1  # the token chosen at the last step


@dataclass
class _Group:
    """One group's live beams and kept hypotheses (``(ranking score, sequence)``, best first)."""

    beams: list[_Beam]
    kept: list[tuple[float, Sequence]] = field(default_factory=list)
    done: bool = False


@dataclass
class _Prompt:
    root: Sequence
    groups: list[_Group]


class _Run:
    """One beam search call: every live beam of every group of every prompt in one forward pass."""

    def __init__(self, config: BeamSearch, drafters: list[Drafter]) -> None:
        self.config = config
        self.drafters = drafters
        self.size = config.beams // config.groups  # beams per group
        self.prompts: list[_Prompt] = []

    def step(self, batch: Batch) -> None:
        if not self.prompts:
            self._start(batch)
        live = batch.live
        feeds = [[] if s.finished else s.unfed for s in live]
        out = batch.forward(feeds, [0 if s.finished else s.unscored + 1 for s in live])
        logp = {}
        for seq, rows in zip(live, out.logits):
            if seq.finished:
                continue
            n = seq.unscored
            if n:
                seq.score(rows[:n])
            logp[id(seq)] = (rows[n], constrained_logp(rows[n], seq))
        survivors: list[Sequence] = []
        for prompt in self.prompts:
            chosen: list[int] = []  # the tokens earlier groups' beams chose at this step
            for group in prompt.groups:
                if not group.done:
                    self._extend(prompt, group, logp, chosen)
                    survivors.extend(b.seq for b in group.beams)
        ended = [s for prompt in self.prompts for group in prompt.groups for _, s in group.kept if s.unscored]
        if ended:
            self._score_ended(batch, survivors, ended)
        batch.reassign(survivors, [s.row for s in survivors], any_order=True)

    @staticmethod
    def _score_ended(batch: Batch, survivors: list[Sequence], ended: list[Sequence]) -> None:
        """Hypotheses that ended in this step on forced text (a stop string, the length limit)
        were never fed it: one more pass, on their parents' rows, scores those tokens. Rare: it
        takes forced text that ends the output."""
        batch.reassign(survivors + ended, [s.row for s in survivors + ended], any_order=True)
        scored = [s.unscored if s.finished else 0 for s in batch.live]  # the live beams wait for the next step
        out = batch.forward([s.unfed[:-1] if n else [] for s, n in zip(batch.live, scored)], scored)
        for seq, rows, n in zip(batch.live, out.logits, scored):
            if n:
                seq.score(rows[:n])

    def _start(self, batch: Batch) -> None:
        for root in batch.live:
            root.end_when_done = False  # an EOS is a candidate like any token (it is ranked)
            fast_forward(root, self.drafters)
            groups = [_Group([_Beam(root, 0.0)]) for _ in range(self.config.groups)]
            if root.finished:  # a stop string in the forced text, or nothing to generate
                groups = [_Group([], [(0.0, root)], done=True)]
            self.prompts.append(_Prompt(root, groups))

    def _extend(self, prompt: _Prompt, group: _Group, logp: dict, chosen: list[int]) -> None:
        """One step of one group: rank its candidates, keep finished hypotheses, pick the next beams."""
        beams: list[_Beam] = []
        claimed: set[bytes] = set()  # the next beams' texts (recombination)
        data: dict[int, bytes] = {}
        normalized: dict[int, np.ndarray] = {}  # a parent's model log-probabilities, for all its children

        def model_logp(seq: Sequence) -> np.ndarray:
            if id(seq) not in normalized:
                normalized[id(seq)] = log_softmax(logp[id(seq)][0])
            return normalized[id(seq)]

        for rank, (_, beam, token, score) in enumerate(self._candidates(group, logp, chosen)):
            seq = beam.seq
            if token is None:  # out of room after forced text: the beam ends as it is
                self._keep(group, seq, score, len(seq.ids))
                continue
            if token in seq.eos or len(seq.ids) + 1 >= seq.max_new_tokens:
                if rank < self.size:
                    child = seq.fork()
                    child.commit(Choice(token), logp[id(seq)][0], logp=model_logp(seq))
                    child.finish("eos" if token in seq.eos else "length")
                    self._keep(group, child, score, len(seq.ids) + 1)
                continue
            if len(beams) == self.size:
                continue
            if self.config.recombine:  # another tokenization of a text a better beam already has
                text = data.setdefault(id(seq), seq.data) + seq.info.token_bytes[token]
                if text in claimed:
                    continue
                claimed.add(text)
            child = seq.fork()  # keeps the parent's KV row until the batch is reassigned
            child.commit(Choice(token), logp[id(seq)][0], logp=model_logp(seq))
            fast_forward(child, self.drafters)
            if child.finished:  # a stop string
                self._keep(group, child, score, len(child.ids))
            else:
                beams.append(_Beam(child, score, token))
        group.beams = beams
        chosen.extend(b.token for b in beams)
        group.done = not beams or self._cannot_improve(prompt, group)

    def _candidates(self, group: _Group, logp: dict, chosen: list[int]) -> list[tuple[float, _Beam, int | None, float]]:
        """The group's best ``(1 + #EOS) * size`` candidates, as ``(rank key, beam, token, score)``."""
        top = max(2, 1 + len(group.beams[0].seq.eos)) * self.size
        penalty = torch.zeros(0)
        if chosen and self.config.diversity:
            width = next(iter(logp.values()))[1].numel()
            penalty = torch.bincount(torch.tensor(chosen), minlength=width)[:width].float() * self.config.diversity
        out = []
        for beam in group.beams:
            if beam.seq.room <= 0:
                out.append((beam.score, beam, None, beam.score))
                continue
            lp = logp[id(beam.seq)][1]
            key = lp - penalty if len(penalty) else lp
            values, tokens = torch.topk(key, min(top, key.numel()))
            for v, t in zip(values.tolist(), tokens.tolist()):
                if v != float("-inf"):  # fewer than ``top`` tokens allowed
                    out.append((beam.score + v, beam, t, beam.score + float(lp[t])))
        out.sort(key=lambda c: -c[0])
        return out[:top]

    def _keep(self, group: _Group, seq: Sequence, score: float, length: int) -> None:
        """Add a finished hypothesis to the group's. A group ranks its ``size`` best; with several
        groups and ``recombine`` it keeps up to ``beams`` (a reserve for texts other groups also
        found, see ``results``), and a text at most once, with its best score."""
        ranking = score / (max(length, 1) ** self.config.length_penalty)
        if self.config.recombine:
            same = [h for h in group.kept if h[1].text == seq.text]
            if same and same[0][0] >= ranking:
                return
            if same:
                group.kept.remove(same[0])
        group.kept.append((ranking, seq))
        group.kept.sort(key=lambda h: -h[0])
        del group.kept[self.config.beams if self.config.recombine else self.size:]

    def _cannot_improve(self, prompt: _Prompt, group: _Group) -> bool:
        """No live beam of ``group`` can beat its ``size``-th hypothesis (with ``recombine``, of
        those whose text no earlier group has: a group searches on until it has its own)."""
        cfg = self.config
        kept = group.kept
        if cfg.recombine and prompt.groups[0] is not group:
            earlier = {s.text for other in prompt.groups[: prompt.groups.index(group)] for _, s in other.kept}
            kept = [h for h in kept if h[1].text not in earlier]
        if len(kept) < self.size:
            return False
        if cfg.early_stopping is True:
            return True
        worst = kept[self.size - 1][0]
        lp = cfg.length_penalty

        def best(b: _Beam) -> float:
            n = b.seq.max_new_tokens if cfg.early_stopping == "never" and lp > 0 else len(b.seq.ids)
            return b.score / (max(n, 1) ** lp)

        return max(best(b) for b in group.beams) <= worst

    def results(self, batch: Batch) -> list[GenerationResult]:
        out = []
        for prompt in self.prompts or [_Prompt(s, []) for s in batch.sequences]:
            kept = self._hypotheses(prompt)
            if not kept:  # nothing finished (no prompt step ran): the root as it is
                out.append(prompt.root.result(batch.timing(prompt.root)))
                continue
            hypotheses = [s.result(batch.timing(s)) for _, _, s in kept]
            best = hypotheses[0]
            best.search = SearchReport(hypotheses, [r for r, _, _ in kept], [g for _, g, _ in kept])
            out.append(best)
        return out

    def _hypotheses(self, prompt: _Prompt) -> list[tuple[float, int, Sequence]]:
        """The returned hypotheses ``(ranking, group, sequence)``, best first: each group's ``size``
        best; with ``recombine``, texts an earlier group already gave are replaced by the group's
        next ones, and what is still missing is filled from every group's reserve."""
        if not self.config.recombine:
            return sorted(((r, g, s) for g, group in enumerate(prompt.groups) for r, s in group.kept[:self.size]),
                          key=lambda h: -h[0])
        out: list[tuple[float, int, Sequence]] = []
        texts: set[str] = set()
        for g, group in enumerate(prompt.groups):
            fresh = [(r, g, s) for r, s in group.kept if s.text not in texts][:self.size]
            out += fresh
            texts.update(s.text for _, _, s in fresh)
        for r, g, s in sorted(((r, g, s) for g, group in enumerate(prompt.groups) for r, s in group.kept), key=lambda h: -h[0]):
            if len(out) >= self.config.beams:
                break
            if s.text not in texts:
                out.append((r, g, s))
                texts.add(s.text)
        return sorted(out, key=lambda h: -h[0])
