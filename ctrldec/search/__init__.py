"""Strategies: how a batch of sequences advances, one forward pass per step."""

from .sampling import Sampling

__all__ = ["Sampling"]
