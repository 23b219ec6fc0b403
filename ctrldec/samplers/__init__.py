"""Samplers: which token comes next (greedy, multinomial with warpers, mask-free under a constraint)."""

from .sampling import Choice, SamplingParams, choose

__all__ = ["Choice", "SamplingParams", "choose"]
