"""The grammar engine: byte DFAs, the lexer automaton, LALR parsing, token masks, matchers."""

from .compiled import ByteAutomaton, CompiledGrammar, Matcher
from .grammar import GrammarTables, compile_lark

__all__ = ["ByteAutomaton", "CompiledGrammar", "Matcher", "GrammarTables", "compile_lark"]
