"""Controllers: per-sequence reshaping of each sampled step (Mirostat, entropy temperature).

Each is also a ``transformers`` logits processor. A new controller implements the ``Controller``
protocol (``init`` / ``warp`` / ``update`` / ``report``).
"""

from .base import Controller, Controls, StepStats
from .entropy import EntropyTemperature
from .mirostat import Mirostat, MirostatState, mirostat_k, zipf_exponent

__all__ = ["Controller", "Controls", "StepStats", "EntropyTemperature", "Mirostat", "MirostatState", "mirostat_k",
           "zipf_exponent"]
