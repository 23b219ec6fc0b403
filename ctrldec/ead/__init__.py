"""Entropy-adaptive decoding: a small model for the easy stretches, the full model for the hard ones."""

from .switch import EntropySwitch

__all__ = ["EntropySwitch"]
