"""``SMC``: sequential Monte Carlo over particles weighted by AWRS, for outputs distributed as the
model would write them given the constraint.

Token-by-token masking samples each token from the model's distribution restricted to what the
constraint allows; the probability of a whole output is then not ``P(w | w in L)``: outputs
whose prefixes the model likes but which can only be finished in unlikely ways are
over-weighted. SMC corrects that (ALGORITHMS.md, AWRS step 4):

* ``particles`` copies of the sequence share the prompt's forward pass, then each draws its own
  tokens with ``AWRS``, one batched forward pass per step for every live particle;
* each particle's weight is multiplied by AWRS's estimate of the allowed mass at every sampled
  step, and by the potential's probability of every forced (fast-forwarded) token;
* when the effective sample size ``(sum w)^2 / sum w^2`` falls below ``ess_threshold *
  particles``, the particles are resampled (systematic resampling by default: lower variance
  than multinomial), survivors copied with their matchers, controller states and KV cache rows,
  and every weight set to the mean (so the mean weight stays an unbiased estimate of ``P(L)``);
* a particle ends at EOS (complete), at ``max_new_tokens`` (incomplete: weight 0 in the target)
  or when its weight is 0 ("dead"); the output is one particle drawn in proportion to the final
  weights of the complete ones.

``result.smc`` (an ``SMCReport``) holds every particle with its weight, the estimate of
``log P(L)`` (the log of the mean final weight), the effective sample size after every step and
the steps at which the particles were resampled. If no particle completes, the output is the
heaviest incomplete particle, flagged ``truncated`` (a valid prefix, never an invalid output).
"""

from __future__ import annotations

import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..decoding.loop import Batch
from ..decoding.sequence import GenerationResult, Sequence
from ..errors import CtrldecError
from ..samplers.awrs import AWRS
from ..speculative.drafters import Drafter
from .sampling import Sampling, _Plan

__all__ = ["SMC", "SMCReport"]


@dataclass(frozen=True)
class SMCReport:
    """What one SMC run produced (see the module docstring). ``log_weights[i]`` is particle
    ``i``'s final log weight (-inf for incomplete or dead particles)."""

    particles: list[GenerationResult]
    log_weights: list[float]
    log_marginal_likelihood: float
    ess: list[float]
    resampled: list[int]

    @property
    def complete(self) -> int:
        return sum(math.isfinite(w) for w in self.log_weights)


class SMC:
    """Sequential Monte Carlo with AWRS weights: ``ctrldec.generate(..., sampler=SMC(particles=8))``.

    Args:
        particles: how many (>= 1).
        ess_threshold: resample when the effective sample size falls below this share of the
            particles, in (0, 1] (1: after every step; small: rarely).
        sampler: the ``AWRS`` sampler each particle draws with (temperature, top-k/p, min-p and
            controllers go there); ``AWRS()`` by default.
        resampling: ``"systematic"`` (default) or ``"multinomial"``.
    """

    def __init__(self, particles: int = 8, ess_threshold: float = 0.5, *, sampler: AWRS | None = None,
                 resampling: str = "systematic") -> None:
        if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
            raise CtrldecError(f"SMC needs at least one particle, got particles={particles!r}")
        if not (isinstance(ess_threshold, (int, float)) and 0 < ess_threshold <= 1):
            raise CtrldecError(f"ess_threshold must be in (0, 1], got {ess_threshold!r}")
        if resampling not in ("systematic", "multinomial"):
            raise CtrldecError(f"resampling must be 'systematic' or 'multinomial', got {resampling!r}")
        self.particles = particles
        self.ess_threshold = float(ess_threshold)
        self.sampler = sampler or AWRS()
        if not isinstance(self.sampler, AWRS):
            raise CtrldecError(f"SMC weighs particles with AWRS's estimates; {self.sampler!r} gives none")
        self.controls = self.sampler.controls
        self.resampling = resampling

    def __repr__(self) -> str:
        return f"SMC(particles={self.particles}, ess_threshold={self.ess_threshold}, sampler={self.sampler!r})"

    def strategy(self, drafters: Seq[Drafter] = ()) -> _Run:
        """The strategy for one generate call (it holds that call's particles)."""
        return _Run(self, drafters)


@dataclass
class _Group:
    """One prompt's particles."""

    root: Sequence
    rng: torch.Generator
    particles: list[Sequence] = field(default_factory=list)
    ess: list[float] = field(default_factory=list)
    resampled: list[int] = field(default_factory=list)


