"""Constraints users build: ``Grammar`` (Lark, LALR(1)) and ``Regex``.

A constraint is cheap to create; compiling happens once per (constraint, tokenizer) and is cached
in-process, so a constraint can be passed to many generate calls without recompiling.

>>> import ctrldec
>>> g = ctrldec.Grammar('start: "yes" | "no"')
>>> g.matches("yes"), g.matches("maybe")
(True, False)
>>> ctrldec.Regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}").matches("2026-11-27")
True
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..engine.bytedfa import BudgetExceeded, RegexCompileError, compile_budget, compile_regex, without_empty
from ..engine.cache import DEFAULT_CACHE
from ..engine.compiled import ByteAutomaton, CompiledGrammar, GrammarMatcher
from ..engine.grammar import GrammarTables, compile_lark
from ..errors import GrammarError
from ..limits import DEFAULT_LIMITS, Limits
from ..vocab import tokenizer_info

__all__ = ["Constraint", "Grammar", "Regex", "builtin_grammar_path", "clear_caches", "tokenizer_info"]


def builtin_grammar_path(name: str) -> Path:
    """Path of a grammar shipped with ctrldec (``json``, ``arithmetic``, ...)."""
    here = Path(__file__).resolve().parent.parent
    for folder in (here / "grammars", here.parent / "grammars"):
        path = folder / f"{name}.lark"
        if path.exists():
            return path
    shipped = sorted(p.stem for f in (here / "grammars", here.parent / "grammars") if f.exists() for p in f.glob("*.lark"))
    raise GrammarError(f"no built-in grammar named {name!r}; available: {', '.join(shipped)}")


class Constraint:
    """Base class: something that compiles to grammar tables. Subclasses define ``_key``/``_build``.

    Compiled forms live in the process's ``GrammarCache`` (``engine/cache.py``), keyed by
    ``_key()``: equal constraints share them, from any thread.
    """

    limits: Limits = DEFAULT_LIMITS

    def _key(self) -> tuple:
        raise NotImplementedError

    def _build(self) -> GrammarTables:
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """A stable id of what this constraint accepts (a hash of its text and settings): equal
        constraints share it, in any process (ASAp's oracle files record it)."""
        return hashlib.sha256(repr(self._key()).encode()).hexdigest()[:24]

    def tables(self) -> GrammarTables:
        """The tokenizer-independent compiled form (cached per constraint text)."""
        return DEFAULT_CACHE.get_tables(self._key(), self._build)

    def compile(self, tokenizer: Any, *, vocab_size: int | None = None) -> CompiledGrammar:
        """Bind to a tokenizer (HF tokenizer or ``TokenizerInfo``); cached per (constraint, tokenizer)."""
        info = tokenizer_info(tokenizer, vocab_size)
        tables = self.tables()  # every compile passes here: a constraint reports its tables' notes
        return DEFAULT_CACHE.get_compiled(self._key(), info.hash, lambda: CompiledGrammar(tables, info, self.limits))

    def matcher(self, tokenizer: Any, *, vocab_size: int | None = None) -> GrammarMatcher:
        """A fresh ``GrammarMatcher`` for one sequence."""
        return self.compile(tokenizer, vocab_size=vocab_size).matcher()

    def logits_processor(self, tokenizer: Any, **kwargs: Any):
        """A ``transformers`` logits processor enforcing this constraint (see ``GrammarLogitsProcessor``)."""
        from ..processors.grammar import GrammarLogitsProcessor

        return GrammarLogitsProcessor(self, tokenizer, **kwargs)

    def _automaton(self) -> ByteAutomaton:
        tables = self.tables()
        return DEFAULT_CACHE.get_automaton(self._key(), lambda: ByteAutomaton(tables, self.limits))

    def matches(self, text: str | bytes) -> bool:
        """Is ``text`` a complete output allowed by this constraint?"""
        return self._automaton().matches(text.encode("utf-8") if isinstance(text, str) else text)

    def is_prefix(self, text: str | bytes) -> bool:
        """Can ``text`` still be continued into an allowed output?"""
        return self._automaton().is_prefix(text.encode("utf-8") if isinstance(text, str) else text)


class Grammar(Constraint):
    """A Lark grammar (LALR(1)), ``start`` rule ``start`` by default.

    Terminals are compiled to byte automata, so regex terminals use the syntax ``interegular``
    accepts: no lookarounds or backreferences, and ``\\w``, ``\\d``, ``\\s`` are ASCII. Lexing is
    greedy (a terminal ends when the next byte cannot extend it), see ``engine/lexer.py``.

    ``ambiguous=True`` accepts grammars that are not LALR(1), even ambiguous ones: conflicts are
    kept and every reading is followed (GLR-style, each sequence holds a small set of parser
    configurations), and a lexeme that several terminals match is read as each of them.
    Priorities are then ignored; the language is the grammar's own.

    ``limits``: ``max_grammar_rules`` bounds what Lark's analysis is given, the engine limits
    (``max_configs``, ...) bound decoding (see ``ctrldec.limits``).
    """

    def __init__(self, lark_text: str, start: str = "start", *, ambiguous: bool = False, limits: Limits = DEFAULT_LIMITS) -> None:
        if not isinstance(lark_text, str):
            raise TypeError(f"Grammar expects Lark grammar text, got {type(lark_text).__name__}")
        self.text = lark_text
        self.start = start
        self.ambiguous = ambiguous
        self.limits = limits
        self.name = "<grammar>"

    @classmethod
    def from_file(cls, path: str | os.PathLike, start: str = "start", *, ambiguous: bool = False) -> Grammar:
        """Read a ``.lark`` file (``%import`` of Lark's ``common`` grammar works)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise GrammarError(f"cannot read grammar file {p}: {e.strerror or e}") from None
        g = cls(text, start, ambiguous=ambiguous)
        g.name = str(p)
        return g

    @classmethod
    def builtin(cls, name: str, start: str = "start") -> Grammar:
        """A grammar shipped in ``grammars/``: json, json_compact, arithmetic, csv, sql_select, chess, python_expr."""
        return cls.from_file(builtin_grammar_path(name), start)

    def __repr__(self) -> str:
        return f"Grammar({self.name})"

    def _key(self) -> tuple:
        return ("lark", self.text, self.start, self.ambiguous, self.limits)

    def _build(self) -> GrammarTables:
        try:
            with _budget(self.limits, f"grammar {self.name}"):
                return compile_lark(self.text, self.start, ambiguous=self.ambiguous, limits=self.limits)
        except GrammarError as e:
            if self.name != "<grammar>" and not e.args[0].startswith(f"grammar {self.name}"):
                raise GrammarError(f"{self.name}: {e.args[0]}") from None
            raise


@contextlib.contextmanager
def _budget(limits: Limits, what: str) -> Iterator[None]:
    """``limits``' compile budget around a compile: past it, a ``GrammarError`` naming ``what``
    (nested repetitions such as ``((a{1,50}){1,50}){1,50}`` would otherwise run for minutes)."""
    try:
        with compile_budget(limits.max_seconds, limits.max_states, limits.max_memory):
            yield
    except BudgetExceeded as e:
        raise GrammarError(f"{what} exceeds the compile budget ({e}); raise Limits.max_seconds / max_states / max_memory "
                           "to allow it") from None


def _strip_anchors(pattern: str) -> str:
    if pattern.startswith("^"):
        pattern = pattern[1:]
    if pattern.endswith("$") and not re.search(r"(?<!\\)(\\\\)*\\\$$", pattern):
        pattern = pattern[:-1]
    return pattern


class Regex(Constraint):
    """The output must match a regular expression in full (``^``/``$`` anchors are optional).

    Syntax: what ``interegular`` accepts; lookarounds and backreferences raise ``GrammarError``.
    """

    _TERMINAL = "REGEX"

    def __init__(self, pattern: str, *, limits: Limits = DEFAULT_LIMITS) -> None:
        if not isinstance(pattern, str):
            raise TypeError(f"Regex expects a pattern string, got {type(pattern).__name__}")
        self.pattern = pattern
        self.limits = limits

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def _key(self) -> tuple:
        return ("regex", self.pattern, self.limits)

    def _build(self) -> GrammarTables:
        with _budget(self.limits, f"regex /{self.pattern}/"):
            return self._tables()

    def _tables(self) -> GrammarTables:
        body = _strip_anchors(self.pattern)
        try:
            re.compile(body)
            dfa = compile_regex(body)
        except re.error as e:
            raise GrammarError(f"invalid regex /{self.pattern}/: {e}") from None
        except RegexCompileError as e:
            raise GrammarError(
                f"regex /{self.pattern}/ uses a feature ctrldec cannot compile to an automaton "
                f"(lookarounds and backreferences are not supported): {e}"
            ) from None
        if dfa.empty:
            raise GrammarError(f"regex /{self.pattern}/ matches nothing: the language is empty")
        optional = bool(dfa.accepting[0])
        if optional:
            dfa = without_empty(dfa)
        text = f"start: {self._TERMINAL}{'?' if optional else ''}\n{self._TERMINAL}: /x/\n"
        return compile_lark(text, terminal_dfas={self._TERMINAL: dfa}, limits=self.limits)


def clear_caches() -> None:
    """Drop every compiled grammar and terminal automaton (benchmarks measure compiles from scratch)."""
    DEFAULT_CACHE.clear()
    compile_regex.cache_clear()
