"""``Sequence``: one output being decoded, and everything that must roll back with it.

It holds the prompt and the committed output tokens, the ``Matcher``, the controller states, the
random generator, per-token log-probabilities, kinds (sampled / forced), ``accepts`` checks and
step statistics, the output text, its row in the batch's ``KVCache``, and how many of its tokens
the model has seen (``fed``). ``rollback(length)`` undoes all of them together; ``fork()`` copies
them (the KV row is forked by the strategy with ``KVCache.select_rows``).

At the start of every step the last committed token is not yet fed: the next forward pass feeds
``unfed`` (that token, and any forced tokens after it) together with a draft.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..controllers.base import Controls, StepStats
from ..engine.matcher import Matcher
from ..numeric import log_softmax
from ..samplers.base import Choice
from ..vocab import TokenizerInfo

if TYPE_CHECKING:
    from ..search.beam import SearchReport
    from ..search.smc import SMCReport

__all__ = ["Sequence", "GenerationResult"]


@dataclass
class GenerationResult:
    """What one generation produced.

    ``finish_reason``: ``"eos"`` (the model or the constraint ended it), ``"stop"`` (a stop
    string), ``"length"`` (``max_new_tokens``), ``"dead"`` (an SMC particle whose weight became
    0). ``truncated``: it ended before the constraint could be satisfied (``text`` is then a
    valid prefix, not a complete output).
    ``logprobs[i]``: log-probability of token i under the model's unwarped distribution.
    ``log_weight``: the sum of the sampler's log importance weights (0 for exact samplers).
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    kinds: list[str]  # "sampled" or "forced", per token
    checks: list[int]  # Matcher.accepts calls per sampled token
    finish_reason: str
    truncated: bool
    timing: dict[str, float] = field(default_factory=dict)
    steps: list[StepStats] = field(default_factory=list)  # per token, with controllers or diagnostics=True
    log_weight: float = 0.0
    smc: SMCReport | None = None  # the particles, with sampler=SMC(...)
    search: SearchReport | None = None  # every hypothesis, with search=BeamSearch(...) / DiverseBeamSearch(...)
    models: list[str] = field(default_factory=list)  # with ead=: per token, the model ("small"/"full") that wrote it

    @property
    def forced_share(self) -> float:
        return self.kinds.count("forced") / len(self.kinds) if self.kinds else 0.0


