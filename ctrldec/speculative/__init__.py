"""Drafters (cheap guesses at the next tokens) and the verifier that keeps them exactly."""

from .config import DRAFTERS, Speculative
from .drafters import Draft, Drafter, ForcedText, PromptLookup
from .model import ModelDrafter, early_exit_model
from .recycling import TokenRecycling
from .verifier import Verifier

__all__ = ["DRAFTERS", "Draft", "Drafter", "ForcedText", "ModelDrafter", "PromptLookup", "Speculative", "TokenRecycling",
           "Verifier", "early_exit_model"]
