"""Hugging Face ``LogitsProcessor`` adapters."""

from .grammar import GrammarLogitsProcessor

__all__ = ["GrammarLogitsProcessor"]
