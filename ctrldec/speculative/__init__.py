"""Drafters (cheap guesses at the next tokens) and the verifier that keeps them exactly."""

from .drafters import Draft, Drafter, ForcedText, PromptLookup
from .verifier import Verifier

__all__ = ["Draft", "Drafter", "ForcedText", "PromptLookup", "Verifier"]
