"""Strategies: how a batch of sequences advances, one forward pass per step."""

from .sampling import Sampling
from .smc import SMC, SMCReport

__all__ = ["Sampling", "SMC", "SMCReport"]
