"""Exceptions raised by ctrldec.

Every error names the thing at fault (a grammar line, a terminal, a token, a path) so that a user
can fix it without reading a traceback. The CLI prints ``str(error)`` on one line.
"""

from __future__ import annotations


class CtrldecError(Exception):
    """Base class of every error ctrldec raises on purpose."""


class ModelError(CtrldecError):
    """A model or tokenizer could not be found or loaded (missing path, not a causal LM, ...)."""


class TokenizerError(CtrldecError):
    """A tokenizer's tokens cannot be mapped to the bytes they produce."""


class GrammarError(CtrldecError):
    """A grammar or regex cannot be compiled: syntax error, unsupported regex feature, empty language.

    ``line`` is the 1-based line of the grammar text at fault when known.
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        super().__init__(f"{message} (line {line})" if line is not None else message)


class DeadEndError(CtrldecError):
    """Decoding reached a state where no token is allowed and the output may not end."""


class BudgetError(CtrldecError):
    """Budget-aware completion cannot fit a complete output in ``max_new_tokens``."""


class InvalidTokenError(CtrldecError):
    """A token that the constraint does not allow was passed to ``Matcher.advance``."""


class SchemaError(CtrldecError):
    """A JSON Schema cannot be compiled exactly; ``pointer`` is the JSON pointer of the keyword."""

    def __init__(self, message: str, *, pointer: str = "/") -> None:
        self.pointer = pointer or "/"
        super().__init__(message if f"at {self.pointer}" in message else f"{message} (at {self.pointer})")
