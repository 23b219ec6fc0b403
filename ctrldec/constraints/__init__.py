"""Constraints: what the output must be. Each compiles to a Matcher per sequence."""

from .grammar import Constraint, Grammar, Regex, builtin_grammar_path, tokenizer_info

__all__ = ["Constraint", "Grammar", "Regex", "builtin_grammar_path", "tokenizer_info"]