class Sequence:
    """See the module docstring. ``record``: keep a ``StepStats`` per token; ``constraint``: the
    ``Constraint`` the matcher came from (ASAp keys its oracle by it)."""

    def __init__(self, prompt: Seq[int], matcher: Matcher, info: TokenizerInfo, eos: frozenset[int], *,
                 max_new_tokens: int, rng: torch.Generator | None = None, controls: Controls | None = None,
                 record: bool = False, stop: Seq[str] = (), constraint: Any = None) -> None:
        self.prompt = list(prompt)
        self.constraint = constraint  # what the matcher enforces (None: unconstrained), for strategies that key on it
        self.matcher = matcher
        self.info = info
        self.eos = eos
        self.max_new_tokens = max_new_tokens
        self.rng = rng
        self.controls = controls or Controls()
        self.state: tuple = self.controls.init()  # controller states now
        self.record = record
        self.stop = tuple(stop)
        # False: reaching the end of the constraint (or max_new_tokens where it may end) leaves
        # the sequence open, for a strategy that must account for the EOS step (SMC's weights).
        self.end_when_done = True
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.kinds: list[str] = []
        self.checks: list[int] = []
        self.steps: list[StepStats] = []
        self.log_weight = 0.0
        self.fed = 0  # tokens of prompt + ids in the KV cache row
        self.row = 0  # this sequence's row in the batch's KVCache
        self.finish_reason: str | None = None
        self.text = ""
        self.extras: dict[Any, Any] = {}  # per-sequence state of drafters and strategies, by owner
        self.producer: str | None = None  # the model whose logits the next tokens come from (set by a runner over two)
        self.producers: list[str] = []  # per token, while producer is set
        self.counters: dict[str, int] = {}  # forward passes, drafted and accepted tokens (reported in timing)
        self._data = bytearray()  # output bytes
        self._ends: list[int] = []  # len(_data) after each token
        self._states: list[tuple] = []  # controller states before each token
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._sent = 0  # characters of text handed out by take_delta
        self._check_end()  # a constraint whose only output is the empty one

    def __repr__(self) -> str:
        return f"Sequence(prompt={len(self.prompt)}, ids={len(self.ids)}, fed={self.fed}, finish={self.finish_reason})"

    # -- reading ---------------------------------------------------------------------------------------

    @property
    def tokens(self) -> list[int]:
        """Prompt and output."""
        return self.prompt + self.ids

    @property
    def unfed(self) -> list[int]:
        """Committed tokens the model has not seen yet."""
        return self.tokens[self.fed:]

    @property
    def data(self) -> bytes:
        """The output's bytes."""
        return bytes(self._data)

    @property
    def room(self) -> int:
        """Tokens left before ``max_new_tokens``."""
        return self.max_new_tokens - len(self.ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def must_end(self) -> bool:
        """Only EOS may come next: the constraint is complete, or it may end and no room is left."""
        return not self.finished and (self.matcher.is_done() or (self.room <= 0 and self.matcher.is_accepting()))

    @property
    def unscored(self) -> int:
        """Trailing forced tokens whose log-probability needs a forward pass (``score``)."""
        n = 0
        while n < len(self.logprobs) and math.isnan(self.logprobs[-1 - n]):
            n += 1
        return n

    def take_delta(self) -> str:
        """Output text added since the last call (what a stream yields). Until the output ends,
        text that may be the start of a stop string is held back, so nothing past a stop string
        is ever handed out."""
        end = len(self.text)
        if not self.finished:
            end -= max((k for s in self.stop for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        delta = self.text[self._sent:end]
        self._sent = max(self._sent, end)
        return delta

    # -- committing ------------------------------------------------------------------------------------

    def commit(self, choice: Choice, logits: torch.Tensor, *, logp: np.ndarray | None = None) -> None:
        """Commit a sampled token; ``logits``: the step's raw row, for its log-probability (or
        ``logp``, its ``numeric.log_softmax`` when the caller has it: children of one beam)."""
        self.log_weight += choice.log_w
        if choice.token in self.eos:
            self._finish("eos")
            return
        x = log_softmax(logits) if logp is None else logp
        self._append(choice.token, "sampled", float(x[choice.token]) if choice.token < len(x) else float("-inf"),
                     choice.stats, choice.controls)
        self.checks.append(choice.checks)
        self._check_end()

    def commit_forced(self, tokens: Seq[int]) -> None:
        """Commit tokens the constraint fixes (log-probabilities come with the next ``score``)."""
        for t in tokens[: self.room]:
            stats = StepStats(prob=1.0, kept=1, forced=True, controls=self.controls.report(self.state)) if self.record else None
            self._append(t, "forced", float("nan"), stats, None)
        self._check_end()

    def score(self, rows: torch.Tensor) -> None:
        """Fill the log-probabilities of the last ``len(rows)`` forced tokens from their rows."""
        n = len(rows)
        logp = log_softmax(rows)
        for j in range(n):
            i = len(self.ids) - n + j
            t = self.ids[i]
            self.logprobs[i] = float(logp[j, t]) if t < logp.shape[-1] else float("-inf")

    def _append(self, token: int, kind: str, logprob: float, stats: StepStats | None, state: tuple | None) -> None:
        self.matcher.advance(token)
        self._states.append(self.state)
        if state is not None:
            self.state = state
        self.ids.append(token)
        if self.producer is not None:
            self.producers.append(self.producer)
        self.logprobs.append(logprob)
        self.kinds.append(kind)
        if self.record:
            self.steps.append(stats)  # type: ignore[arg-type]
        data = self.info.token_bytes[token] if token < len(self.info.token_bytes) else b""
        self._data += data
        self._ends.append(len(self._data))
        self.text += self._decoder.decode(data)

    def _check_end(self) -> None:
        hit = [s for s in self.stop if s in self.text]
        if hit:
            self.text = self.text[: min(self.text.index(s) for s in hit)]
            self._finish("stop")
        elif self.room <= 0 and (self.end_when_done or not self.matcher.is_accepting()):
            self._finish("length")
        elif self.end_when_done and self.matcher.is_done():
            self._finish("eos")

    def finish(self, reason: str) -> None:
        """End the sequence (a strategy's decision, e.g. a particle with weight 0)."""
        if not self.finished:
            self._finish(reason)

    def _finish(self, reason: str) -> None:
        self.finish_reason = reason
        if reason != "stop":
            self.text += self._decoder.decode(b"", final=True)

    # -- undoing ---------------------------------------------------------------------------------------

    def rollback(self, length: int) -> None:
        """Undo every output token from ``length`` on: matcher, controller states, text, scores.
        The KV row must then be cropped to ``fed`` (``KVCache.crop(seq.row, seq.fed)``)."""
        n = len(self.ids) - length
        if not 0 <= n <= len(self.ids):
            raise ValueError(f"cannot roll back to {length} tokens: the output has {len(self.ids)}")
        if n == 0 and not self.finished:
            return
        self.matcher.rollback(n)
        if n:
            self.state = self._states[length]
        sampled = self.kinds[length:].count("sampled")
        del self.ids[length:], self.logprobs[length:], self.kinds[length:], self._states[length:], self._ends[length:]
        del self.producers[length:]
        del self.checks[len(self.checks) - sampled:]
        if self.record:
            del self.steps[length:]
        del self._data[self._ends[-1] if self._ends else 0:]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = self._decoder.decode(bytes(self._data))
        self._sent = min(self._sent, len(self.text))
        self.finish_reason = None
        self.fed = min(self.fed, len(self.prompt) + length - 1)

    def fork(self) -> Sequence:
        """An independent copy (the caller gives it a KV row)."""
        other = Sequence.__new__(Sequence)
        other.__dict__.update(self.__dict__)
        other.matcher = self.matcher.fork()
        for name in ("ids", "logprobs", "kinds", "checks", "steps", "_ends", "_states", "prompt", "producers"):
            setattr(other, name, list(getattr(self, name)))
        other._data = bytearray(self._data)
        other.extras = dict(self.extras)
        other.counters = dict(self.counters)
        other._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        other._decoder.setstate(self._decoder.getstate())
        if self.rng is not None:
            other.rng = torch.Generator()
            other.rng.set_state(self.rng.get_state())
        return other

    def result(self, timing: dict[str, float] | None = None) -> GenerationResult:
        finish = self.finish_reason or "length"
        return GenerationResult(
            text=self.text, token_ids=list(self.ids), logprobs=list(self.logprobs), kinds=list(self.kinds),
            checks=list(self.checks), finish_reason=finish,
            truncated=finish in ("length", "dead") and not self.matcher.is_accepting(),
            timing=dict(timing or {}), steps=list(self.steps), log_weight=self.log_weight, models=list(self.producers),
        )
