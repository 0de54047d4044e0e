"""Quota decisions per second and added latency (p50/p99), against a private redis-server.

Runs every configuration several times in one process and prints medians, plus the ratio of each
configuration's throughput to the baseline measured in the same run (Redis, unbatched).

    .venv/bin/python bench/quota_bench.py [--runs 5] [--ops 4000] [--no-uvloop]

Configurations: the memory store; Redis with one EVALSHA per call ("unbatched"); Redis with the
coalescing queue ("batched"); the full quota stage on batched Redis. Each in two shapes:
sequential (one caller) and 64 concurrent callers. Every call checks and consumes two buckets
(tenant + ultimate parent) that never run out, i.e. the steady-state admit path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gatekeeper.context import (
    ComputeRequest,
    Decision,
    OwnershipProfile,
    Principal,
    QuotaDef,
    RequestContext,
    RequestInfo,
)
from gatekeeper.stages.quota import QuotaStage
from gatekeeper.stores.memory import MemoryQuotaStore
from gatekeeper.stores.quota import Bucket, QuotaStore, bucket_key
from gatekeeper.stores.redis import RedisQuotaStore
from tests.support import RedisServer

CONCURRENCY = 64
QUOTAS = {
    "tenant-daily": QuotaDef("tenant-daily", "gpu_hours", 1e15, 86400, "tenant"),
    "parent-monthly": QuotaDef("parent-monthly", "tpp_hours", 1e15, 30 * 86400, "ultimate_parent"),
}


def buckets(i: int) -> list[Bucket]:
    t = f"tenant-{i % 16}"
    return [
        Bucket("tenant-daily", bucket_key("tenant-daily", "tenant", t), 1.0, 1e15, 86400),
        Bucket("parent-monthly", bucket_key("parent-monthly", "ultimate_parent", "g"), 1.0, 1e15,
               30 * 86400),
    ]  # fmt: skip


def ctx_for(i: int) -> RequestContext:
    ctx = RequestContext(
        decision_id=str(i),
        request=RequestInfo(route="r", method="POST", path="/", client_ip="192.0.2.1"),
        headers={},
    )
    ctx.principal = Principal(subject="u", issuer="i", tenant=f"tenant-{i % 16}", entity="e")
    ctx.ownership = OwnershipProfile(id="e", known=True, ultimate_parent="g")
    ctx.compute = ComputeRequest("H100-SXM", 8, 1, 8, 1.0, 1.0, "3A090.a", True)
    ctx.decision = Decision("allow", "r", [], quotas=("tenant-daily", "parent-monthly"))
    return ctx


async def measure(
    call: Callable[[int], Awaitable[object]], ops: int, conc: int
) -> tuple[float, float, float]:
    lat: list[float] = []
    counter = iter(range(ops))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await call(i)
            lat.append(time.perf_counter() - t0)

    for i in range(200):  # warm-up: connections, script cache
        await call(i)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    elapsed = time.perf_counter() - t0
    lat.sort()
    return ops / elapsed, lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6


async def run_config(name: str, url: str, ops: int, conc: int) -> tuple[float, float, float]:
    store: QuotaStore
    if name == "memory":
        store = MemoryQuotaStore()
    else:
        store = RedisQuotaStore.from_url(url, timeout_s=2.0, batch=name != "redis-unbatched")
    now = time.time()
    try:
        if name == "stage+redis-batched":
            stage = QuotaStage(store, QUOTAS, timeout_s=2.0)
            return await measure(lambda i: stage.run(ctx_for(i)), ops, conc)
        return await measure(lambda i: store.consume("g", buckets(i), now), ops, conc)
    finally:
        await store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ops", type=int, default=4000)
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
    configs = ["redis-unbatched", "redis-batched", "stage+redis-batched", "memory"]
    server = RedisServer().start()
    try:
        results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for _ in range(args.runs):  # interleave configs so drift hits all of them alike
            for conc in (1, CONCURRENCY):
                for name in configs:
                    r = asyncio.run(run_config(name, server.url, args.ops, conc))
                    results.setdefault((name, conc), []).append(r)
    finally:
        server.stop()
    loop = "uvloop" if not args.no_uvloop else "asyncio"
    print(
        f"quota_bench: {args.runs} runs x {args.ops} consumes, 2 buckets each, {loop}, "
        f"medians; ratio = throughput / redis-unbatched at the same concurrency"
    )
    print(
        f"{'config':<22}{'callers':>8}{'decisions/s':>14}{'p50 us':>10}{'p99 us':>10}{'ratio':>8}"
    )
    for conc in (1, CONCURRENCY):
        base = statistics.median(r[0] for r in results[("redis-unbatched", conc)])
        for name in configs:
            rs = results[(name, conc)]
            tput = statistics.median(r[0] for r in rs)
            p50 = statistics.median(r[1] for r in rs)
            p99 = statistics.median(r[2] for r in rs)
            print(f"{name:<22}{conc:>8}{tput:>14,.0f}{p50:>10,.0f}{p99:>10,.0f}{tput / base:>8.2f}")


if __name__ == "__main__":
    main()
