"""The rolling-window arithmetic shared by every quota store (the Lua script mirrors it exactly).

A window of ``W`` seconds is cut into ``SUB_BUCKETS`` (S = 60) sub-buckets of ``w`` milliseconds,
``w = ceil(W * 1000 / S)``, so ``S * w >= W``. An amount consumed at time ``t`` lands in sub-bucket
``floor(t_ms / w)``. At time ``now`` the usage is the sum of the ``S + 1`` newest sub-buckets
``cur - S .. cur`` (``cur = floor(now_ms / w)``), plus any newer ones written by a replica whose
clock runs ahead.

Error bound (conservative on purpose, an export budget must never be over-admitted): the counted
span reaches back between ``S * w`` and ``(S + 1) * w`` milliseconds, i.e. between ``W`` and
``W * (1 + 1/S)`` (+1 ms rounding). Hence

* over **any** true interval of length ``W`` the admitted total never exceeds the limit, and
* an amount is forgotten at most ``w ~= W/60`` (1.7 %) later than an exact sliding window would
  forget it, so a client may be refused for up to ``W/60`` longer than strictly necessary.

``Retry-After`` is the time until enough of the oldest sub-buckets leave the counted span for the
request to fit; a request larger than the whole limit gets the window length. (The Redis store
adds one rule for credit leased to gate processes: ``stores/redis.py``, ``LEASE_END``.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

SUB_BUCKETS = 60


def width_ms(window_s: int) -> int:
    """Sub-bucket width in milliseconds (rounded up, so ``S * width >= window``)."""
    return max(1, -(-window_s * 1000 // SUB_BUCKETS))


def now_ms(now: float) -> int:
    return math.floor(now * 1000.0)


def slot_of(now_ms_: int, width: int) -> int:
    return now_ms_ // width


def oldest_live(cur: int) -> int:
    """The oldest sub-bucket still counted when the current one is ``cur``."""
    return cur - SUB_BUCKETS


def live_total(slots: Mapping[int, float], cur: int) -> float:
    oldest = oldest_live(cur)
    return sum((v for s, v in sorted(slots.items()) if s >= oldest), 0.0)


def retry_after_s(
    slots: Mapping[int, float],
    cur: int,
    width: int,
    now_ms_: int,
    total: float,
    amount: float,
    limit: float,
    window_s: int,
) -> int:
    """Whole seconds until ``amount`` fits under ``limit`` (>= 1; the window if it never can)."""
    if amount > limit:
        return max(1, window_s)
    need = total + amount - limit
    freed = 0.0
    oldest = oldest_live(cur)
    for slot in sorted(s for s in slots if s >= oldest):
        freed += slots[slot]
        if freed >= need:
            # sub-bucket `slot` stops being counted once cur - S > slot
            wait_ms = (slot + SUB_BUCKETS + 1) * width - now_ms_
            return max(1, -(-wait_ms // 1000))
    return max(1, window_s)
