"""In-process quota store: the embedded default for a single gate process.

Same rolling-window arithmetic as the Redis script (``stores/window.py``). Atomicity: ``consume``
and ``refund`` never await between reading and writing counters, so under asyncio they run as one
step; a lock also makes them safe from other threads (e.g. the admin listener). Budgets are not
shared between processes: use Redis for ``workers > 1`` or several replicas.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from . import window as W
from .quota import Bucket, ConsumeResult, Reservation, ReservedAmount, encode_group

_SWEEP_EVERY = 4096  # consumes between sweeps that drop buckets whose sub-buckets all expired


class MemoryQuotaStore:
    """Rolling-window counters in a dict: ``(group, key, window_s) -> {slot: amount}``."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], dict[int, float]] = {}
        self._lock = threading.Lock()
        self._ops = 0

    async def consume(self, group: str, buckets: Sequence[Bucket], now: float) -> ConsumeResult:
        g = encode_group(group)
        t = W.now_ms(now)
        with self._lock:
            self._ops += 1
            if self._ops % _SWEEP_EVERY == 0:
                self._sweep(t)
            plan: list[tuple[Bucket, dict[int, float], int, float]] = []
            remaining: dict[str, float] = {}
            worst: tuple[int, str] | None = None
            for b in buckets:
                width = W.width_ms(b.window_s)
                cur = W.slot_of(t, width)
                slots = self._counters.setdefault((g, b.key, b.window_s), {})
                self._prune(slots, cur)
                total = W.live_total(slots, cur)
                plan.append((b, slots, cur, total))
                remaining[b.quota] = float(b.limit) - total
                if total + b.amount > b.limit:
                    wait = W.retry_after_s(
                        slots, cur, width, t, total, b.amount, b.limit, b.window_s
                    )
                    if worst is None or wait > worst[0]:
                        worst = (wait, b.quota)
            if worst is not None:
                return ConsumeResult(False, remaining, worst[0], worst[1], None)
            items = []
            for b, slots, cur, total in plan:
                slots[cur] = slots.get(cur, 0.0) + float(b.amount)
                remaining[b.quota] = float(b.limit) - (total + float(b.amount))
                items.append(ReservedAmount(b.quota, b.key, b.window_s, cur, float(b.amount)))
            return ConsumeResult(True, remaining, None, None, Reservation(group, tuple(items)))

    async def refund(self, reservation: Reservation) -> None:
        g = encode_group(reservation.group)
        with self._lock:
            for it in reservation.items:
                slots = self._counters.get((g, it.key, it.window_s))
                if slots is None or it.slot not in slots:
                    continue  # the sub-bucket expired: nothing left to give back
                left = slots[it.slot] - it.amount
                if left <= 0:
                    del slots[it.slot]
                else:
                    slots[it.slot] = left

    async def usage(self, group: str, key: str, window_s: int, now: float) -> float:
        with self._lock:
            slots = self._counters.get((encode_group(group), key, window_s))
            if not slots:
                return 0.0
            return W.live_total(slots, W.slot_of(W.now_ms(now), W.width_ms(window_s)))

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        with self._lock:
            self._counters.clear()

    @staticmethod
    def _prune(slots: dict[int, float], cur: int) -> None:
        oldest = W.oldest_live(cur)
        for s in [s for s in slots if s < oldest]:
            del slots[s]

    def _sweep(self, t: int) -> None:
        """Drop buckets with nothing live, so idle tenants do not hold memory forever."""
        for k in list(self._counters):
            slots = self._counters[k]
            self._prune(slots, W.slot_of(t, W.width_ms(k[2])))
            if not slots:
                del self._counters[k]
