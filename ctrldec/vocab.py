"""Token id -> the exact bytes the token adds to the output.

Constraints run on bytes, not on token strings: a byte-level BPE token can end in the middle of a
UTF-8 character, and a SentencePiece token spells a space as ``▁`` and raw bytes as ``<0xNN>``.
``TokenizerInfo`` holds that mapping for one tokenizer; it is built once per tokenizer (the first
lifetime of DESIGN.md) and cached on disk under ``ctrldec.models.cache_dir()``, keyed by a hash of
the tokenizer.

>>> info = TokenizerInfo([b"a", b"b", b"ab", b""], special_ids={3}, eos_token_ids=[3])
>>> info.decode_bytes([2, 0, 3])
b'aba'
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TokenizerError

__all__ = ["TokenizerInfo", "byte_level_alphabet", "tokenizer_info"]

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_CACHE_FORMAT = 1


def byte_level_alphabet() -> dict[str, int]:
    """The GPT-2 byte-level alphabet: printable character -> the byte it stands for.

    Printable Latin-1 characters stand for themselves; the other 68 bytes (controls, space, ...)
    are shifted to code points 256 and up, which is why a space is spelled ``Ġ`` in such vocabularies.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


_BYTE_LEVEL = byte_level_alphabet()


def _byte_level_bytes(token_id: int, text: str) -> bytes:
    try:
        return bytes(_BYTE_LEVEL[ch] for ch in text)
    except KeyError as e:
        raise TokenizerError(
            f"cannot map token {token_id} {text!r} to bytes: character {e.args[0]!r} is outside the "
            "byte-level BPE alphabet"
        ) from None


def _sentencepiece_bytes(text: str) -> bytes:
    m = _BYTE_TOKEN.match(text)
    if m:
        return bytes([int(m.group(1), 16)])
    return text.replace("▁", " ").encode("utf-8")


def _tokenizer_json(tokenizer: Any) -> dict | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return json.loads(backend.to_str())


def _component_types(component: Any) -> set[str]:
    """Every ``type`` named in a tokenizers component (decoders nest inside ``Sequence``)."""
    found: set[str] = set()
    if isinstance(component, dict):
        if "type" in component:
            found.add(component["type"])
        for value in component.values():
            found |= _component_types(value)
    elif isinstance(component, list):
        for value in component:
            found |= _component_types(value)
    return found


def _detect_kind(tokenizer: Any, spec: dict | None, tokens: Sequence[str | None]) -> str:
    if spec is not None:
        model_type = spec.get("model", {}).get("type")
        decoder = _component_types(spec.get("decoder"))
        pre = _component_types(spec.get("pre_tokenizer"))
        if "ByteLevel" in decoder or "ByteLevel" in pre:
            return "byte_level"
        if decoder & {"ByteFallback", "Metaspace"} or "Metaspace" in pre:
            return "sentencepiece"
        if model_type == "WordPiece" or "WordPiece" in decoder:
            raise TokenizerError(
                "cannot map tokens to bytes: this is a WordPiece tokenizer (continuation pieces like "
                "'##ing' do not say which bytes they add); use a byte-level BPE or SentencePiece tokenizer"
            )
    if getattr(tokenizer, "sp_model", None) is not None or getattr(tokenizer, "vocab_file", "").endswith(".model"):
        return "sentencepiece"
    sample = [t for t in tokens if t]
    if sample and sum("▁" in t for t in sample) > len(sample) // 10:
        return "sentencepiece"
    if sample and sum("Ġ" in t for t in sample) > len(sample) // 20:
        return "byte_level"
    raise TokenizerError(
        f"cannot map tokens of {type(tokenizer).__name__} to bytes: neither byte-level BPE "
        "(GPT-2/Llama-3 style) nor SentencePiece (▁ and <0xNN>) was recognised"
    )


