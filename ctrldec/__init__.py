"""ctrldec: constrained and controlled decoding for Hugging Face causal language models.

>>> import ctrldec
>>> ctrldec.Regex(r"(yes|no)").matches("yes")
True
"""

from . import models
from .constraints import Constraint, Grammar, JSONSchema, Regex
from .engine.compiled import CompiledGrammar, GrammarMatcher
from .engine.matcher import Matcher, Unconstrained
from .generate import Decoder, GenerationResult, custom_generate, generate
from .errors import BudgetError, CtrldecError, DeadEndError, GrammarError, InvalidTokenError, ModelError, SchemaError, TokenizerError
from .processors import ASApLogitsProcessor, GrammarLogitsProcessor
from .controllers import Controller, EntropyTemperature, Mirostat, StepStats
from .samplers import ASApOracle, AWRS, FullMask, Greedy, Multinomial, TokenSampler
from .search import ASAp, BeamSearch, ContrastiveSearch, DiverseBeamSearch, SearchReport, SMC, SMCReport
from .ead import EntropySwitch
from .speculative import Draft, Drafter, ForcedText, ModelDrafter, PromptLookup, Speculative, TokenRecycling
from .limits import Limits
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
    "GrammarMatcher",
    "Limits",
    "Unconstrained",
    "GrammarLogitsProcessor",
    "ASApLogitsProcessor",
    "Mirostat",
    "EntropyTemperature",
    "StepStats",
    "Controller",
    "TokenSampler",
    "Greedy",
    "Multinomial",
    "FullMask",
    "AWRS",
    "ASAp",
    "ASApOracle",
    "SMC",
    "SMCReport",
    "ContrastiveSearch",
    "BeamSearch",
    "DiverseBeamSearch",
    "SearchReport",
    "Drafter",
    "Draft",
    "ForcedText",
    "PromptLookup",
    "TokenRecycling",
    "ModelDrafter",
    "Speculative",
    "EntropySwitch",
    "TokenizerInfo",
    "models",
    "CtrldecError",
    "DeadEndError",
    "BudgetError",
    "GrammarError",
    "InvalidTokenError",
    "ModelError",
    "SchemaError",
    "TokenizerError",
    "__version__",
]
