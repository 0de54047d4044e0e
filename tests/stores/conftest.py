"""Fixtures for the quota store tests: one private redis-server and one 3-master cluster per session.

Servers are session-scoped (a cluster takes seconds to form); every test uses fresh group names,
so tests never see each other's buckets.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import Counter

from gatekeeper.stores.lease import LeasedQuotaStore
from gatekeeper.stores.memory import MemoryQuotaStore
from gatekeeper.stores.quota import QuotaStore
from gatekeeper.stores.redis import RedisQuotaStore
from tests.support import RedisServer, redis_cluster

# "leased": the Redis store behind quota leases (stores/lease.py), leasing 4 requests at a time
# once 8 fit, so the behaviour tests run it both far from and near its limits.
STORE_KINDS = ("memory", "redis", "redis-unbatched", "cluster", "leased")


def counter(c: Counter, *labels: str) -> float:
    """A counter's value for ``labels`` (in label-name order), read through its public samples."""
    for metric in c.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and tuple(sample.labels.values()) == labels:
                return float(sample.value)
    return 0.0


@pytest.fixture(scope="session")
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    nodes = redis_cluster(3)
    try:
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)
    finally:
        for n in nodes:
            n.stop()


def store_url(kind: str, request: pytest.FixtureRequest) -> str | None:
    if kind == "memory":
        return None
    if kind == "cluster":
        return str(request.getfixturevalue("cluster_url"))
    return str(request.getfixturevalue("private_redis").url)


def make_store(kind: str, url: str | None, *, timeout_s: float = 2.0) -> QuotaStore:
    if kind == "memory" or url is None:
        return MemoryQuotaStore()
    if kind == "leased":
        inner = RedisQuotaStore.from_url(url, timeout_s=timeout_s)
        return LeasedQuotaStore(inner, requests=4, ttl_s=5.0, margin=2)
    return RedisQuotaStore.from_url(url, timeout_s=timeout_s, batch=kind != "redis-unbatched")


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[QuotaStore]:
    kind = request.param
    s = make_store(kind, store_url(kind, request))
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def group() -> str:
    return f"grp-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["memory", "redis", "cluster", "leased"])
async def any_store(request: pytest.FixtureRequest) -> AsyncIterator[QuotaStore]:
    """One store of every kind the quota stage runs on, closed after the test."""
    s = make_store(request.param, store_url(request.param, request))
    try:
        yield s
    finally:
        await s.close()
