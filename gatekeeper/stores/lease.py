"""Quota leases: a gate process takes budget from Redis a slice at a time, admits from it locally.

Why: with Redis as the quota store, the round trip (the Lua script, the client, two context
switches) is the largest single cost of an admitted request (``bench/profile_gate.py`` shows it
against ``quota.store: memory``).

How (``quota.lease_requests`` = *k*, ``quota.lease_ttl_s`` = *ttl*):

* A process keeps at most one lease per *bucket set* (the ownership group and the request's
  buckets with their windows and limits): a credit per bucket, already consumed in Redis.
* A request whose amounts all fit the credit is admitted locally and the credit shrinks; no Redis
  call. Otherwise it goes to Redis, either for itself alone (exact, as without leases) or, when
  the last answer from Redis showed headroom for ``MARGIN`` leases in every bucket, for a new
  lease of *k* times its amounts, in one atomic ``consume``. Requests of the same process that
  find no credit while a lease is on its way wait for it (and the next, for up to
  ``quota.timeout_s``; then a call of their own: at most three store calls' time in all).
* Once a lease serves its first request, the next one is taken in the background, so under
  steady load requests rarely wait: the next lease is used once the current one cannot serve a
  request. A process so holds up to two leases' credit per bucket set.
* **Leases follow the rate** (``quota.lease_requests_max``, 256 by default). A lease used up
  within ``ttl / FAST_SHARE`` (62 ms at the default ttl) makes the bucket set's next lease twice
  as large, up to the max; one that expires with more than half of its credit left halves it,
  never below *k*. A busy tenant so costs one script call per up to 256 requests, a quiet one
  parks no more than *k* requests' worth; and since a lease needs ``MARGIN`` leases of its own
  size as headroom, larger leases stop farther from the limit. Why grow at all: each Redis
  round trip, with the context switches it causes, can cost more than the gate's whole policy;
  ``bench/ab.py`` compares lease sizes on a given machine.
* **Never over-admits.** Credit is consumed in Redis before it is handed out, all or none, tenant
  and parent buckets together. The lease books its amounts in the sub-bucket of its *expiry*
  (``charge_at``; ``stores/window.py`` counts newer sub-buckets), so they stay counted at least a
  full window after the last moment the credit can be used, and no lease is used past ``ttl``.
* **Exact near the limit.** Below ``MARGIN`` leases of headroom no lease is taken: every request
  goes to Redis, as without leases. A single process reports exact ``remaining`` figures
  (headroom after the lease plus the credit left); with several processes each sees its own
  credit, not the others'.
* **What it costs.** Credit held by one process is invisible to the others for up to ``ttl``: a
  request can be refused while up to ``workers x 2`` leases' worth (each at most
  ``lease_requests_max`` requests) sits unused in other processes, which needs the group to
  burn through ``MARGIN`` leases of headroom within ``ttl``.
  Unused credit is refunded when the lease expires (or is replaced, or the gate stops); a crash
  loses it, charged but never used (the safe side, like a lost script reply). ``usage()`` counts
  leased credit as used. A refusal while a lease on the bucket has not ended advises a retry
  when it ends (``Retry-After`` at most ``ttl``; Redis keeps each bucket's latest lease end).

Refunds of locally admitted requests (upstream failure) go to Redis directly, from the lease's
sub-bucket; the credit is not given back, so each amount is returned exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..errors import DependencyError
from ..memo import remember
from .quota import Bucket, ConsumeResult, Reservation, ReservedAmount
from .redis import RedisQuotaStore

log = logging.getLogger("gatekeeper.quota")

# A lease is taken only while every bucket has room for this many leases: far from the limit.
MARGIN = 64
# A lease used up within ttl_s / FAST_SHARE makes the next one twice as large (up to the max).
FAST_SHARE = 16
_ROUNDING = 1e-9
_LeaseKey = tuple[Any, ...]


@dataclass(slots=True)
class _Lease:
    """Credit taken from Redis in one call, per bucket, handed out until ``until``."""

    credit: list[float]  # per bucket, still to hand out
    slots: list[int]  # the sub-bucket each bucket's lease amount was booked in
    until: float  # wall-clock end: no admission from this lease at or after it
    k: int  # requests' worth of credit it was taken for
    full: list[float]  # per bucket, the credit it was taken with
    granted: float  # the event loop's clock when it arrived (how fast it is used up)
    handle: asyncio.TimerHandle | None = None
    # The buckets of the last request it served and their reserved items (``_admit``).
    reserved: tuple[Sequence[Bucket], tuple[ReservedAmount, ...]] | None = None


@dataclass(slots=True)
class _BucketSet:
    """One group's buckets as a process leases them: the leases and the last word from Redis."""

    group: str
    buckets: Sequence[Bucket]  # as the first request named them (keys for refunds)
    headroom: list[float] | None = None  # per bucket: limit minus what Redis counted, last reply
    current: _Lease | None = None
    next: _Lease | None = None  # taken in the background while `current` still serves
    granting: asyncio.Future[None] | None = None  # a lease call in flight
    k: int = 0  # requests' worth of the next lease (grows and shrinks with the rate)


