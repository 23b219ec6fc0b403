"""The ``Controller`` protocol, per-step statistics, and the chain of controllers one sequence runs.

A controller reshapes each sampled step's (constrained) distribution from a per-sequence state
(Mirostat's ``mu``) and updates that state once the token is known. States are immutable values:
forking a sequence shares them, rolling it back restores an earlier one, and one controller
object serves any number of concurrent sequences.

A new controller implements four methods and needs nothing else in the loop::

    class Cool:                                   # halve the temperature after every "!"
        def init(self): return 1.0
        def warp(self, scores, state): return scores / state, state
        def update(self, state, step, token): return (state / 2 if token == BANG else state), StepStats(controls={"t": state})
        def report(self, state): return {"t": state}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from ..errors import CtrldecError

__all__ = ["Controller", "Controls", "StepStats"]


@dataclass(frozen=True)
class StepStats:
    """What happened at one step, relative to the distribution the controllers received (the
    constrained one): its entropy (bits), the chosen token's surprise ``-log2 p`` (bits) and
    probability, the number of tokens kept, whether the step was forced (one allowed token), and
    ``controls``: what each controller reports for the step (``mu`` for Mirostat, ``temperature``
    for ``EntropyTemperature``)."""

    entropy: float = 0.0
    surprise: float = 0.0
    prob: float = 1.0
    kept: int = 0
    forced: bool = False
    controls: Mapping[str, float] = field(default_factory=dict)

    @property
    def mu(self) -> float | None:
        """Mirostat's ``mu`` used at this step (None without Mirostat)."""
        return self.controls.get("mu")

    @property
    def temperature(self) -> float:
        """The temperature ``EntropyTemperature`` applied (1.0 without it)."""
        return self.controls.get("temperature", 1.0)


@runtime_checkable
class Controller(Protocol):
    """A per-sequence reshaping of each sampled step's distribution."""

    def init(self) -> Any:
        """The state of a new sequence."""

    def warp(self, scores: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Reshape 1-D ``scores`` (``-inf`` = not allowed); also return what ``update`` needs."""

    def update(self, state: Any, step: Any, token: int) -> tuple[Any, StepStats]:
        """The state after ``token`` was drawn at ``step``, and the step's statistics."""

    def report(self, state: Any) -> dict[str, float]:
        """The controls to record for a step the controller did not see (a forced token)."""


_METHODS = ("init", "warp", "update", "report")


class Controls:
    """The controllers of one generate call, applied in order; the per-sequence state is the
    tuple of their states (``init``), threaded through ``warp`` and ``update``."""

    def __init__(self, controllers: Sequence[Any] = ()) -> None:
        for c in controllers:
            if not all(callable(getattr(c, m, None)) for m in _METHODS):
                raise CtrldecError(
                    f"{c!r} is not a controller (it needs {', '.join(_METHODS)}: Mirostat, EntropyTemperature)"
                )
        self.controllers = tuple(controllers)

    def __bool__(self) -> bool:
        return bool(self.controllers)

    def init(self) -> tuple:
        return tuple(c.init() for c in self.controllers)

    def warp(self, scores: torch.Tensor, states: tuple) -> tuple[torch.Tensor, tuple]:
        steps = []
        for c, state in zip(self.controllers, states):
            scores, step = c.warp(scores, state)
            steps.append(step)
        return scores, tuple(steps)

    def update(self, states: tuple, steps: tuple, token: int) -> tuple[tuple, dict[str, float]]:
        """New states and the controls every controller reported, merged in order."""
        new, controls = [], {}
        for c, state, step in zip(self.controllers, states, steps):
            state, stats = c.update(state, step, token)
            new.append(state)
            controls.update(stats.controls)
        return tuple(new), controls

    def report(self, states: tuple) -> dict[str, float]:
        controls: dict[str, float] = {}
        for c, state in zip(self.controllers, states):
            controls.update(c.report(state))
        return controls
