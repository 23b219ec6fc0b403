"""Strategies: how a batch of sequences advances, one forward pass per step."""

from .asap import ASAp
from .beam import BeamSearch, DiverseBeamSearch, SearchReport
from .contrastive import ContrastiveSearch
from .sampling import Sampling
from .smc import SMC, SMCReport

__all__ = ["ASAp", "BeamSearch", "ContrastiveSearch", "DiverseBeamSearch", "Sampling", "SearchReport", "SMC", "SMCReport"]
