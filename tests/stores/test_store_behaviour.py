"""Every store (memory, Redis, Redis unbatched, Redis Cluster) behaves identically.

Rolling-window expiry uses an injected clock (the ``now`` argument); the race tests live in
``test_race.py``.
"""

from __future__ import annotations

import random

import pytest

from gatekeeper.errors import DependencyError
from gatekeeper.stores import window as W
from gatekeeper.stores.memory import MemoryQuotaStore
from gatekeeper.stores.quota import Bucket, ConsumeResult, QuotaStore, bucket_key
from gatekeeper.stores.redis import RedisQuotaStore
from tests.stores.conftest import make_store

T0 = 1_700_000_000.0


def tenant(q: str, t: str, amount: float, limit: float, window_s: int = 3600) -> Bucket:
    return Bucket(q, bucket_key(q, "tenant", t), amount, limit, window_s)


def parent(q: str, p: str, amount: float, limit: float, window_s: int = 3600) -> Bucket:
    return Bucket(q, bucket_key(q, "ultimate_parent", p), amount, limit, window_s)


async def test_admits_up_to_the_limit_exactly(store: QuotaStore, group: str) -> None:
    b = [tenant("q", "t1", 2.5, 10.0)]
    results = [await store.consume(group, b, T0 + i) for i in range(5)]
    assert [r.admitted for r in results] == [True, True, True, True, False]
    assert [r.remaining["q"] for r in results] == [7.5, 5.0, 2.5, 0.0, 0.0]
    assert results[4].exhausted == "q"
    assert await store.usage(group, b[0].key, 3600, T0 + 5) == 10.0


async def test_all_or_none_across_tenant_and_parent(store: QuotaStore, group: str) -> None:
    t1 = tenant("tenant-daily", "t1", 4.0, 100.0)
    p = parent("parent-monthly", group, 4.0, 10.0, 86400)
    assert (await store.consume(group, [t1, p], T0)).admitted
    assert (await store.consume(group, [t1, p], T0 + 1)).admitted
    r = await store.consume(group, [t1, p], T0 + 2)  # parent has 2 left: refuse both
    assert not r.admitted and r.exhausted == "parent-monthly" and r.reservation is None
    assert r.remaining == {"tenant-daily": 92.0, "parent-monthly": 2.0}
    # the tenant bucket was not touched by the refused call
    assert await store.usage(group, t1.key, 3600, T0 + 3) == 8.0
    assert await store.usage(group, p.key, 86400, T0 + 3) == 8.0
    # a request that fits the parent still passes, and is charged to both
    small = [
        tenant("tenant-daily", "t1", 2.0, 100.0),
        parent("parent-monthly", group, 2.0, 10.0, 86400),
    ]
    assert (await store.consume(group, small, T0 + 3)).admitted
    assert await store.usage(group, t1.key, 3600, T0 + 4) == 10.0


async def test_refusal_names_the_longest_wait(store: QuotaStore, group: str) -> None:
    short = tenant("short", "t", 1.0, 1.0, 60)
    long = parent("long", group, 1.0, 1.0, 86400)
    assert (await store.consume(group, [short, long], T0)).admitted
    r = await store.consume(group, [short, long], T0 + 1)
    assert not r.admitted and r.exhausted == "long"
    assert 86400 - 1 <= r.retry_after_s <= 86400 * (1 + 1 / W.SUB_BUCKETS)  # type: ignore[operator]


async def test_rolling_window_expiry(store: QuotaStore, group: str) -> None:
    window = 600  # 60 sub-buckets of 10 s
    b = tenant("q", "t", 1.0, 3.0, window)
    for i in range(3):
        assert (await store.consume(group, [b], T0 + i * 100)).admitted  # at 0, 100, 200 s
    r = await store.consume(group, [b], T0 + 300)
    assert not r.admitted
    # the oldest amount (t=0, sub-bucket [0, 10)) stops counting when that sub-bucket is S+1 old
    expect_free = T0 + (W.SUB_BUCKETS + 1) * 10
    assert r.retry_after_s == int(expect_free - (T0 + 300))
    assert not (await store.consume(group, [b], expect_free - 0.001)).admitted
    assert (await store.consume(group, [b], expect_free)).admitted
    # never over-admits within any true window: usage at t counts everything in [t - W, t]
    assert await store.usage(group, b.key, window, expect_free) == 3.0
    assert await store.usage(group, b.key, window, T0 + 10_000) == 0.0


