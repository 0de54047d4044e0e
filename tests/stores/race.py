"""Reusable race-test helpers (also meant for the full-gate race test with ``gatekeeper serve``).

* ``fire(n, call)``: start ``n`` coroutines at once (behind one gate) and gather their results.
* ``run_processes(target, args_list)``: run ``target(*args, start_event)`` in separate spawned OS
  processes that all wait on one start event, return what each put on its queue.
* ``redis_bucket_total(url, key)``: the amount Redis holds in one bucket hash (all sub-buckets),
  read with a fresh synchronous client; works for ``redis://`` and ``redis+cluster://`` URLs.
* ``bucket_redis_key(...)``: the key a quota bucket lives under (the documented layout).

A full-gate test can: start N ``gatekeeper serve`` processes on one Redis, ``fire`` 2,000 HTTP
requests across them, count 2xx vs 429, and compare ``redis_bucket_total`` with admitted * amount.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from gatekeeper.stores.quota import bucket_key
from gatekeeper.stores.redis import LEASE_END, redis_key


async def fire(n: int, call: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Run ``call(i)`` for i in range(n) concurrently, all released at the same instant.

    Exceptions are returned in place of results (``gather(return_exceptions=True)``).
    """
    gate = asyncio.Event()

    async def one(i: int) -> Any:
        await gate.wait()
        return await call(i)

    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    await asyncio.sleep(0)  # let every task reach the gate
    gate.set()
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def run_processes(
    target: Callable[..., None], args_list: Sequence[tuple[Any, ...]], timeout: float = 60.0
) -> list[Any]:
    """Run ``target(*args, start, results)`` in one spawned process per args tuple.

    Every process should prepare (connect, build its calls), then ``start.wait()``, then put one
    picklable result on ``results``. Returns the results (in completion order).
    """
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    results: Any = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, start, results)) for a in args_list]
    for p in procs:
        p.start()
    try:
        start.set()
        out = [results.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return out


def bucket_redis_key(
    group: str, quota: str, per: str, ident: str | None, window_s: int, prefix: str = "gk"
) -> str:
    return redis_key(prefix, group, bucket_key(quota, per, ident), window_s)


def _sync_client(url: str) -> redis.Redis | RedisCluster:
    if url.startswith("redis+cluster://"):
        hosts = url.split("://", 1)[1].split(",")
        nodes = [ClusterNode(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in hosts]
        return RedisCluster(startup_nodes=nodes)
    return redis.Redis.from_url(url)


def redis_bucket_total(url: str, key: str) -> float:
    """Sum of every sub-bucket Redis holds for ``key`` (expired ones included: the raw truth)."""
    client = _sync_client(url)
    try:
        raw: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
        return sum(float(v) for k, v in raw.items() if k != LEASE_END)
    finally:
        client.close()
