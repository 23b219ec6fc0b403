"""Strategies: how a batch of sequences advances, one forward pass per step."""

from .asap import ASAp
from .sampling import Sampling
from .smc import SMC, SMCReport

__all__ = ["ASAp", "Sampling", "SMC", "SMCReport"]
