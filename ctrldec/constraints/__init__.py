"""Constraints: what the output must be. Each compiles to a Matcher per sequence."""

from .grammar import Constraint, Grammar, Regex, builtin_grammar_path, tokenizer_info
from .jsonschema import JSONSchema

__all__ = ["Constraint", "Grammar", "JSONSchema", "Regex", "builtin_grammar_path", "tokenizer_info"]
