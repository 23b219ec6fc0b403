"""``ASAp``: grammar-aligned sampling in ctrldec's loop, learning across calls (samplers/asap.py).

``ctrldec.generate(..., constraint=c, sampler=ASAp(oracle))`` draws each token with probability
``∝ p(x | u) · EFG~(u x)`` from the oracle's trie, and adds the finished samples to the trie, so
repeated calls for one prompt and constraint converge to ``P(output | output in L)``.

* **Rounds.** One generate call is one round: ``generate`` draws one sample,
  ``generate_batch([prompt] * B)`` draws B with one batched forward pass per step (the shared
  prompt prefilled once, its KV row copied). Every sample of
  a round is drawn with the trie as it was when the round began; the round's paths are added
  after its last step. The estimates therefore lag by one round: with B = 8 a sample does not
  benefit from the (up to) 7 others of its round. ``ctrldec bench fidelity`` reports what that
  costs in KL (B = 1 against B = 8 at the same number of samples).
* **What is learned.** Every committed token: sampled ones with the step's allowed mass, forced
  ones (fast-forward) as the only allowed token of their node (the language the loop samples has
  the canonical tokenization of forced text, as for every sampler), and the EOS step. Where the
  constraint allows only EOS, the loop takes one more pass for the EOS step's probability (like
  SMC). An output cut by ``max_new_tokens`` (or forced to end because no room is left) adds the
  nodes it sampled from, never the node where the budget cut it (that would under-estimate).
* **Drafts.** Speculative drafts (prompt lookup) are declined: a node must be sampled from the
  same way in every run for its estimate to mean one thing. Forced text is still fast-forwarded.
* **Temperature 1** only: the oracle learns the model's own distribution.

>>> import ctrldec
>>> model, tok = ctrldec.models.load()                                              # doctest: +SKIP
>>> asap = ctrldec.ASAp()                                     # a fresh oracle: asap.oracle
>>> for seed in range(100):                                                         # doctest: +SKIP
...     out = ctrldec.generate(model, tok, "Pick a word.", constraint=ctrldec.Regex("cat|car|dog"),
...                            sampler=asap, seed=seed)
>>> asap.oracle.save("words.asap.npz")                                              # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence as Seq

import torch

from ..controllers.base import Controls
from ..decoding.loop import Batch
from ..decoding.sequence import Sequence
from ..errors import CtrldecError
from ..samplers.asap import ASApOracle, ASApStep, OracleKey
from ..speculative.drafters import Drafter
from .sampling import Sampling, _Plan

__all__ = ["ASAp"]


class ASAp:
    """Grammar-aligned sampling: ``ctrldec.generate(..., sampler=ASAp(oracle))`` (module docstring).

    Args:
        oracle: the ``ASApOracle`` to sample with and to teach (a new one by default: ``.oracle``).
        learn: add each round's samples to the oracle (False: sample from it as it is).
    """

    # options ASAp cannot honour, and why (``generate`` raises with the reason)
    refuses = {"speculative": "ASAp samples every token from its oracle's node, so a draft has nothing to be checked "
                              "against (forced text alone is fine: Speculative(['forced']))",
               "ead": "ASAp's oracle learns one model's distribution, and EAD switches between two",
               "controllers": "ASAp's oracle learns the model's own distribution under the constraint, and a controller "
                              "changes that distribution step by step"}

    def __init__(self, oracle: ASApOracle | None = None, *, learn: bool = True) -> None:
        if oracle is not None and not isinstance(oracle, ASApOracle):
            raise CtrldecError(f"ASAp takes an ASApOracle, got {type(oracle).__name__}")
        self.oracle = oracle if oracle is not None else ASApOracle()
        self.learn = learn
        self.controls = Controls()

    def __repr__(self) -> str:
        return f"ASAp({self.oracle!r}, learn={self.learn})"

    def strategy(self, drafters: Seq[Drafter] = ()) -> _Run:
        """The strategy for one generate call (one round)."""
        return _Run(self, drafters)


def key_of(seq: Sequence) -> OracleKey:
    """The oracle key of a sequence: its prompt, constraint and tokenizer."""
    if seq.constraint is None:
        raise CtrldecError("ASAp samples from P(output | output in the constraint's language): it needs a constraint "
                           "(constraint=...); without one, plain sampling already follows the model")
    return OracleKey(tuple(seq.prompt), seq.constraint.fingerprint, seq.info.hash, repr(seq.constraint))


class _Run(Sampling):
    """One round: ``Sampling``'s step with an ``ASApStep`` per sequence, then the trie update."""

    speculative = False  # forced text only: every other token is sampled from its node (module docstring)

    def __init__(self, config: ASAp, drafters: Seq[Drafter]) -> None:
        super().__init__(None, drafters)  # type: ignore[arg-type]  # each sequence has its own ASApStep
        self.config = config
        self.samplers: dict[int, ASApStep] = {}  # id(sequence) -> its sampler
        self._observed = False

    def step(self, batch: Batch) -> None:
        if self.samplers:
            super().step(batch)
        else:
            self._start(batch)
            self._share_prefill(batch)
        if self.config.learn and not self._observed and all(s.finished for s in batch.sequences):
            for seq in batch.sequences:
                self.config.oracle.observe(self.samplers[id(seq)].steps)
            self._observed = True

    def _start(self, batch: Batch) -> None:
        for seq in batch.sequences:
            self.config.oracle.bind(key_of(seq))
            seq.end_when_done = False  # the EOS step is learned from: its probability needs a pass
            self.samplers[id(seq)] = ASApStep(self.config.oracle, seq.eos)

    def _share_prefill(self, batch: Batch) -> None:
        """The round's first step. Rows with the same feed (prompt and forced text, as in
        ``generate_batch([prompt] * B)``) go through the model once: one row per distinct feed is
        fed, then its KV row is copied to the others, as SMC's fan-out does."""
        everyone = list(batch.live)
        plans = [self._plan(seq) for seq in everyone]  # commits forced text: plans are made once
        groups: dict[tuple[int, ...], int] = {}
        group = [groups.setdefault(tuple(p.feed), len(groups)) for p in plans]
        leaders = [group.index(g) for g in range(len(groups))]
        if not any(p.feed for p in plans):
            return
        batch.reassign([everyone[i] for i in leaders], [everyone[i].row for i in leaders])
        out = batch.forward([plans[i].feed for i in leaders], [plans[i].keep for i in leaders])
        batch.reassign(everyone, group)
        for seq, plan, g in zip(everyone, plans, group):
            leader = everyone[leaders[g]]
            seq.fed, seq.counters["passes"] = leader.fed, leader.counters.get("passes", 0)
            self._settle(seq, plan, out.logits[g], batch)

    def _plan(self, seq: Sequence) -> _Plan:
        plan = super()._plan(seq)
        if seq.must_end:
            return _Plan(seq.unfed, seq.unscored, None, ends=True)
        return plan

    def _settle(self, seq: Sequence, plan: _Plan, rows: torch.Tensor, batch: Batch) -> None:
        sampler = self.samplers[id(seq)]
        if plan.scored:
            seq.score(rows[: plan.scored])
        for i in range(len(sampler.steps), len(seq.ids)):  # forced tokens, scored by now
            if math.isnan(seq.logprobs[i]):
                break
            sampler.forced(seq.ids[i], seq.logprobs[i])
        if plan.ends:
            if seq.matcher.is_done():  # not when only the token budget ends it (module docstring)
                sampler.end(rows[plan.scored], seq.matcher)
            seq.finish("eos")
        elif plan.draft is not None:
            self.verifier.verify(seq, rows[plan.scored:], plan.draft, sampler)
