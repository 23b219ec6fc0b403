"""``GrammarCache``: the one owner of the compiled grammars a process keeps (the per-constraint
lifetime of DESIGN.md), like xgrammar's ``GrammarCompiler`` cache.

Three kinds of entries, each built by a function the caller passes and kept until evicted:
``tables`` (a constraint's ``GrammarTables``, tokenizer-independent), ``compiled`` (a
``CompiledGrammar``: the tables bound to one tokenizer, with its growing mask caches) and
``automaton`` (a ``ByteAutomaton`` for whole-text checks). Entries are evicted least recently used
first, past a count per kind or past ``cache_limit_bytes`` in all (by ``memory_size_bytes``
estimates, which grow as grammars are used: counted in full every 16 additions, and at every
addition once the cache holds half its limit).

Safe to use from any thread: the cache's own state sits behind a lock, and two threads asking
for the same key while it is being built wait for one build (its result or its exception)
instead of building twice. Builds run outside the lock, so different keys build in parallel.

>>> cache = GrammarCache(cache_limit_bytes=1 << 20)
>>> calls = []
>>> cache.get("tables", ("k",), lambda: calls.append(1) or "built"), cache.get("tables", ("k",), lambda: "again")
('built', 'built')
>>> len(calls), len(cache)
(1, 1)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

from ..limits import DEFAULT_LIMITS, Limits
from .compiled import ByteAutomaton
from .grammar import GrammarTables

__all__ = ["GrammarCache", "DEFAULT_CACHE"]

T = TypeVar("T")
_RECOUNT = 16  # entries added between full counts of the cache's bytes (``GrammarCache._evict``)


def _size(value: Any, tables_seen: set[int]) -> int:
    """Estimated bytes of one entry; tables shared by several entries are counted once."""
    if isinstance(value, ByteAutomaton):
        tables, total = value.tables, value.cache_bytes()
    elif isinstance(value, GrammarTables):
        tables, total = value, 0
    else:
        return 0
    if id(tables) not in tables_seen:
        tables_seen.add(id(tables))
        total += tables.memory_size_bytes()
    return total


class GrammarCache:
    """Compiled grammars by key, least recently used evicted first.

    Args:
        limits: ``max_cached_tables`` and ``max_cached_grammars`` (entries kept per kind) and
            ``cache_limit_bytes`` (estimated bytes in all).
        cache_limit_bytes: overrides ``limits.cache_limit_bytes``.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, *, cache_limit_bytes: int | None = None) -> None:
        self.cache_limit_bytes = cache_limit_bytes if cache_limit_bytes is not None else limits.cache_limit_bytes
        self._max_entries = {
            "tables": limits.max_cached_tables,
            "automaton": limits.max_cached_tables,
            "compiled": limits.max_cached_grammars,
        }
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, Any] = OrderedDict()  # (kind, key) -> value, oldest first
        self._building: dict[tuple, Future] = {}
        self._estimate = 0  # estimated bytes held (``_evict``)
        self._added = 0  # entries added since ``_estimate`` was last counted in full

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, kind: str, key: Hashable, build: Callable[[], T]) -> T:
        """The entry of this kind and key, built (once, even across threads) if it is missing.

        An exception from ``build`` reaches every caller waiting for that build, and nothing is
        cached: the next call builds again.
        """
        slot = (kind, key)
        with self._lock:
            value = self._entries.get(slot)
            if value is not None:
                self._entries.move_to_end(slot)
                return value
            pending = self._building.get(slot)
            owner = pending is None
            if owner:
                pending = self._building[slot] = Future()
        if not owner:
            return pending.result()  # type: ignore[union-attr]
        try:
            value = build()
        except BaseException as e:
            with self._lock:
                del self._building[slot]
            pending.set_exception(e)  # type: ignore[union-attr]
            raise
        with self._lock:
            del self._building[slot]
            self._entries[slot] = value
            self._evict(slot)
        pending.set_result(value)  # type: ignore[union-attr]
        return value

    def get_tables(self, key: Hashable, build: Callable[[], T]) -> T:
        """A constraint's ``GrammarTables`` (tokenizer-independent)."""
        return self.get("tables", key, build)

    def get_compiled(self, key: Hashable, tokenizer_hash: str, build: Callable[[], T]) -> T:
        """A constraint's ``CompiledGrammar`` for the tokenizer with this ``TokenizerInfo.hash``."""
        return self.get("compiled", (key, tokenizer_hash), build)

    def get_automaton(self, key: Hashable, build: Callable[[], T]) -> T:
        """A constraint's ``ByteAutomaton`` (whole-text checks, no tokenizer)."""
        return self.get("automaton", key, build)

    def memory_size_bytes(self) -> int:
        """Estimated bytes held by the cached entries (``memory_size_bytes`` of their tables, counted
        once, and ``cache_bytes`` of each grammar); see ``docs/engine.md``."""
        with self._lock:
            return self._bytes()

    def clear(self) -> None:
        """Drop every entry (builds under way finish and are kept)."""
        with self._lock:
            self._entries.clear()
            self._estimate = self._added = 0

    def _bytes(self) -> int:
        seen: set[int] = set()
        return sum(_size(v, seen) for v in self._entries.values())

    def _evict(self, newest: tuple) -> None:
        """Drop the oldest entries past the count of their kind, then past the byte limit (the
        entry just added always stays). Holds: the caller has the lock."""
        kind = newest[0]
        same = [slot for slot in self._entries if slot[0] == kind]
        for slot in same[: max(0, len(same) - self._max_entries[kind])]:
            del self._entries[slot]
        # the estimate: the last full count plus each entry added since; counted afresh every
        # ``_RECOUNT`` additions (entries grow as they are used) and whenever it passes half the
        # limit (a full count of 300 entries took 4 ms, twice per compile: a fifth of a median compile)
        self._added += 1
        grown = self._estimate + _size(self._entries[newest], set())
        if grown <= self.cache_limit_bytes // 2 and self._added < _RECOUNT:
            self._estimate = grown
            return
        self._added = 0
        self._estimate = self._bytes()
        if self._estimate <= self.cache_limit_bytes:
            return
        for slot in list(self._entries):
            if slot == newest:
                continue
            del self._entries[slot]
            self._estimate = self._bytes()
            if self._estimate <= self.cache_limit_bytes:
                return


DEFAULT_CACHE = GrammarCache()
"""The cache constraints use (``Constraint.compile``, ``matches``); ``constraints.grammar.clear_caches`` empties it."""
