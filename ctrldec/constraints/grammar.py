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

import os
import re
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..engine.bytedfa import RegexCompileError, compile_regex, without_empty
from ..engine.compiled import ByteAutomaton, CompiledGrammar, Matcher
from ..engine.grammar import GrammarTables, compile_lark
from ..errors import GrammarError
from ..vocab import TokenizerInfo

__all__ = ["Constraint", "Grammar", "Regex", "builtin_grammar_path", "tokenizer_info"]

_TABLES: OrderedDict[tuple, GrammarTables] = OrderedDict()
_COMPILED: OrderedDict[tuple, CompiledGrammar] = OrderedDict()
_MAX_TABLES = 256
_MAX_COMPILED = 64
_INFOS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _lru_get(cache: OrderedDict, key: tuple, build, limit: int):
    value = cache.get(key)
    if value is None:
        value = cache[key] = build()
        if len(cache) > limit:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return value


def tokenizer_info(tokenizer: Any, vocab_size: int | None = None) -> TokenizerInfo:
    """``TokenizerInfo`` for a Hugging Face tokenizer, built once per (tokenizer, logits width)."""
    if isinstance(tokenizer, TokenizerInfo):
        if vocab_size is not None and vocab_size != tokenizer.vocab_size:
            raise ValueError(
                f"this TokenizerInfo covers {tokenizer.vocab_size} ids but the model has {vocab_size} logits; "
                "build it with TokenizerInfo.from_huggingface(tokenizer, vocab_size=...)"
            )
        return tokenizer
    try:
        per_width = _INFOS.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: build every time
        return TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
    info = per_width.get(vocab_size)
    if info is None:
        info = per_width[vocab_size] = TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
    return info


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
    """Base class: something that compiles to grammar tables. Subclasses define ``_key``/``_build``."""

    def _key(self) -> tuple:
        raise NotImplementedError

    def _build(self) -> GrammarTables:
        raise NotImplementedError

    def tables(self) -> GrammarTables:
        """The tokenizer-independent compiled form (cached per constraint text)."""
        return _lru_get(_TABLES, self._key(), self._build, _MAX_TABLES)

    def compile(self, tokenizer: Any, *, vocab_size: int | None = None) -> CompiledGrammar:
        """Bind to a tokenizer (HF tokenizer or ``TokenizerInfo``); cached per (constraint, tokenizer)."""
        info = tokenizer_info(tokenizer, vocab_size)
        return _lru_get(_COMPILED, (self._key(), info.hash), lambda: CompiledGrammar(self.tables(), info), _MAX_COMPILED)

    def matcher(self, tokenizer: Any, *, vocab_size: int | None = None) -> Matcher:
        """A fresh ``Matcher`` for one sequence."""
        return self.compile(tokenizer, vocab_size=vocab_size).matcher()

    def logits_processor(self, tokenizer: Any, **kwargs: Any):
        """A ``transformers`` logits processor enforcing this constraint (see ``GrammarLogitsProcessor``)."""
        from ..processors.grammar import GrammarLogitsProcessor

        return GrammarLogitsProcessor(self, tokenizer, **kwargs)

    def _automaton(self) -> ByteAutomaton:
        return _lru_get(_TABLES, ("automaton",) + self._key(), lambda: ByteAutomaton(self.tables()), _MAX_TABLES)  # type: ignore[return-value]

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
    """

    def __init__(self, lark_text: str, start: str = "start", *, ambiguous: bool = False) -> None:
        if not isinstance(lark_text, str):
            raise TypeError(f"Grammar expects Lark grammar text, got {type(lark_text).__name__}")
        self.text = lark_text
        self.start = start
        self.ambiguous = ambiguous
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
        return ("lark", self.text, self.start, self.ambiguous)

    def _build(self) -> GrammarTables:
        try:
            return compile_lark(self.text, self.start, ambiguous=self.ambiguous)
        except GrammarError as e:
            if self.name != "<grammar>":
                raise GrammarError(f"{self.name}: {e.args[0]}") from None
            raise


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

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str):
            raise TypeError(f"Regex expects a pattern string, got {type(pattern).__name__}")
        self.pattern = pattern

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def _key(self) -> tuple:
        return ("regex", self.pattern)

    def _build(self) -> GrammarTables:
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
        return compile_lark(text, terminal_dfas={self._TERMINAL: dfa})


def clear_caches() -> None:
    """Drop every compiled grammar and terminal automaton (benchmarks measure compiles from scratch)."""
    _TABLES.clear()
    _COMPILED.clear()
    compile_regex.cache_clear()
