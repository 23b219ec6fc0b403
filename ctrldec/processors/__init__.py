"""Hugging Face ``LogitsProcessor`` adapters."""

from .asap import ASApLogitsProcessor
from .grammar import GrammarLogitsProcessor

__all__ = ["ASApLogitsProcessor", "GrammarLogitsProcessor"]