class _Run(Sampling):
    """One SMC run: ``Sampling``'s step for every live particle, then weights and resampling."""

    def __init__(self, config: SMC, drafters: Seq[Drafter]) -> None:
        super().__init__(config.sampler, drafters)
        self.config = config
        self.groups: list[_Group] = []

    def step(self, batch: Batch) -> None:
        if not self.groups:
            self._fan_out(batch)
            return
        super().step(batch)
        batch.retire()
        for group in self.groups:
            self._resample(group)
        live = [p for g in self.groups for p in g.particles if not p.finished]
        # any order: a resampled particle's row is copied in place into a dropped one's
        # (KVCache.place_rows), not the whole cache gathered anew
        batch.reassign(live, [p.row for p in live], any_order=True)

    def _plan(self, seq: Sequence) -> _Plan:
        plan = super()._plan(seq)
        if seq.must_end:  # the EOS step still carries weight: the potential's probability of EOS
            return _Plan(seq.unfed, seq.unscored, None, ends=True)
        return plan

    def _settle(self, seq: Sequence, plan: _Plan, rows: torch.Tensor, batch: Batch) -> None:
        self._weigh_forced(seq, rows[: plan.scored])
        super()._settle(seq, plan, rows, batch)
        if plan.ends:
            seq.log_weight += self.sampler.log_potential_of(rows[plan.scored], seq.eos, seq.state)
            seq.finish("eos")
        if seq.log_weight == -math.inf:
            seq.finish("dead")

    def _weigh_forced(self, seq: Sequence, rows: torch.Tensor) -> None:
        if len(rows):
            seq.log_weight += self.sampler.log_potential(rows, seq.ids[len(seq.ids) - len(rows):], seq.state)

    # -- the first step: one pass for the prompt, then the particles --------------------------------

    def _fan_out(self, batch: Batch) -> None:
        roots = list(batch.live)
        feeds, keeps = [], []
        for root in roots:
            root.end_when_done = False  # copied by the particles: their EOS step is weighed
            self._draft(root)  # commits forced tokens; a speculative draft would be one particle's guess
            scored = root.unscored
            feeds.append(root.unfed if not root.finished else root.unfed[:-1] if scored else [])
            keeps.append(scored + (not root.finished))
        out = batch.forward(feeds, keeps).logits if any(feeds) else [torch.zeros(0)] * len(roots)
        for root, rows in zip(roots, out):
            self.groups.append(self._particles(root, rows))
        live = [p for g in self.groups for p in g.particles if not p.finished]
        batch.reassign(live, [p.row for p in live])

    def _particles(self, root: Sequence, rows: torch.Tensor) -> _Group:
        """The group of ``root``'s particles, each with its first token drawn from the prompt's pass."""
        scored = root.unscored
        if scored:
            root.score(rows[:scored])
            self._weigh_forced(root, rows[:scored])
        group = _Group(root, torch.Generator().manual_seed(_seed(root.rng)))
        if root.must_end:  # the constraint is complete after the forced text
            root.log_weight += self.sampler.log_potential_of(rows[scored], root.eos, root.state)
            root.finish("eos")
        group.particles = [root.fork() for _ in range(self.config.particles)]  # the root stays the shared prefix
        for p in group.particles:
            p.rng = torch.Generator().manual_seed(_seed(group.rng))
            if not p.finished:
                p.commit(self.sampler.choose(rows[scored], p.matcher, p.rng, p.state), rows[scored])
            if p.log_weight == -math.inf:
                p.finish("dead")
        return group

    # -- resampling -------------------------------------------------------------------------------------

    def _resample(self, group: _Group) -> None:
        lw = np.array([_effective(p) for p in group.particles])
        if not np.isfinite(lw).any():
            return
        w = np.exp(lw - lw.max())
        w /= w.sum()
        ess = float(1.0 / (w * w).sum())
        group.ess.append(ess)
        n = len(group.particles)
        if ess >= self.config.ess_threshold * n or all(p.finished for p in group.particles):
            return
        mean = float(np.logaddexp.reduce(lw) - math.log(n))
        chosen: set[int] = set()
        survivors = []
        for i in self._indices(w, group.rng):
            p = group.particles[i] if i not in chosen else group.particles[i].fork()
            if i in chosen:
                p.rng = torch.Generator().manual_seed(_seed(group.rng))
            chosen.add(i)
            p.log_weight = mean
            survivors.append(p)
        group.particles = survivors
        group.resampled.append(len(group.ess))

    def _indices(self, w: np.ndarray, rng: torch.Generator) -> list[int]:
        n = len(w)
        if self.config.resampling == "multinomial":
            return torch.multinomial(torch.from_numpy(w), n, replacement=True, generator=rng).tolist()
        u = (float(torch.rand(1, generator=rng, dtype=torch.float64)) + np.arange(n)) / n
        return np.minimum(np.searchsorted(np.cumsum(w), u), n - 1).tolist()

    # -- the result ---------------------------------------------------------------------------------------

    def results(self, batch: Batch) -> list[GenerationResult]:
        return [self._result(g, batch) for g in self.groups]

    def _result(self, group: _Group, batch: Batch) -> GenerationResult:
        particles = [p.result(batch.timing(p)) for p in group.particles]
        lw = np.array([_effective(p) for p in group.particles])
        n = len(particles)
        if np.isfinite(lw).any():
            w = np.exp(lw - lw.max())
            pick = int(torch.multinomial(torch.from_numpy(w / w.sum()), 1, generator=group.rng))
            log_ml = float(np.logaddexp.reduce(lw) - math.log(n))
        else:
            pick = int(np.argmax([p.log_weight for p in group.particles]))
            log_ml = -math.inf
        report = SMCReport(particles, [float(x) for x in lw], log_ml, group.ess, group.resampled)
        return replace(particles[pick], smc=report)


def _effective(p: Sequence) -> float:
    """A particle's weight in the target: 0 (log -inf) once it ended without EOS."""
    return p.log_weight if not p.finished or p.finish_reason == "eos" else -math.inf


def _seed(rng: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=rng))
