"""Grammar engines behind one small interface, so benchmarks run ctrldec and its peers side by side.

Peers (llguidance, xgrammar) are optional: ``available_engines()`` lists the ones installed.
Every engine fills the same bitmask layout (``int32[ceil(vocab/32)]``, bit ``i % 32`` of word
``i // 32``), so masks can be compared word for word.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

__all__ = ["Engine", "available_engines", "make_engine"]


def _dist_version(dist: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(dist)


class Engine:
    """compile -> matcher -> (fill, accepts, advance). ``accepts`` may be None (not offered)."""

    name = "?"
    has_accepts = True

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.words = (vocab_size + 31) // 32

    def version(self) -> str:
        raise NotImplementedError

    def clear_caches(self) -> None:
        """Forget compiled grammars, so that the next compile is measured from scratch."""

    def compile(self, lark_text: str) -> Any:
        raise NotImplementedError

    def matcher(self, compiled: Any) -> Any:
        raise NotImplementedError

    def fill(self, matcher: Any, out: np.ndarray) -> None:
        raise NotImplementedError

    def accepts(self, matcher: Any, token: int) -> bool:
        raise NotImplementedError

    def advance(self, matcher: Any, token: int) -> bool:
        raise NotImplementedError


class CtrldecEngine(Engine):
    name = "ctrldec"

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        super().__init__(tokenizer, vocab_size)
        from ..constraints.grammar import tokenizer_info

        self.info = tokenizer_info(tokenizer, vocab_size)

    def version(self) -> str:
        from .. import __version__

        return __version__

    def clear_caches(self) -> None:
        from ..constraints.grammar import clear_caches

        clear_caches()

    def compile(self, lark_text: str) -> Any:
        from ..constraints.grammar import Grammar

        return Grammar(lark_text).compile(self.info)

    def matcher(self, compiled: Any) -> Any:
        return compiled.matcher()

    def fill(self, matcher: Any, out: np.ndarray) -> None:
        matcher.fill_mask(out)

    def accepts(self, matcher: Any, token: int) -> bool:
        return matcher.accepts(token)

    def advance(self, matcher: Any, token: int) -> bool:
        if not matcher.accepts(token):
            return False
        matcher.advance(token)
        return True


class LLGuidanceEngine(Engine):
    name = "llguidance"

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        super().__init__(tokenizer, vocab_size)
        import llguidance.hf

        self._tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)

    def version(self) -> str:
        return _dist_version("llguidance")

    def compile(self, lark_text: str) -> Any:
        import llguidance

        grammar = llguidance.LLMatcher.grammar_from_lark(lark_text)
        m = llguidance.LLMatcher(self._tok, grammar)
        if m.is_error():
            raise ValueError(m.get_error())
        return grammar

    def matcher(self, compiled: Any) -> Any:
        import llguidance

        return llguidance.LLMatcher(self._tok, compiled)

    def fill(self, matcher: Any, out: np.ndarray) -> None:
        import llguidance.numpy as lln

        lln.fill_next_token_bitmask(matcher, out.reshape(1, -1).view(np.int32), 0)

    def accepts(self, matcher: Any, token: int) -> bool:
        return matcher.validate_tokens([token]) == 1

    def advance(self, matcher: Any, token: int) -> bool:
        return bool(matcher.consume_token(token)) and not matcher.is_error()


class XGrammarEngine(Engine):
    name = "xgrammar"
    has_accepts = False  # accept_token changes state; there is no side-effect-free check

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        super().__init__(tokenizer, vocab_size)
        import xgrammar as xgr

        self._xgr = xgr
        self._info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(self._info, cache_enabled=False)

    def version(self) -> str:
        return _dist_version("xgrammar")

    def compile(self, lark_text: str) -> Any:
        return self._compiler.compile_grammar(self._xgr.Grammar.from_lark(lark_text))

    def matcher(self, compiled: Any) -> Any:
        return self._xgr.GrammarMatcher(compiled)

    def fill(self, matcher: Any, out: np.ndarray) -> None:
        import torch

        buf = torch.from_numpy(out.reshape(1, -1).view(np.int32))
        matcher.fill_next_token_bitmask(buf)

    def advance(self, matcher: Any, token: int) -> bool:
        return bool(matcher.accept_token(token))


_ENGINES = {"ctrldec": (CtrldecEngine, None), "llguidance": (LLGuidanceEngine, "llguidance"), "xgrammar": (XGrammarEngine, "xgrammar")}


def available_engines() -> list[str]:
    """Engines that can run here (ctrldec always; peers when installed: ``pip install ctrldec[bench]``)."""
    return [name for name, (_, module) in _ENGINES.items() if module is None or importlib.util.find_spec(module)]


def make_engine(name: str, tokenizer: Any, vocab_size: int) -> Engine:
    if name not in _ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(_ENGINES)}")
    if name not in available_engines():
        raise ValueError(f"engine {name!r} is not installed (pip install 'ctrldec[bench]')")
    return _ENGINES[name][0](tokenizer, vocab_size)
