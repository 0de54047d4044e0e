"""A 60-second fixed-rate load test: open loop, mixed allowed and denied
requests, ``workers: 2``, the shipped policy packs, the demo registry and a private Redis.

Passes when: every scheduled request got an answer, zero 5xx (no fault is injected here), every
answer is the one the policy gives its kind, the decision records in the audit files number exactly
the answers, the upstream saw exactly the 200s, and Redis holds, for the one quota in play, exactly
the TPP-hours of the allowed requests according to their audit records.

``GK_LOAD_SECONDS`` and ``GK_LOAD_RATE`` override the duration (60) and the rate (150 req/s).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gatekeeper.demo import DATA as DEMO_DATA
from gatekeeper.demo import _policies_dir
from tests.e2e.gate import Upstream
from tests.faults.harness import (
    Keys,
    Result,
    assert_accounted,
    audit_files,
    audit_lines,
    decisions,
    gate_config,
    outcomes,
    start_gate,
    submit,
)
from tests.stores.race import bucket_redis_key, redis_bucket_total
from tests.support import RedisServer

SECONDS = float(os.environ.get("GK_LOAD_SECONDS", "60"))
RATE = float(os.environ.get("GK_LOAD_RATE", "150"))
MONTH = 30 * 86400
FJORD = ("fjord-research", "fjord-cloud")  # the affiliates drawing on fjord-group's quota

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SECONDS + 120)]

# (entity or None for no token, client IP, GPUs, hours, expected status): the demo's cast.
KINDS: tuple[tuple[str | None, str, int, float, int], ...] = (
    ("frontier-labs", "8.8.8.8", 8, 2, 200),  # US entity
    ("fjord-research", "84.208.20.110", 1, 1, 200),  # foreign tenant, parent's TPP-hours quota
    ("fjord-cloud", "193.75.75.75", 2, 0.5, 200),  # its sister affiliate, same quota
    ("acme-sg", "165.21.83.88", 8, 4, 451),  # D:5 parent, no licence
    ("bluewave-my", "103.11.143.1", 8, 4, 451),  # 50%-rule affiliate of a listed party
    ("frontier-labs", "114.114.114.114", 8, 2, 451),  # used from a D:5 country
    ("ghost-co", "8.8.8.8", 8, 2, 403),  # KYC incomplete
    (None, "8.8.8.8", 8, 2, 401),  # no token
)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    up = Upstream(tmp_path)
    try:
        yield up
    finally:
        up.stop()


async def test_fixed_rate_load_two_workers(
    tmp_path: Path, upstream: Upstream, redis_server: RedisServer
) -> None:
    keys = Keys()
    policies = _policies_dir()
    cfg: dict[str, Any] = gate_config(
        tmp_path,
        upstream=upstream.url,
        entities=DEMO_DATA / "entities.yaml",
        policies=[policies / "us-remote-access.yaml", policies / "cn-dual-use-japan.yaml"],
        jwks_file=keys.write(tmp_path / "jwks.json"),
        store=redis_server.url,
        workers=2,
        geoip={"country_db": "builtin", "anonymous_db": str(DEMO_DATA / "anonymous-ip.mmdb")},
    )
    cfg["policy"]["gpus"] = str(policies / "gpus.yaml")
    gate = start_gate(tmp_path, cfg)
    tokens = {k[0]: keys.token(k[0]) for k in KINDS if k[0]}
    total = int(SECONDS * RATE)
    results: list[Result | None] = [None] * total
    lateness: list[float] = []
    try:
        # A new connection per request so the kernel spreads them over both workers.
        conn = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=conn) as s:

            async def one(i: int) -> None:
                entity, ip, gpus, hours, _ = KINDS[i % len(KINDS)]
                token = tokens[entity] if entity else None
                results[i] = await submit(s, gate.url, token, ip=ip, gpus=gpus, hours=hours)

            tasks = []
            t0 = time.monotonic()
            for i in range(total):
                due = t0 + i / RATE  # open loop: the schedule never waits for answers
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                lateness.append(max(0.0, time.monotonic() - due))
                tasks.append(asyncio.ensure_future(one(i)))
            await asyncio.gather(*tasks)
            elapsed = time.monotonic() - t0
        done = [r for r in results if r is not None]
        lat = sorted((r.done - r.sent) * 1000 for r in done)
        statuses = Counter(r.status for r in done)
        print(
            f"\nload: {total} requests at {RATE:g}/s in {elapsed:.1f}s, {dict(statuses)}; "
            f"latency p50 {statistics.median(lat):.1f} ms, p99 {lat[int(len(lat) * 0.99)]:.1f} "
            f"ms, max {lat[-1]:.1f} ms; send lag p99 {sorted(lateness)[int(total * 0.99)] * 1000:.1f} ms"
        )
        assert len(done) == total
        errors = [r.error for r in done if r.status == 0]
        assert not errors, f"{len(errors)} requests got no answer, e.g. {errors[:3]}"
        assert not [r for r in done if r.status >= 500], statuses
        wrong = [
            (i, KINDS[i % len(KINDS)], r.status, r.problem)
            for i, r in enumerate(done)
            if r.status != KINDS[i % len(KINDS)][4]
        ]
        assert not wrong, f"{len(wrong)} unexpected answers, e.g. {wrong[:3]}"
    finally:
        gate.stop()
    paths = audit_files(cfg)
    lines = audit_lines(paths)
    recs = assert_accounted(upstream, paths, done)
    assert len(recs) == len(done), "one decision record per answer"
    per_worker = [len(decisions(audit_lines([p]))) for p in paths]
    assert all(per_worker) and sum(per_worker) == total, per_worker
    assert len(upstream.seen()) == statuses[200]
    refunded = {i for i, o in outcomes(lines).items() if o["quota"]["refunded"]}
    assert not refunded  # the upstream answered 200 every time
    admitted = [
        r for r in recs.values()
        if r["decision"]["action"] == "allow" and (r.get("quota") or {}).get("name") == "foreign-monthly"
    ]  # fmt: skip
    assert len(admitted) == sum(1 for i in range(total) if KINDS[i % len(KINDS)][0] in FJORD)
    tpp_hours = sum(r["compute"]["tpp_hours"] for r in admitted)
    key = bucket_redis_key(
        "fjord-group", "foreign-monthly", "ultimate_parent", "fjord-group", MONTH
    )
    held = redis_bucket_total(redis_server.url, key)
    print(
        f"quota: {len(admitted)} admitted, {tpp_hours:.1f} TPP-hours in the audit, {held:.1f} in Redis"
    )
    assert held == pytest.approx(tpp_hours, rel=1e-9)
