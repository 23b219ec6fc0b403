"""Run deeply recursive work (Lark's LALR analysis, the JSON Schema compiler's descent through
``$ref`` chains) with a recursion limit to match, instead of failing at Python's default 1,000.

``deep(fn, depth)`` calls ``fn`` in a thread of its own with a large stack, while the
interpreter's recursion limit is at least ``depth`` (the limit is per interpreter: it is raised
while any such call runs and restored after the last one). Inside such a thread, nested calls
run directly. Context variables (the compile budget) follow ``fn``; exceptions reach the caller.

>>> deep(lambda: 6 * 7, 50_000)
42
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["deep", "MAX_DEPTH"]

T = TypeVar("T")

MAX_DEPTH = 200_000  # frames; CPython 3.11+ runs Python-to-Python calls without C stack
_STACK_BYTES = 512 << 20  # address space only: pages are touched as the recursion goes
_lock = threading.Lock()
_active = [0, 0]  # deep calls running, the recursion limit before the first of them
_inside = threading.local()


def deep(fn: Callable[[], T], depth: int) -> T:
    """``fn()`` with Python's recursion limit at least ``min(depth, MAX_DEPTH)``."""
    depth = min(depth, MAX_DEPTH)
    if getattr(_inside, "on", False) or depth <= sys.getrecursionlimit() // 2:
        return fn()
    out: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        _inside.on = True
        try:
            out["value"] = context.run(fn)
        except BaseException as e:  # re-raised in the caller's thread
            out["error"] = e

    with _lock:
        if _active[0] == 0:
            _active[1] = sys.getrecursionlimit()
        _active[0] += 1
        sys.setrecursionlimit(max(sys.getrecursionlimit(), depth))
        size = threading.stack_size()
        try:
            threading.stack_size(_STACK_BYTES)
            thread = threading.Thread(target=target, name="ctrldec-deep", daemon=True)
            thread.start()
        except BaseException:
            _release()
            raise
        finally:
            threading.stack_size(size)
    try:
        thread.join()
    finally:
        with _lock:
            _release()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _release() -> None:
    """One deep call less; the last one restores the recursion limit (call under ``_lock``)."""
    _active[0] -= 1
    if _active[0] == 0:
        sys.setrecursionlimit(_active[1])