class TokenizerInfo:
    """The bytes each token id adds to the output, for one tokenizer (and one logits width).

    ``token_bytes[i]`` is empty for special tokens and for padding ids beyond the tokenizer; those
    are never allowed inside constrained text. ``vocab_size`` equals the model's logits width when
    one was given to ``from_huggingface``.
    """

    def __init__(
        self,
        token_bytes: Sequence[bytes],
        *,
        special_ids: Iterable[int] = (),
        eos_token_ids: Iterable[int] = (),
        kind: str = "custom",
        encode: Callable[[str], list[int]] | None = None,
    ) -> None:
        self.token_bytes: list[bytes] = list(token_bytes)
        self.special_ids = frozenset(special_ids)
        self.eos_token_ids = tuple(dict.fromkeys(eos_token_ids))
        self.kind = kind
        self._encode = encode
        for eos in self.eos_token_ids:
            if not 0 <= eos < len(self.token_bytes):
                raise TokenizerError(f"EOS token id {eos} is outside the vocabulary of {len(self.token_bytes)} ids")
        digest = hashlib.sha256()
        digest.update(f"{kind}|{sorted(self.special_ids)}|{self.eos_token_ids}|".encode())
        for b in self.token_bytes:
            digest.update(len(b).to_bytes(2, "little"))
            digest.update(b)
        self.hash = digest.hexdigest()[:24]
        # Tables derived on first use and shared by every grammar compiled for this tokenizer, from
        # any thread: built once under the lock, read-only after.
        self._lock = threading.RLock()
        self._table: tuple[np.ndarray, np.ndarray] | None = None
        self._trie: TokenTrie | None = None
        self._unsafe: np.ndarray | None = None
        self._char_starts: np.ndarray | None = None
        self._sorted: list[bytes] | None = None
        self._classes: Any = None  # token classifications shared by grammars (``engine.compiled``)
        self._first_bytes: np.ndarray | None = None
        self._first_words: np.ndarray | None = None
        self._safe_words: np.ndarray | None = None
        self._string_scan: Any = None  # every token read from inside a JSON string (``engine.compiled``)
        self._tail_sets: tuple[np.ndarray, ...] | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    def __repr__(self) -> str:
        return f"TokenizerInfo(kind={self.kind!r}, vocab_size={self.vocab_size}, eos={list(self.eos_token_ids)})"

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def from_huggingface(
        cls,
        tokenizer: Any,
        *,
        vocab_size: int | None = None,
        eos_token_ids: Iterable[int] | None = None,
        cache: bool = True,
    ) -> TokenizerInfo:
        """Build (or load from the disk cache) the byte table of a Hugging Face tokenizer.

        ``vocab_size``: the model's logits width, when it differs from ``len(tokenizer)``; ids past
        the tokenizer are padding (no bytes, never allowed), ids past ``vocab_size`` are dropped.
        ``eos_token_ids``: the ids that end generation (default: the tokenizer's EOS).
        """
        n_tok = len(tokenizer)
        width = n_tok if vocab_size is None else int(vocab_size)
        if eos_token_ids is None:
            eos_token_ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
        eos = [e for e in eos_token_ids if e is not None]
        special = set(tokenizer.all_special_ids)
        for tid, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                special.add(tid)
        encode = _make_encoder(tokenizer)
        spec = _tokenizer_json(tokenizer)
        key = None
        if cache and spec is not None:
            key = hashlib.sha256(
                json.dumps([spec, sorted(special), width, type(tokenizer).__name__], sort_keys=True).encode()
            ).hexdigest()[:24]
            loaded = _load_cached(key)
            if loaded is not None:
                token_bytes, kind = loaded
                return cls(token_bytes, special_ids=special, eos_token_ids=eos, kind=kind, encode=encode)
        tokens = tokenizer.convert_ids_to_tokens(list(range(n_tok)))
        kind = _detect_kind(tokenizer, spec, tokens)
        added = getattr(tokenizer, "added_tokens_decoder", {})
        token_bytes: list[bytes] = []
        for tid in range(width):
            text = tokens[tid] if tid < n_tok else None
            if text is None or tid in special:
                token_bytes.append(b"")
            elif tid in added:
                token_bytes.append(added[tid].content.encode("utf-8"))
            elif kind == "byte_level":
                token_bytes.append(_byte_level_bytes(tid, text))
            else:
                token_bytes.append(_sentencepiece_bytes(text))
        if key is not None:
            _store_cached(key, token_bytes, kind)
        return cls(token_bytes, special_ids=special, eos_token_ids=eos, kind=kind, encode=encode)

    def with_eos(self, eos_token_ids: Iterable[int]) -> TokenizerInfo:
        """The same vocabulary with other ids ending the output; the derived tables are shared."""
        other = TokenizerInfo(self.token_bytes, special_ids=self.special_ids, eos_token_ids=eos_token_ids,
                              kind=self.kind, encode=self._encode)
        with self._lock:
            other._table, other._trie, other._unsafe = self._table, self._trie, self._unsafe
            other._char_starts, other._sorted = self._char_starts, self._sorted
            other._classes, other._first_bytes = self._classes, self._first_bytes
            other._first_words, other._safe_words = self._first_words, self._safe_words
            other._string_scan = self._string_scan
        return other

    def prepare(self) -> TokenizerInfo:
        """Build the tables every grammar derives from this vocabulary now, not in the first
        compile or mask that needs them: about 0.2 s for a 49,152-token vocabulary, what a
        server pays once at start-up (the peers' tokenizer info does the same work when it is
        made). Returns ``self``.

        >>> info = TokenizerInfo([b"a", b"b", b"ab"]).prepare()
        >>> info.trie().n_nodes >= 3
        True
        """
        for table in (self.byte_table, self.trie, self.unsafe_tail, self.char_starts, self.first_bytes,
                      self.first_byte_words, self.safe_char_words, self.sorted_token_bytes, self.tail_sets):
            table()
        return self

    def _once(self, name: str, build: Callable[[], Any]) -> Any:
        """The cached table ``name``, built by ``build`` the first time (once, even across threads)."""
        value = getattr(self, name)
        if value is None:
            with self._lock:
                value = getattr(self, name)
                if value is None:
                    value = build()
                    setattr(self, name, value)
        return value

    # -- use ----------------------------------------------------------------------------------------

    def decode_bytes(self, token_ids: Iterable[int]) -> bytes:
        """The bytes a sequence of tokens adds to the output (special tokens add none)."""
        tb = self.token_bytes
        return b"".join(tb[t] for t in token_ids)

    def encode(self, text: str) -> list[int]:
        """The tokenizer's own (canonical) tokenization of ``text``, special-token names kept as text."""
        if self._encode is None:
            raise TokenizerError("this TokenizerInfo was built without a tokenizer, so it cannot encode text")
        return self._encode(text)

    def encode_after(self, previous: Sequence[int], data: bytes) -> list[int] | None:
        """Canonical tokens for ``data`` following the tokens ``previous`` (the output so far).

        ``data`` is tokenized together with the text of the last few previous tokens (BPE merges
        across the boundary), and the tokens after those are returned; None when the new text
        would re-merge the previous tokens (no canonical split at the boundary). A multi-byte
        character cut at the end of ``data`` is left out.
        """
        text = data.decode("utf-8", errors="ignore")
        while text and not data.startswith(text.encode("utf-8")):
            text = text[:-1]
        if not text:
            return []
        tail_ids: list[int] = []
        tail_text = ""
        for k in (3, 2, 1, 0):
            ids = list(previous[-k:]) if k else []
            if len(ids) < k or any(t in self.special_ids for t in ids):
                continue
            try:
                tail_text = self.decode_bytes(ids).decode("utf-8")
            except UnicodeDecodeError:
                continue
            tail_ids = ids
            break
        ids = self.encode(tail_text + text)
        if ids[: len(tail_ids)] != tail_ids:
            return None
        return ids[len(tail_ids) :]

    def unsafe_tail(self) -> np.ndarray:
        """Per token: the index of its last byte that is *not* part of a complete JSON-string-safe
        UTF-8 character (not a control, quote or backslash); -1 if the whole token is safe.

        A lexer state that returns to itself on every safe character keeps all tokens that are
        safe from some offset on: the mask builder settles them without walking their bytes.
        """
        return self._once("_unsafe", self._unsafe_tail)

    def _unsafe_tail(self) -> np.ndarray:
        out = np.full(self.vocab_size, -1, dtype=np.int32)
        for tid, data in enumerate(self.token_bytes):
            i, last = 0, -1
            while i < len(data):
                b = data[i]
                width = 1 if b < 0x80 else 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 0
                chunk = data[i : i + width] if width else b""
                try:
                    ok = width > 0 and len(chunk) == width and (ch := chunk.decode("utf-8")) >= " " and ch not in '"\\'
                except UnicodeDecodeError:
                    ok = False
                if not ok:
                    last = i + max(width, 1) - 1 if width and len(chunk) == width else len(data) - 1 if width else i
                    i += max(width, 1)
                    continue
                i += width
            out[tid] = min(last, len(data) - 1)
        return _frozen(out)

    def tail_sets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per token in trie order (``trie().order``): the ASCII bytes it has after its first byte,
        as bit sets (``uint64`` for bytes 0-63, ``uint64`` for 64-127), and whether it has other
        bytes there.

        A lexer state that every byte of an ASCII set leads back to (the loop of ``[a-z0-9_]*``)
        keeps each token whose bytes from some offset on are in that set: the mask builder settles
        them with a subset test instead of walking their bytes (any offset from 1 on: the bytes
        after the first are a superset of those after a later one).

        >>> lo, hi, other = TokenizerInfo([b"ab", "aé".encode()]).tail_sets()
        >>> [int(x) for x in hi], other.tolist()  # "b" is byte 98: bit 34 of the second word
        ([17179869184, 0], [False, True])
        """
        return self._once("_tail_sets", self._tail_bits)

    def _tail_bits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        table, lengths = self.byte_table()
        n, width = table.shape
        after = np.arange(width)[None, :]
        inside = (after >= 1) & (after < lengths[:, None])
        rows, cols = np.nonzero(inside)
        data = table[rows, cols].astype(np.uint64)
        lo = np.zeros(n, dtype=np.uint64)
        hi = np.zeros(n, dtype=np.uint64)
        one = np.uint64(1)
        np.bitwise_or.at(lo, rows[data < 64], one << data[data < 64])
        upper = (data >= 64) & (data < 128)
        np.bitwise_or.at(hi, rows[upper], one << (data[upper] - np.uint64(64)))
        other = np.zeros(n, dtype=bool)
        other[rows[data >= 128]] = True
        order = self.trie().order
        return tuple(_frozen(a[order]) for a in (lo, hi, other))  # type: ignore[return-value]

    def char_starts(self) -> np.ndarray:
        """int16[token, p]: how many UTF-8 characters start in the token's first p bytes."""
        return self._once("_char_starts", self._count_char_starts)

    def _count_char_starts(self) -> np.ndarray:
        table, lengths = self.byte_table()
        starts = ((table & 0xC0) != 0x80) & (np.arange(table.shape[1])[None, :] < lengths[:, None])
        out = np.zeros((table.shape[0], table.shape[1] + 1), dtype=np.int16)
        np.cumsum(starts, axis=1, out=out[:, 1:])
        return _frozen(out)

    def first_bytes(self) -> np.ndarray:
        """int16[token]: each token's first byte, 256 for a token without bytes."""
        return self._once("_first_bytes", self._find_first_bytes)

    def _find_first_bytes(self) -> np.ndarray:
        table, lengths = self.byte_table()
        first = table[:, 0].astype(np.int16) if table.shape[1] else np.zeros(len(lengths), dtype=np.int16)
        return _frozen(np.where(lengths > 0, first, np.int16(256)))  # int16 before the 256: uint8 would wrap it to 0

    def first_byte_words(self) -> np.ndarray:
        """uint32[258, words]: row ``b`` is the bitmask (``engine.bitmask`` layout) of the tokens
        whose first byte is ``b``; row 256, of the tokens without bytes; row 257, of every token."""
        return self._once("_first_words", self._pack_first_bytes)

    def _pack_first_bytes(self) -> np.ndarray:
        first = self.first_bytes()
        flags = np.zeros((258, -(-self.vocab_size // 32) * 32), dtype=bool)
        flags[first, np.arange(self.vocab_size)] = True
        flags[257, : self.vocab_size] = True
        return _frozen(np.packbits(flags, axis=1, bitorder="little").view(np.uint32))

    def safe_char_words(self) -> np.ndarray:
        """uint32[most characters in a token + 1, words]: row ``c`` is the bitmask of the tokens
        made only of JSON-string-safe characters (``unsafe_tail`` -1), ``c`` of them."""
        return self._once("_safe_words", self._pack_safe_by_chars)

    def _pack_safe_by_chars(self) -> np.ndarray:
        _, lengths = self.byte_table()
        chars = self.char_starts()[:, -1].astype(np.int64)
        safe = np.flatnonzero((lengths > 0) & (self.unsafe_tail() < 0))
        flags = np.zeros((int(chars.max(initial=0)) + 1, -(-self.vocab_size // 32) * 32), dtype=bool)
        flags[chars[safe], safe] = True
        return _frozen(np.packbits(flags, axis=1, bitorder="little").view(np.uint32))

    def sorted_token_bytes(self) -> list[bytes]:
        """The distinct token byte strings, sorted (for prefix searches with ``bisect``)."""
        return self._once("_sorted", lambda: sorted(set(self.token_bytes)))

    def trie(self) -> TokenTrie:
        """The vocabulary as a byte trie (built on first use)."""
        return self._once("_trie", lambda: TokenTrie(self.token_bytes))

    def byte_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(bytes, lengths)``: token bytes zero-padded into ``uint8[vocab, max_len + 1]``, and lengths.

        Every row ends with at least one padding byte, so vectorised readers can index one past
        a token's end without a bounds check.
        """
        return self._once("_table", self._pad_bytes)

    def _pad_bytes(self) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.fromiter((len(b) for b in self.token_bytes), dtype=np.int32, count=self.vocab_size)
        width = int(lengths.max(initial=0)) + 1
        flat = np.frombuffer(b"".join(self.token_bytes), dtype=np.uint8)
        rows = np.repeat(np.arange(self.vocab_size), lengths)
        starts = np.cumsum(lengths) - lengths
        cols = np.arange(len(flat)) - np.repeat(starts, lengths)
        table = np.zeros((self.vocab_size, width), dtype=np.uint8)
        table[rows, cols] = flat
        return _frozen(table), _frozen(lengths)

    def memory_size_bytes(self) -> int:
        """Bytes of the derived tables built so far (numpy buffers; the token bytes not counted)
        and of the token classifications grammars share (``Limits.max_shared_classification_bytes``)."""
        arrays = [*(self._table or ()), *(self._tail_sets or ()), self._unsafe, self._char_starts, self._first_bytes, self._first_words, self._safe_words, *(self._string_scan or ())]
        if self._trie is not None:
            arrays += [self._trie.order, *(a for level in self._trie.levels for a in level.values())]
        # the interned arrays are mostly the classifications' own, counted twice: an upper bound
        shared = self._classes.nbytes() if self._classes is not None else 0
        return sum(a.nbytes for a in arrays if a is not None) + shared


class TokenTrie:
    """The vocabulary as a byte trie, stored level by level for vectorised walks.

    Tokens (with bytes) are sorted by their bytes, so the tokens under any trie node form a
    contiguous range ``[lo, hi)`` of ``order``. ``levels[d]`` describes the nodes at depth
    ``d + 1`` (prefixes of length d + 1): ``parent`` (index into the previous level, -1 for the
    root), ``byte``, ``lo``/``hi``, ``ends`` (how many tokens are exactly this prefix; they
    sit first in the range), and ``kids_lo``/``kids_hi`` (the node's children in the next level,
    a contiguous range).
    """

    def __init__(self, token_bytes: Sequence[bytes]) -> None:
        order = sorted((i for i, b in enumerate(token_bytes) if b), key=lambda i: token_bytes[i])
        self.order = np.array(order, dtype=np.int64)
        n = len(order)
        lengths = np.array([len(token_bytes[i]) for i in order], dtype=np.int64)
        width = int(lengths.max(initial=0))
        table = np.zeros((n, width), dtype=np.uint8)
        for row, i in enumerate(order):
            table[row, : len(token_bytes[i])] = np.frombuffer(token_bytes[i], dtype=np.uint8)
        self.levels: list[dict[str, np.ndarray]] = []
        node_of_prev = np.full(n, -1, dtype=np.int64)  # each row's node at the previous depth
        same = np.zeros(n, dtype=bool)  # row i is in the same node as row i - 1 (so far)
        same[1:] = True
        for d in range(width):
            has = lengths > d
            # Rows sharing a prefix are adjacent (sorted order), and a shorter token can never sit
            # between two rows that share a longer prefix.
            same[1:] &= (table[1:, d] == table[:-1, d]) & has[1:] & has[:-1]
            rows = np.flatnonzero(has)
            first = ~same[rows]
            node_of_row = np.cumsum(first) - 1
            starts = rows[first]
            last = np.zeros(len(starts), dtype=np.int64)
            np.maximum.at(last, node_of_row, rows)
            self.levels.append(
                {
                    "parent": node_of_prev[starts],
                    "byte": table[starts, d].astype(np.int64),
                    "lo": starts,
                    "hi": last + 1,
                    "ends": np.bincount(node_of_row[lengths[rows] == d + 1], minlength=len(starts)),
                }
            )
            node_of_prev = np.full(n, -1, dtype=np.int64)
            node_of_prev[rows] = node_of_row
        # each node's children in the next level: a contiguous range (nodes keep the rows' order)
        for level, below in zip(self.levels, [*self.levels[1:], None]):
            nodes = np.arange(len(level["lo"]))
            parents = below["parent"] if below is not None else np.zeros(0, dtype=np.int64)
            level["kids_lo"] = np.searchsorted(parents, nodes, side="left")
            level["kids_hi"] = np.searchsorted(parents, nodes, side="right")
        _frozen(self.order)
        for level in self.levels:
            for array in level.values():
                _frozen(array)

    def rows_along(self, text: bytes) -> list[tuple[int, int]]:
        """Rows (ranges of ``order``) of the tokens that are a proper prefix of ``text``, and of
        those that begin with all of it: the only tokens a walk of ``text``'s bytes can follow
        past its first byte or to its end. A walk down the levels, ``len(text)`` binary searches.

        >>> trie = TokenTrie([b"a", b"ab", b"abc", b"b"])
        >>> [trie.order[lo:hi].tolist() for lo, hi in trie.rows_along(b"ab")]
        [[0], [1, 2]]
        """
        out: list[tuple[int, int]] = []
        first, last = 0, len(self.levels[0]["lo"]) if self.levels else 0
        for d, b in enumerate(text):
            if d >= len(self.levels):
                break
            level = self.levels[d]
            node = bisect.bisect_left(level["byte"], b, first, last)
            if node >= last or level["byte"].item(node) != b:
                break
            lo = level["lo"].item(node)
            if d + 1 == len(text):
                out.append((lo, level["hi"].item(node)))
                break
            ends = level["ends"].item(node)
            if ends:
                out.append((lo, lo + ends))
            first, last = level["kids_lo"].item(node), level["kids_hi"].item(node)
        return out

    def rows_along_all(self, texts: list[bytes]) -> list[tuple[int, int]]:
        """``rows_along`` of every text of ``texts``, their shared prefixes walked once (an
        enum's values, a closed object's names); ranges may overlap.

        >>> trie = TokenTrie([b"a", b"ab", b"abc", b"b"])
        >>> sorted(trie.order[lo:hi].tolist() for lo, hi in trie.rows_along_all([b"ab", b"ac", b"b"]))
        [[0], [1, 2], [3]]
        """
        out: list[tuple[int, int]] = []
        todo = [(0, 0, len(self.levels[0]["lo"]) if self.levels else 0, sorted({t for t in texts if t}))]
        while todo:
            d, first, last, group = todo.pop()  # texts longer than d, sharing their first d bytes
            if d >= len(self.levels):
                continue
            level = self.levels[d]
            i = 0
            while i < len(group):
                b, j = group[i][d], i + 1
                while j < len(group) and group[j][d] == b:
                    j += 1
                node = bisect.bisect_left(level["byte"], b, first, last)
                if node < last and level["byte"].item(node) == b:
                    lo = level["lo"].item(node)
                    if len(group[i]) == d + 1:  # a text ends here (sorted: the shortest first): its whole subtree
                        out.append((lo, level["hi"].item(node)))
                    else:
                        ends = level["ends"].item(node)
                        if ends:
                            out.append((lo, lo + ends))
                        todo.append((d + 1, level["kids_lo"].item(node), level["kids_hi"].item(node), group[i:j]))
                i = j
        return out

    @property
    def n_nodes(self) -> int:
        return sum(len(level["lo"]) for level in self.levels)


def _frozen(array: np.ndarray) -> np.ndarray:
    """Mark a table shared across threads read-only (a stray in-place write then fails loudly)."""
    array.flags.writeable = False
    return array


_INFOS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {logits width: info}
_INFOS_LOCK = threading.Lock()


def tokenizer_info(tokenizer: Any, vocab_size: int | None = None) -> TokenizerInfo:
    """``TokenizerInfo`` for a Hugging Face tokenizer, built once per (tokenizer, logits width)
    and process, even when several threads ask at once; a ``TokenizerInfo`` is returned as is."""
    if isinstance(tokenizer, TokenizerInfo):
        if vocab_size is not None and vocab_size != tokenizer.vocab_size:
            raise ValueError(
                f"this TokenizerInfo covers {tokenizer.vocab_size} ids but the model has {vocab_size} logits; "
                "build it with TokenizerInfo.from_huggingface(tokenizer, vocab_size=...)"
            )
        return tokenizer
    with _INFOS_LOCK:
        try:
            per_width = _INFOS.setdefault(tokenizer, {})
        except TypeError:  # not weak-referenceable: build every time
            per_width = None
        info = per_width.get(vocab_size) if per_width is not None else None
        if info is None:
            info = TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
            if per_width is not None:
                per_width[vocab_size] = info
    return info


def _make_encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    def encode(text: str) -> list[int]:
        try:
            out = tokenizer(text, add_special_tokens=False, split_special_tokens=True)
        except TypeError:
            out = tokenizer(text, add_special_tokens=False)
        return list(out["input_ids"])

    return encode


def _cache_path(key: str) -> Path:
    from .models import cache_dir

    return cache_dir() / "tokenizers" / f"{key}.v{_CACHE_FORMAT}.npz"


def _load_cached(key: str) -> tuple[list[bytes], str] | None:
    path = _cache_path(key)
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            blob = data["blob"].tobytes()
            offsets = data["offsets"]
            kind = str(data["kind"])
    except (OSError, ValueError, KeyError):
        return None
    return [blob[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)], kind


def _store_cached(key: str, token_bytes: list[bytes], kind: str) -> None:
    path = _cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.zeros(len(token_bytes) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in token_bytes], out=offsets[1:])
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        np.savez(tmp, blob=np.frombuffer(b"".join(token_bytes), dtype=np.uint8), offsets=offsets, kind=np.array(kind))
        os.replace(tmp, path)
    except OSError:
        pass  # the cache is an optimisation; a read-only home must not break decoding
