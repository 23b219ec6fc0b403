"""``ContrastiveSearch``: fluent, non-repetitive text (Su et al., NeurIPS 2022), under any constraint.

Each step takes the ``k`` most likely tokens of the constrained distribution ``p~`` (the model's,
restricted to what the constraint allows and renormalized) and picks

    argmax over those v of  (1 - alpha) * p~(v) - alpha * max_j cos(h_v, h_j)

with ``h_v`` the last hidden state of candidate ``v`` and ``h_j`` those of the context: a token
whose representation repeats one already in the context is penalized (the *degeneration
penalty*). ``alpha = 0`` is greedy decoding, token for token.

How it runs in ctrldec's loop:

* the ``k`` candidates are scored in **one forward pass**, as sibling branches of one row with a
  tree attention mask (each sees the context and itself, not the others), so no KV cache row is
  copied; the chosen branch's logits are the next step's distribution, and its tokens are fed
  again at the head of the next pass (only the context before the branches stays cached): each
  chosen token costs one pass of about ``k + 1`` tokens;
* tokens the constraint forces after a candidate (fast-forward) are fed in that candidate's
  branch of the same pass, appended without scoring: they are the constraint's, not a choice;
* the context is the prompt and everything generated, forced tokens included. The prompt counts,
  as in the paper and in transformers: the penalty is about the model's representations of the
  whole text it conditions on, and a chat prompt's hidden states are what a reply that parrots
  the question would repeat. Its hidden states come from the prefill at no extra cost.

>>> import ctrldec                                                                       # doctest: +SKIP
>>> out = ctrldec.generate(model, tok, "Tell me about cats.", search=ctrldec.ContrastiveSearch(0.6, 4))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from ..controllers.base import Controls
from ..decoding.loop import Batch
from ..decoding.sequence import GenerationResult, Sequence
from ..errors import CtrldecError
from ..samplers.base import Choice
from ..speculative.drafters import Drafter
from .common import certain_drafters, constrained_logp, fast_forward

__all__ = ["ContrastiveSearch"]


class ContrastiveSearch:
    """Contrastive search: ``ctrldec.generate(..., search=ContrastiveSearch(alpha=0.6, k=4))``.

    Args:
        alpha: weight of the degeneration penalty, in [0, 1] (0: greedy).
        k: candidates per step (>= 1; 1 is greedy).
    """

    # options this search cannot honour, and why (``generate`` raises with the reason)
    refuses = {"ead": "contrastive search compares the model's hidden states, and the two models' are not comparable"}

    def __init__(self, alpha: float = 0.6, k: int = 4) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise CtrldecError(f"alpha must be in [0, 1], got {alpha!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise CtrldecError(f"k must be an integer >= 1, got {k!r}")
        self.alpha = float(alpha)
        self.k = k
        self.controls = Controls()

    def __repr__(self) -> str:
        return f"ContrastiveSearch(alpha={self.alpha}, k={self.k})"

    def strategy(self, drafters: Seq[Drafter] = ()) -> _Run:
        return _Run(self, certain_drafters(drafters))


class _State:
    """One sequence's context: its hidden states so far (unit length) and its next distribution."""

    def __init__(self, context: torch.Tensor, logits: torch.Tensor) -> None:
        self.context = context
        self.logits = logits


