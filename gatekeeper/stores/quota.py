"""The quota store contract: check-and-consume rolling-window budgets, all or none, and refund.

A request touches several *buckets* (its tenant's, its ultimate parent's, its licence's); the store
checks every one and consumes them all or none, atomically with respect to every other gate
process sharing the store. All buckets of one call belong to one *ownership group* (the ultimate
parent), which is what lets the Redis store keep them under one hash tag (``stores/redis.py``).

Implementations: ``MemoryQuotaStore`` (embedded default, one process) and ``RedisQuotaStore``
(``redis://``, ``rediss://``, ``redis+cluster://``), wrapped by ``LeasedQuotaStore`` unless
``quota.lease_requests`` is 0 (``stores/lease.py``). Both use the arithmetic of
``stores/window.py``; store failures surface as ``DependencyError("store-unavailable")``.
``stores/factory.py`` builds the configured one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from ..memo import remember

# Stands for an id the stage could not determine. `quote()` always escapes "*", so no real id
# encodes to it and the shared fallback bucket cannot collide with a real one.
UNIDENTIFIED = "*"


# Encoded parts and bucket keys, cached (``gatekeeper.memo``): every request encodes its tenant,
# parent and quota names, and `quote()` costs ~0.3 us a call while the same few ids repeat. Ids
# come from token claims: a client minting fresh ids only falls back to `quote()`.
_CACHEABLE_LEN = 256
_encoded: dict[str, str] = {}
_bucket_keys: dict[tuple[str, str, str | None], str] = {}


def encode_part(part: str | None) -> str:
    """Percent-encode one key component so ``:``, ``{``, ``}`` and ``%`` cannot forge another key.

    ``None`` (unknown id) becomes ``*``, which no encoded id can equal.
    """
    # SECURITY: tenant and entity ids come from token claims; escaping keeps one tenant from
    # naming a key (or hash tag) that belongs to another.
    if part is None:
        return UNIDENTIFIED
    enc = _encoded.get(part)
    if enc is None:
        enc = quote(part, safe="")
        remember(_encoded, part, enc, len(part), _CACHEABLE_LEN)
    return enc


def bucket_key(quota: str, per: str, ident: str | None) -> str:
    """The logical bucket key inside a group: ``<quota>:<per>:<id>``, each part encoded."""
    k = (quota, per, ident)
    key = _bucket_keys.get(k)
    if key is None:
        key = f"{encode_part(quota)}:{encode_part(per)}:{encode_part(ident)}"
        remember(_bucket_keys, k, key, len(key), _CACHEABLE_LEN)
    return key


def encode_group(group: str) -> str:
    """The encoded ownership group; ``""`` (no parent, entity or tenant known) becomes ``*``."""
    return encode_part(group or None)


@dataclass(frozen=True, slots=True)
class Bucket:
    """One budget a request draws from: ``amount`` of at most ``limit`` per rolling ``window_s``."""

    quota: str  # quota name, reported back in `remaining` / `exhausted`
    key: str  # bucket_key(...): unique within the group
    amount: float
    limit: float
    window_s: int

    def __post_init__(self) -> None:
        # SECURITY: a negative or NaN amount would credit the budget or poison the counter.
        if not (math.isfinite(self.amount) and self.amount >= 0):
            raise ValueError(f"bucket {self.key}: amount must be finite and >= 0")
        if not (math.isfinite(self.limit) and self.limit >= 0):
            raise ValueError(f"bucket {self.key}: limit must be finite and >= 0")
        if self.window_s < 1:
            raise ValueError(f"bucket {self.key}: window_s must be >= 1")


@dataclass(frozen=True, slots=True)
class ReservedAmount:
    """An amount that went into one sub-bucket (``slot``) of one bucket."""

    quota: str
    key: str
    window_s: int
    slot: int
    amount: float


@dataclass(slots=True)
class Reservation:
    """Everything ``refund`` needs to give back exactly what one ``consume`` took."""

    group: str
    items: tuple[ReservedAmount, ...] = field(default_factory=tuple)


@dataclass(slots=True)
class ConsumeResult:
    """The outcome of one all-or-none ``consume``."""

    admitted: bool
    remaining: dict[str, float]  # per quota name, after consumption (before, when refused)
    retry_after_s: int | None = None
    exhausted: str | None = None  # quota name of the bucket that refused (longest wait)
    reservation: Reservation | None = None


class QuotaStore(Protocol):
    """Atomic rolling-window budgets. Errors: ``DependencyError("store-unavailable")``."""

    async def consume(self, group: str, buckets: Sequence[Bucket], now: float) -> ConsumeResult:
        """Consume every bucket's amount, or none if any would exceed its limit."""
        ...

    async def refund(self, reservation: Reservation) -> None:
        """Give back a reservation (amounts whose sub-bucket has expired are simply gone)."""
        ...

    async def usage(self, group: str, key: str, window_s: int, now: float) -> float:
        """The amount currently counted in one bucket."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
