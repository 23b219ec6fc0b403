"""The grammar engine: byte DFAs, the lexer automaton, LALR parsing, token masks, matchers."""

from .cache import GrammarCache
from .compiled import ByteAutomaton, CompiledGrammar, GrammarMatcher
from .grammar import GrammarTables, compile_lark
from .matcher import Matcher, Unconstrained

__all__ = [
    "ByteAutomaton", "CompiledGrammar", "GrammarCache", "GrammarMatcher", "GrammarTables", "Matcher", "Unconstrained",
    "compile_lark",
]  # fmt: skip