class _Run:
    """One contrastive search call. Each step, per sequence, one row of the batch feeds the branch
    chosen at the last step (re-fed: only the prefix before the branches stays in the cache) and
    the ``k`` new branches (a candidate and the text forced after it) as a tree: siblings see the
    context, not each other (``KVCache.step_layout``). No KV rows are copied."""

    def __init__(self, config: ContrastiveSearch, drafters: list[Drafter]) -> None:
        self.config = config
        self.drafters = drafters
        self.current: list[Sequence] = []  # per prompt, its sequence now

    def step(self, batch: Batch) -> None:
        if not self.current:
            self._prefill(batch)
            return
        plans = [(seq, self._candidates(seq)) for seq in batch.live]
        plans = [(seq, branches) for seq, branches in plans if branches]  # the others ended on their EOS
        batch.reassign([seq for seq, _ in plans], [seq.row for seq, _ in plans])
        if not plans:
            return
        feeds, parents, keep = [], [], []
        for seq, branches in plans:
            chain = seq.unfed
            feed, tree = list(chain), list(range(-1, len(chain) - 1))
            for _, tokens in branches:
                tree += [len(chain) - 1] + list(range(len(feed), len(feed) + len(tokens) - 1))
                feed += tokens
            feeds.append(feed)
            parents.append(tree)
            keep.append(len(feed) - len(chain))
        stored = [len(seq.tokens) for seq, _ in plans]  # the chain is stored; the branches are cropped away
        out = batch.forward(feeds, keep, hidden=keep, parents=parents)
        picked = []
        for (seq, branches), fed, rows, hidden in zip(plans, stored, out.logits, out.hidden):  # type: ignore[arg-type]
            child = self._pick(seq, branches, rows, hidden)
            child.fed = fed
            child.counters["passes"] = seq.counters.get("passes", 0)
            batch.kv.crop(seq.row, fed)
            picked.append(child)
        batch.reassign(picked, [seq.row for seq, _ in plans])

    def streamed(self, batch: Batch) -> Sequence:
        """The first prompt's sequence now (what ``Decoder.stream`` follows)."""
        return self.current[0] if self.current else batch.sequences[0]

    def results(self, batch: Batch) -> list[GenerationResult]:
        return [seq.result(batch.timing(seq)) for seq in self.current or batch.sequences]

    def _prefill(self, batch: Batch) -> None:
        """The prompt (and the forced text after it) in one pass: the first distribution, and the
        prompt's hidden states as the context."""
        self.current = list(batch.live)
        for seq in self.current:
            fast_forward(seq, self.drafters)
        feeds = [s.unfed for s in self.current]
        out = batch.forward(feeds, [s.unscored + 1 for s in self.current], hidden=[len(f) for f in feeds])
        for seq, rows, hidden in zip(self.current, out.logits, out.hidden):  # type: ignore[arg-type]
            n = seq.unscored
            if n:
                seq.score(rows[:n])
            seq.extras[self] = _State(_unit(hidden), rows[n])

    def _candidates(self, seq: Sequence) -> list[tuple[Sequence, list[int]]]:
        """The top-k children of ``seq``, each with its branch (the candidate and the text the
        constraint forces after it). A sequence that can only end takes its EOS here: []."""
        state: _State = seq.extras[self]
        logp = constrained_logp(state.logits, seq)
        k = min(self.config.k, int(torch.isfinite(logp).sum()))
        probs, tokens = torch.topk(logp.exp(), k)
        out = []
        for p, t in zip(probs.tolist(), tokens.tolist()):
            child = seq.fork()
            child.commit(Choice(t), state.logits)
            if k == 1 and t in seq.eos:  # the only choice is to end: no pass needed
                self._replace(seq, child)
                return []
            fast_forward(child, self.drafters)
            n = len(seq.ids)
            out.append((child, child.ids[n:] or [t]))  # an EOS is fed only for its hidden state
            child.extras[_P] = p
        return out

    def _pick(self, seq: Sequence, branches: list[tuple[Sequence, list[int]]], logits: torch.Tensor,
              hidden: torch.Tensor) -> Sequence:
        """The branch with the best contrastive score; its context and next distribution."""
        state: _State = seq.extras[self]
        starts = [0]
        for _, tokens in branches:
            starts.append(starts[-1] + len(tokens))
        heads = _unit(torch.stack([hidden[i] for i in starts[:-1]]))
        penalty = (heads @ state.context.T).max(dim=1).values
        probs = torch.tensor([child.extras.pop(_P) for child, _ in branches])
        best = int(torch.argmax((1 - self.config.alpha) * probs - self.config.alpha * penalty))
        child, tokens = branches[best]
        lo = starts[best]
        n = child.unscored  # the forced tokens after the candidate
        if n:
            child.score(logits[lo: lo + n])
        if not child.finished:
            context = torch.cat([state.context, _unit(hidden[lo: lo + len(tokens)])])
            child.extras[self] = _State(context, logits[lo + len(tokens) - 1])
        self._replace(seq, child)
        return child

    def _replace(self, parent: Sequence, child: Sequence) -> None:
        self.current[next(i for i, s in enumerate(self.current) if s is parent)] = child
        if child.finished:
            child.extras.pop(self, None)


_P = "contrastive p~"  # a candidate's probability, in its sequence's extras until it is ranked


def _unit(h: torch.Tensor) -> torch.Tensor:
    h = h.float()
    return h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
