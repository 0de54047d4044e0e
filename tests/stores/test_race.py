"""No race over-admits: 2,000 concurrent consumes against a budget that admits exactly N.

Each consume draws 3 units from its tenant's bucket (4 tenants) and from the shared parent bucket
(limit 3 * N). Exactly N must be admitted, and Redis must hold exactly 3 * N in the parent bucket
and 3 * N across the tenant buckets (all or none: a refused call leaves no trace anywhere).
Runs against a private redis-server and a 3-master Redis Cluster, from several asyncio clients in
one process and from 4 OS processes with their own connections.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gatekeeper.stores.quota import Bucket, bucket_key
from gatekeeper.stores.redis import RedisQuotaStore
from tests.stores.race import bucket_redis_key, fire, redis_bucket_total, run_processes

TOTAL = 2000
N = 137
AMOUNT = 3.0
TENANTS = ("t0", "t1", "t2", "t3")
WINDOW = 3600


def buckets_for(i: int, group: str) -> list[Bucket]:
    t = TENANTS[i % len(TENANTS)]
    return [
        Bucket("tenant-daily", bucket_key("tenant-daily", "tenant", t), AMOUNT, 1e9, WINDOW),
        Bucket(
            "parent", bucket_key("parent", "ultimate_parent", group), AMOUNT, AMOUNT * N, WINDOW
        ),
    ]


def assert_redis_holds_exactly(url: str, group: str, admitted: int) -> None:
    parent = redis_bucket_total(
        url, bucket_redis_key(group, "parent", "ultimate_parent", group, WINDOW)
    )
    tenants = sum(
        redis_bucket_total(url, bucket_redis_key(group, "tenant-daily", "tenant", t, WINDOW))
        for t in TENANTS
    )
    assert parent == AMOUNT * admitted
    assert tenants == AMOUNT * admitted


async def _race_in_process(url: str, group: str, clients: int, batch: bool) -> int:
    stores = [RedisQuotaStore.from_url(url, timeout_s=5.0, batch=batch) for _ in range(clients)]
    now = time.time()
    try:
        results = await fire(
            TOTAL // clients * clients,
            lambda i: stores[i % clients].consume(group, buckets_for(i, group), now),
        )
    finally:
        for s in stores:
            await s.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    return sum(1 for r in results if r.admitted)


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("where", ["redis", "cluster"])
async def test_asyncio_clients_admit_exactly_n(
    where: str, batch: bool, request: pytest.FixtureRequest, group: str
) -> None:
    url = (
        request.getfixturevalue("cluster_url")
        if where == "cluster"
        else request.getfixturevalue("private_redis").url
    )
    admitted = await _race_in_process(url, group, clients=8, batch=batch)
    assert admitted == N
    assert_redis_holds_exactly(url, group, admitted)


def _process_main(url: str, group: str, offset: int, count: int, start: Any, out: Any) -> None:
    async def main() -> tuple[int, int]:
        # two clients per process, each with its own connection pool
        stores = [RedisQuotaStore.from_url(url, timeout_s=5.0) for _ in range(2)]
        await asyncio.gather(*(s.ping() for s in stores))
        start.wait()
        now = time.time()
        try:
            results = await fire(
                count,
                lambda i: stores[i % 2].consume(group, buckets_for(offset + i, group), now),
            )
        finally:
            for s in stores:
                await s.close()
        errors = sum(1 for r in results if isinstance(r, BaseException))
        return sum(1 for r in results if not isinstance(r, BaseException) and r.admitted), errors

    out.put(asyncio.run(main()))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["redis", "cluster"])
def test_four_processes_admit_exactly_n(
    where: str, request: pytest.FixtureRequest, group: str
) -> None:
    url = (
        request.getfixturevalue("cluster_url")
        if where == "cluster"
        else request.getfixturevalue("private_redis").url
    )
    per = TOTAL // 4
    outcomes = run_processes(_process_main, [(url, group, k * per, per) for k in range(4)])
    assert sum(e for _, e in outcomes) == 0
    admitted = sum(a for a, _ in outcomes)
    assert admitted == N
    assert_redis_holds_exactly(url, group, admitted)


async def test_the_race_harness_catches_a_non_atomic_store(private_redis: Any, group: str) -> None:
    """Control: read-then-write in two round trips (what the Lua script avoids) over-admits under
    the same harness, so the exact-N assertions above can fail."""
    import redis.asyncio as aredis

    pool = aredis.BlockingConnectionPool.from_url(private_redis.url, max_connections=64)
    client = aredis.Redis.from_pool(pool)
    key = bucket_redis_key(group, "parent", "ultimate_parent", group, WINDOW)

    async def naive(i: int) -> bool:
        used = sum(float(v) for v in (await client.hgetall(key)).values())
        if used + AMOUNT > AMOUNT * N:
            return False
        await client.hincrbyfloat(key, "0", AMOUNT)
        return True

    try:
        results = await fire(TOTAL, naive)
    finally:
        await client.aclose()
    assert sum(results) > N
