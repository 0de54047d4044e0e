"""Bounded caches for values clients repeat: ids in quota keys, Slurm spellings, GPU names.

Each cache is a plain dict emptied when it reaches ``MAX_ENTRIES``. Clients send the same few
values again and again, so a clear costs one refill; a client sending a fresh value every time
only keeps evicting, it cannot grow memory. Keys longer than the cache's limit are never kept,
and ``Memo`` keeps successful parses only: a refused text is parsed (and refused, with its own
message) every time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

MAX_ENTRIES = 4096

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_MISS: Any = object()


def remember(
    cache: dict[K, V], key: K, value: V, size: int, limit: int, entries: int = MAX_ENTRIES
) -> None:
    """Keep ``value`` under ``key`` unless ``size`` exceeds ``limit``; empty a cache holding
    ``entries`` values first."""
    if size > limit:
        return
    if len(cache) >= entries:
        cache.clear()
    cache[key] = value


class Memo(Generic[T]):
    """``parse`` with its results remembered by text (texts up to ``max_text`` characters, at
    most ``max_entries`` of them). ``parse`` must be a pure function of the whole text, and what
    it returns must never be changed by a caller (a tuple, a frozen object)."""

    __slots__ = ("cache", "max_entries", "max_text", "parse")

    def __init__(
        self, parse: Callable[[str], T], max_text: int, max_entries: int = MAX_ENTRIES
    ) -> None:
        self.parse = parse
        self.max_text = max_text
        self.max_entries = max_entries
        self.cache: dict[str, T] = {}

    def __call__(self, text: str) -> T:
        hit = self.cache.get(text, _MISS)
        if hit is _MISS:
            hit = self.parse(text)  # a refusal raises here and is not remembered
            remember(self.cache, text, hit, len(text), self.max_text, self.max_entries)
        return hit  # type: ignore[no-any-return]