async def test_oversized_request_waits_a_window(store: QuotaStore, group: str) -> None:
    r = await store.consume(group, [tenant("q", "t", 11.0, 10.0)], T0)
    assert not r.admitted and r.retry_after_s == 3600


async def test_zero_limit_refuses_everything_but_zero(store: QuotaStore, group: str) -> None:
    assert not (await store.consume(group, [tenant("q", "t", 1.0, 0.0)], T0)).admitted
    assert (await store.consume(group, [tenant("q", "t", 0.0, 0.0)], T0)).admitted


async def test_refund_gives_back_the_same_sub_bucket(store: QuotaStore, group: str) -> None:
    b = tenant("q", "t", 3.0, 6.0, 60)
    r1 = await store.consume(group, [b], T0)
    r2 = await store.consume(group, [b], T0 + 30)  # a later sub-bucket
    assert r1.reservation and r2.reservation
    assert r1.reservation.items[0].slot != r2.reservation.items[0].slot
    await store.refund(r1.reservation)
    assert await store.usage(group, b.key, 60, T0 + 31) == 3.0
    # refunding an expired sub-bucket is a no-op, never a negative count
    await store.refund(r2.reservation)
    await store.refund(r2.reservation)  # the store does not dedupe: the stage does; floor is 0
    assert await store.usage(group, b.key, 60, T0 + 31) == 0.0
    await store.refund(r1.reservation)
    assert await store.usage(group, b.key, 60, T0 + 31) == 0.0


async def test_hostile_group_and_ids_stay_apart(store: QuotaStore, group: str) -> None:
    a = tenant("q", "x}:y", 1.0, 1.0)
    b = tenant("q", "x", 1.0, 1.0)
    assert (await store.consume(group + "}{", [a], T0)).admitted
    assert (await store.consume(group + "}{", [b], T0)).admitted
    assert (await store.consume(group, [a], T0)).admitted
    assert not (await store.consume(group + "}{", [a], T0)).admitted


def test_bucket_rejects_bad_amounts() -> None:
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError):
            tenant("q", "t", bad, 1.0)
    with pytest.raises(ValueError):
        tenant("q", "t", 1.0, float("nan"))
    with pytest.raises(ValueError):
        tenant("q", "t", 1.0, 1.0, 0)


def _script(seed: int, group: str) -> list[tuple[str, float, list[Bucket]]]:
    rng = random.Random(seed)
    ops: list[tuple[str, float, list[Bucket]]] = []
    t = T0
    for _ in range(300):
        t += rng.choice([0.0, 0.5, 3.0, 17.0, 45.0])
        buckets = [
            tenant("td", rng.choice(["a", "b"]), rng.choice([0.25, 1.0, 2.5, 7.75]), 20.0, 120),
            parent("pm", group, rng.choice([0.5, 1.0, 4.0]), 30.0, 600),
        ][: rng.choice([1, 2])]
        ops.append(("refund" if rng.random() < 0.2 else "consume", t, buckets))
    return ops


@pytest.mark.parametrize("kind", ["redis", "redis-unbatched", "cluster"])
async def test_redis_matches_memory_step_by_step(
    kind: str, request: pytest.FixtureRequest, group: str
) -> None:
    from tests.stores.conftest import store_url

    redis_store = make_store(kind, store_url(kind, request))
    memory = MemoryQuotaStore()
    last: dict[int, ConsumeResult] = {}
    try:
        for i, (op, t, buckets) in enumerate(_script(7, group)):
            if op == "refund" and last:
                key = max(last)
                res = last.pop(key)
                assert res.reservation is not None
                await memory.refund(res.reservation)
                await redis_store.refund(res.reservation)
                continue
            m = await memory.consume(group, buckets, t)
            r = await redis_store.consume(group, buckets, t)
            assert m == r, f"step {i}"
            if m.admitted:
                last[i] = m
            for b in buckets:
                assert await memory.usage(group, b.key, b.window_s, t) == await redis_store.usage(
                    group, b.key, b.window_s, t
                )
    finally:
        await redis_store.close()


async def test_redis_errors_are_dependency_errors(group: str) -> None:
    from tests.support import free_port

    store = RedisQuotaStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.3)
    try:
        with pytest.raises(DependencyError) as e:
            await store.consume(group, [tenant("q", "t", 1.0, 1.0)], T0)
        assert e.value.reason == "store-unavailable" and e.value.status == 503
        with pytest.raises(DependencyError):
            await store.ping()
        with pytest.raises(DependencyError):
            await store.usage(group, "k", 60, T0)
    finally:
        await store.close()
