"""The core every strategy shares: the runner (model calls), the KV cache handle, sequences, the loop."""

from .kv import KVCache
from .loop import Batch, Strategy, run
from .runner import Forward, Runner
from .sequence import GenerationResult, Sequence

__all__ = ["Batch", "Forward", "GenerationResult", "KVCache", "Runner", "Sequence", "Strategy", "run"]
