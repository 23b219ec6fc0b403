"""ctrldec: constrained and controlled decoding for Hugging Face causal language models.

>>> import ctrldec
>>> ctrldec.Regex(r"(yes|no)").matches("yes")
True
"""

from . import models
from .constraints import Constraint, Grammar, JSONSchema, Regex
from .engine import CompiledGrammar, Matcher
from .generate import Decoder, GenerationResult, custom_generate, generate
from .errors import CtrldecError, DeadEndError, GrammarError, InvalidTokenError, ModelError, SchemaError, TokenizerError
from .processors import GrammarLogitsProcessor
from .samplers.control import EntropyTemperature, Mirostat, StepStats
from .vocab import TokenizerInfo

__version__ = "0.1.0"

__all__ = [
    "Constraint",
    "Grammar",
    "JSONSchema",
    "Regex",
    "CompiledGrammar",
    "Decoder",
    "GenerationResult",
    "custom_generate",
    "generate",
    "Matcher",
    "GrammarLogitsProcessor",
    "Mirostat",
    "EntropyTemperature",
    "StepStats",
    "TokenizerInfo",
    "models",
    "CtrldecError",
    "DeadEndError",
    "GrammarError",
    "InvalidTokenError",
    "ModelError",
    "SchemaError",
    "TokenizerError",
    "__version__",
]