def _lease_key(group: str, buckets: Sequence[Bucket]) -> _LeaseKey:
    return (group, *[(b.key, b.window_s, b.limit) for b in buckets])


def _fits(buckets: Sequence[Bucket], lease: _Lease) -> bool:
    credit = lease.credit
    for i, b in enumerate(buckets):  # noqa: SIM110 - no generator frame: this runs per request
        if b.amount > credit[i]:
            return False
    return True


class LeasedQuotaStore:
    """A ``QuotaStore`` admitting from leased credit, leasing from a Redis store (module doc)."""

    def __init__(
        self,
        inner: RedisQuotaStore,
        *,
        requests: int,
        ttl_s: float,
        margin: int = MARGIN,
        max_requests: int = 0,
    ) -> None:
        if requests < 1 or ttl_s <= 0 or margin < 1:
            raise ValueError("lease requests, ttl_s and margin must be positive")
        self.inner = inner
        self.timeout_s = inner.timeout_s  # the stage relies on the store's own deadline
        self.requests = requests
        self.max_requests = max(requests, max_requests)  # at or below requests: no growth
        self.fast_s = ttl_s / FAST_SHARE
        self.ttl_s = ttl_s
        self.margin = margin
        self._sets: dict[_LeaseKey, _BucketSet] = {}
        self._ahead: set[asyncio.Task[None]] = set()  # leases taken in the background
        self._refunds: set[asyncio.Task[None]] = set()  # unused credit on its way back
        self._granted = metrics.QUOTA_LEASES.labels("granted")
        self._returned = metrics.QUOTA_LEASES.labels("returned")

    # ------------------------------------------------------------------------------ consume

    async def consume(self, group: str, buckets: Sequence[Bucket], now: float) -> ConsumeResult:
        if not buckets:
            return await self.inner.consume(group, buckets, now)
        key = _lease_key(group, buckets)
        bs = self._sets.get(key)
        if bs is None:
            bs = _BucketSet(group, buckets, k=self.requests)
            remember(self._sets, key, bs, 0, 0)
        waiting_since: float | None = None
        while True:
            lease = bs.current
            if lease is not None:
                if now < lease.until and _fits(buckets, lease):
                    return self._serve(bs, lease, buckets, now)
                if bs.next is not None:
                    # The current lease cannot serve this request: move on to the next one.
                    bs.current, bs.next = bs.next, None
                    if now < lease.until:  # used up, not expired: how fast?
                        self._resize(bs, lease, used_up=True)
                    self._give_back(bs, lease)
                    continue
            if bs.granting is not None:
                # A lease is on its way (a store call, bounded by quota.timeout_s): wait for it
                # and try its credit; shielded, so a waiter that leaves cannot cancel it. Waiting
                # starts at most timeout_s after the first wait, then a call of our own.
                now_loop = asyncio.get_running_loop().time()
                if waiting_since is None:
                    waiting_since = now_loop
                if now_loop - waiting_since < self.timeout_s:
                    await asyncio.shield(bs.granting)
                    continue
            elif self._roomy(bs, buckets) and await self._grant(bs, buckets, now):
                continue  # this coroutine runs on first: the credit it took is still there
            result = await self.inner.consume(group, buckets, now)
            self._learn(bs, buckets, result)
            return result

    def consume_held(
        self, group: str, buckets: Sequence[Bucket], now: float
    ) -> ConsumeResult | None:
        """What ``consume`` answers when the current lease serves the request (most requests),
        without a coroutine; ``None`` when it does not (then ``consume``)."""
        if not buckets:
            return None
        bs = self._sets.get(_lease_key(group, buckets))
        if bs is None:
            return None
        lease = bs.current
        if lease is None or not (now < lease.until and _fits(buckets, lease)):
            return None
        return self._serve(bs, lease, buckets, now)

    def _serve(
        self, bs: _BucketSet, lease: _Lease, buckets: Sequence[Bucket], now: float
    ) -> ConsumeResult:
        """Admit from ``lease`` (it serves the request); once a lease serves, the next one is
        taken in the background (module docstring)."""
        result = self._admit(bs, lease, buckets)
        if bs.next is None and bs.granting is None and self._roomy(bs, buckets):
            self._lease_ahead(bs, buckets, now)
        return result

    def _admit(self, bs: _BucketSet, lease: _Lease, buckets: Sequence[Bucket]) -> ConsumeResult:
        credit, remaining = lease.credit, {}
        head = bs.headroom
        ahead = bs.next
        for i, b in enumerate(buckets):
            credit[i] -= b.amount
            # One process's exact view: what Redis has left plus the credit it holds.
            left = credit[i] + (ahead.credit[i] if ahead is not None else 0.0)
            remaining[b.quota] = (head[i] if head is not None else 0.0) + left
        # What a request of these buckets reserves from this lease is the same every time: the
        # last one's items serve again when the buckets are the very same (immutable) tuple.
        last = lease.reserved
        if last is not None and last[0] is buckets:
            items = last[1]
        else:
            slots = lease.slots
            items = tuple(
                ReservedAmount(b.quota, b.key, b.window_s, slots[i], b.amount)
                for i, b in enumerate(buckets)
            )
            if type(buckets) is tuple:
                lease.reserved = (buckets, items)
        return ConsumeResult(True, remaining, None, None, Reservation(bs.group, items))

    def _roomy(self, bs: _BucketSet, buckets: Sequence[Bucket]) -> bool:
        """Did Redis last show room for ``margin`` leases in every bucket?"""
        head = bs.headroom
        if head is None:
            return False  # not asked yet: the first request goes alone and learns the headroom
        need = self.margin * bs.k
        return all(h >= need * b.amount for h, b in zip(head, buckets, strict=True))

    def _learn(self, bs: _BucketSet, buckets: Sequence[Bucket], result: ConsumeResult) -> None:
        bs.headroom = [result.remaining.get(b.quota, 0.0) for b in buckets]

    async def _grant(
        self,
        bs: _BucketSet,
        buckets: Sequence[Bucket],
        now: float,
        done: asyncio.Future[None] | None = None,
    ) -> bool:
        """Take a lease of ``requests`` times these amounts; False when Redis refuses it."""
        loop = asyncio.get_running_loop()
        if done is None:
            done = loop.create_future()
        bs.granting = done
        k = bs.k
        until = now + self.ttl_s
        try:
            slice_ = [Bucket(b.quota, b.key, b.amount * k, b.limit, b.window_s) for b in buckets]
            result = await self.inner.consume(bs.group, slice_, now, charge_at=until)
        finally:
            bs.granting = None
            done.set_result(None)
        self._learn(bs, buckets, result)
        if not result.admitted or result.reservation is None:
            return False
        lease = _Lease(
            credit=[b.amount * k for b in buckets],
            slots=[item.slot for item in result.reservation.items],
            until=until,
            k=k,
            full=[b.amount * k for b in buckets],
            granted=loop.time(),
        )
        lease.handle = loop.call_later(self.ttl_s, self._expire, bs, lease)
        current = bs.current
        if current is not None and bs.next is None and now < current.until:
            bs.next = lease  # taken ahead: the current lease serves on until it cannot
        else:
            if current is not None:
                self._give_back(bs, current)
            if bs.next is not None:
                self._give_back(bs, bs.next)
            bs.current, bs.next = lease, None
        self._granted.inc()
        return True

    def _lease_ahead(self, bs: _BucketSet, buckets: Sequence[Bucket], now: float) -> None:
        """Take the next lease in the background (marked as on its way from this moment on)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        bs.granting = done
        self._spawn(self._ahead, self._grant_ahead(bs, buckets, now, done))

    async def _grant_ahead(
        self, bs: _BucketSet, buckets: Sequence[Bucket], now: float, done: asyncio.Future[None]
    ) -> None:
        try:
            await self._grant(bs, buckets, now, done)
        except DependencyError as exc:  # the next request that needs credit calls Redis itself
            metrics.STORE_ERRORS.inc()
            log.warning("quota: lease ahead failed: %s", exc)
        finally:
            if not done.done():  # cancelled before it started
                bs.granting = None
                done.set_result(None)

    def _spawn(self, tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # ------------------------------------------------------------------------- giving back

    def _resize(self, bs: _BucketSet, lease: _Lease, *, used_up: bool) -> None:
        """The size of the next lease: twice as large when this one was used up within
        ``ttl_s / FAST_SHARE``, half as large when it ran out of time with more than half of
        its credit left (module docstring); between ``requests`` and ``max_requests``."""
        if used_up:
            if asyncio.get_running_loop().time() - lease.granted < self.fast_s:
                bs.k = min(self.max_requests, max(bs.k, lease.k * 2))
        elif bs.k > self.requests and any(
            c > 0.5 * full for c, full in zip(lease.credit, lease.full, strict=True)
        ):
            bs.k = max(self.requests, bs.k // 2)

    def _expire(self, bs: _BucketSet, lease: _Lease) -> None:
        self._resize(bs, lease, used_up=False)
        if bs.current is lease:
            bs.current, bs.next = bs.next, None
        elif bs.next is lease:
            bs.next = None
        self._give_back(bs, lease)

    def _give_back(self, bs: _BucketSet, lease: _Lease) -> None:
        """Refund a lease's unused credit in the background (it is no longer handed out)."""
        if lease.handle is not None:
            lease.handle.cancel()
            lease.handle = None
        items = tuple(
            ReservedAmount(b.quota, b.key, b.window_s, slot, credit)
            for b, slot, credit, full in zip(
                bs.buckets, lease.slots, lease.credit, lease.full, strict=True
            )
            # What k subtractions leave of a used-up credit is rounding, not budget: no call.
            if credit > _ROUNDING * full
        )
        lease.credit = [0.0] * len(lease.credit)
        if items:
            self._spawn(self._refunds, self._refund_unused(Reservation(bs.group, items)))

    async def _refund_unused(self, reservation: Reservation) -> None:
        try:
            await self.inner.refund(reservation)
        except DependencyError as exc:
            # Charged and never used: the budget is short by this credit until it leaves the
            # window (the safe side).
            metrics.STORE_ERRORS.inc()
            log.warning("quota: unused lease credit not refunded: %s", exc)
            return
        self._returned.inc()

    # ------------------------------------------------------------------------------ the rest

    async def refund(self, reservation: Reservation) -> None:
        await self.inner.refund(reservation)

    async def usage(self, group: str, key: str, window_s: int, now: float) -> float:
        return await self.inner.usage(group, key, window_s, now)

    async def ping(self) -> None:
        await self.inner.ping()

    async def settle(self, timeout_s: float | None = None) -> None:
        """Wait until the leases on their way and the refunds in flight are done."""
        for tasks in (self._ahead, self._refunds):
            if tasks:
                await asyncio.wait(set(tasks), timeout=timeout_s)

    async def close(self) -> None:
        """Refund every lease's unused credit, then close the Redis store."""
        if self._ahead:  # let leases on their way arrive, so their credit is refunded too
            _, late = await asyncio.wait(set(self._ahead), timeout=self.inner.timeout_s * 2)
            for task in late:
                task.cancel()
        for bs in self._sets.values():
            if bs.granting is not None and not bs.granting.done():
                bs.granting.set_result(None)  # an ahead lease cancelled before it started
            bs.granting = None
            for lease in (bs.current, bs.next):
                if lease is not None:
                    self._give_back(bs, lease)
            bs.current = bs.next = None
        self._sets.clear()
        await self.settle(self.inner.timeout_s * 2)
        await self.inner.close()
