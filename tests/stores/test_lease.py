"""Quota leases (``stores/lease.py``) on a real redis-server: fewer round trips, never over-admitted.

Each test reads what Redis holds with its own synchronous client (``redis_bucket_total``), so the
figures are the store's, not the lease's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis

from gatekeeper import metrics
from gatekeeper.config import QuotaConfig, load_config
from gatekeeper.errors import ConfigError
from gatekeeper.stores import window as W
from gatekeeper.stores.factory import create_store
from gatekeeper.stores.lease import LeasedQuotaStore
from gatekeeper.stores.quota import Bucket, bucket_key
from gatekeeper.stores.redis import LEASE_END, RedisQuotaStore, redis_key
from tests.stores.conftest import counter
from tests.stores.race import fire, redis_bucket_total
from tests.support import RedisServer, await_until

WINDOW = 3600


def tenant(amount: float, limit: float, t: str = "t1", window_s: int = WINDOW) -> Bucket:
    return Bucket("tenant-q", bucket_key("tenant-q", "tenant", t), amount, limit, window_s)


def parent(amount: float, limit: float, p: str, window_s: int = WINDOW) -> Bucket:
    return Bucket("parent-q", bucket_key("parent-q", "ultimate_parent", p), amount, limit, window_s)


def leased(
    url: str,
    *,
    requests: int = 4,
    ttl_s: float = 5.0,
    margin: int = 2,
    max_requests: int = 0,
    timeout_s: float = 2.0,
) -> LeasedQuotaStore:
    inner = RedisQuotaStore.from_url(url, timeout_s=timeout_s)
    return LeasedQuotaStore(
        inner, requests=requests, ttl_s=ttl_s, margin=margin, max_requests=max_requests
    )


def held(url: str, group: str, b: Bucket) -> float:
    return float(redis_bucket_total(url, redis_key("gk", group, b.key, b.window_s)))


def evalsha_calls(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def lease_events(event: str) -> float:
    return counter(metrics.QUOTA_LEASES, event)


async def test_far_from_the_limit_one_lease_serves_k_requests(
    private_redis: RedisServer, group: str
) -> None:
    url = private_redis.url
    store = leased(url, requests=4)
    b = [tenant(2.0, 1000.0)]
    now = time.time()
    try:
        first = await store.consume(group, b, now)  # alone: learns the headroom
        assert first.admitted and held(url, group, b[0]) == 2.0
        calls = evalsha_calls(url)
        results = [await store.consume(group, b, now) for _ in range(4)]
        # one lease of 4 x 2.0 in one script call, then requests from the credit; half used, the
        # next lease goes out in the background
        assert evalsha_calls(url) == calls + 1
        assert held(url, group, b[0]) == 2.0 + 8.0
        await store.settle()
        assert evalsha_calls(url) == calls + 2
        assert held(url, group, b[0]) == 2.0 + 8.0 + 8.0
        assert all(r.admitted for r in results)
        # one process sees exact figures: the limit minus what requests used
        assert [r.remaining["tenant-q"] for r in [first, *results]] == [998, 996, 994, 992, 990]
        nxt = await store.consume(group, b, now)  # from the lease taken ahead: no call
        assert nxt.admitted and nxt.remaining["tenant-q"] == 988
        assert evalsha_calls(url) == calls + 2
    finally:
        await store.close()
    # closing refunds the three unused requests' worth: Redis holds exactly what was admitted
    assert held(url, group, b[0]) == 6 * 2.0


@pytest.mark.parametrize("max_requests", [0, 64])  # fixed leases; leases that grow
async def test_exact_at_the_limit_with_leases(
    private_redis: RedisServer, group: str, max_requests: int
) -> None:
    url = private_redis.url
    store = leased(url, requests=4, margin=2, max_requests=max_requests)
    b = [tenant(1.0, 100.0), parent(1.0, 100.0, group)]
    now = time.time()
    try:
        results = [await store.consume(group, b, now) for _ in range(110)]
    finally:
        await store.close()
    admitted = [r.admitted for r in results]
    # every one of the 100 units was handed out, in order, and nothing after
    assert admitted == [True] * 100 + [False] * 10
    assert [r.remaining["tenant-q"] for r in results[:100]] == [99 - i for i in range(100)]
    assert results[100].exhausted in ("tenant-q", "parent-q")
    assert held(url, group, b[0]) == 100.0 and held(url, group, b[1]) == 100.0


async def test_many_processes_never_over_admit(private_redis: RedisServer, group: str) -> None:
    """Three gate processes' stores (two leasing, one not) race for one parent's budget."""
    url = private_redis.url
    # 1,200 calls at once: on a busy machine the last ones wait longer than a usual timeout
    slow_ok = 10.0
    stores = [
        leased(url, requests=8, margin=2, timeout_s=slow_ok),
        leased(url, requests=3, margin=1, timeout_s=slow_ok),
    ]
    plain = RedisQuotaStore.from_url(url, timeout_s=slow_ok)
    limit = 500.0
    now = time.time()
    try:

        async def one(i: int) -> bool:
            b = [tenant(1.0, 10_000.0, t=f"t{i % 7}"), parent(1.0, limit, group)]
            store = (stores[0], stores[1], plain)[i % 3]
            return (await store.consume(group, b, now)).admitted

        # warm up: every store learns the headroom, then a burst far larger than the budget
        warm = [await one(i) for i in range(21)]
        burst = await fire(1200, one)
    finally:
        for s in stores:
            await s.close()
        await plain.close()
    assert all(isinstance(x, bool) for x in burst)
    admitted = sum(warm) + sum(bool(x) for x in burst)
    assert admitted <= limit
    # unused credit went back: Redis holds exactly the admitted requests, no more, no less
    assert held(url, group, parent(1.0, limit, group)) == admitted
    # ... and leases can only have cost the credit parked at the end: one lease per tenant, store
    assert admitted >= limit - 7 * (8 + 3)


async def test_leases_used_up_fast_grow_up_to_the_max(
    private_redis: RedisServer, group: str
) -> None:
    url = private_redis.url
    # A lease counts as used up fast within ttl_s / 16: a long ttl keeps a stalled process from
    # deciding the sizes (nothing here waits for a lease to expire).
    fixed = leased(url, requests=4, ttl_s=30.0)
    growing = leased(url, requests=4, ttl_s=30.0, max_requests=32)
    calls: dict[str, int] = {}
    try:
        for name, store in (("fixed", fixed), ("growing", growing)):
            b = [tenant(1.0, 1e6, t=name)]
            now = time.time()
            before = evalsha_calls(url)
            results = [await store.consume(group, b, now) for _ in range(400)]
            await store.settle()
            calls[name] = evalsha_calls(url) - before
            assert all(r.admitted for r in results)
            # the lease in use now is of the largest size: Redis holds 400 plus two leases' worth
            assert held(url, group, b[0]) <= 400 + 2 * (32 if name == "growing" else 4)
    finally:
        await fixed.close()
        await growing.close()
    assert calls["fixed"] >= 100  # one script call per 4 requests
    assert calls["growing"] <= 25  # 4, 8, 16, then 32 requests per call
    for name in calls:  # closing gave the unused credit back: exactly what was admitted
        assert held(url, group, tenant(1.0, 1e6, t=name)) == 400


async def test_a_lease_that_expires_half_unused_makes_the_next_one_smaller(
    private_redis: RedisServer, group: str
) -> None:
    url = private_redis.url
    # "Used up fast" is within ttl_s / 16 (0.15 s here): the ttl is long enough that a stalled
    # process does not stop the growth, short enough to wait for.
    store = leased(url, requests=4, ttl_s=2.4, max_requests=64)
    b = [tenant(1.0, 1e6)]
    try:
        for _ in range(300):  # used up fast: the leases grow to 64
            await store.consume(group, b, time.time())
        await store.settle()
        grown = held(url, group, b[0]) - 300  # the two leases held now
        assert grown >= 64
        # both expire; the one taken ahead was never used: 64 -> 32; their credit goes back
        await await_until(lambda: held(url, group, b[0]) == 300)
        await store.settle()
        await store.consume(group, b, time.time())  # a new lease (the next one not yet taken)
        assert held(url, group, b[0]) - 300 == 32
    finally:
        await store.close()
    assert held(url, group, b[0]) == 301


async def test_unused_credit_goes_back_when_the_lease_expires(
    private_redis: RedisServer, group: str
) -> None:
    url = private_redis.url
    store = leased(url, requests=10, ttl_s=0.3)
    b = [tenant(1.0, 1000.0)]
    returned = lease_events("returned")
    try:
        await store.consume(group, b, time.time())
        await store.consume(group, b, time.time())  # takes a lease of 10, uses 1, leases ahead
        await store.settle()
        assert held(url, group, b[0]) == 1.0 + 10.0 + 10.0
        # both leases expire and their 9 + 10 unused requests' worth goes back
        await await_until(lambda: held(url, group, b[0]) == 2.0)
        assert lease_events("returned") == returned + 2
    finally:
        await store.close()


async def test_a_lease_is_booked_at_its_expiry_and_not_used_after_it(
    private_redis: RedisServer, group: str
) -> None:
    """Booked in the sub-bucket of its end, a lease stays counted a full window after its last use."""
    url = private_redis.url
    ttl = 3.0
    store = leased(url, requests=4, ttl_s=ttl)
    window = 60  # sub-buckets of one second: the lease's end lies three sub-buckets ahead
    b = [tenant(1.0, 1000.0, window_s=window)]
    now = 1_800_000_000.5
    width = W.width_ms(window)
    key = redis_key("gk", group, b[0].key, window)
    try:
        await store.consume(group, b, now)
        lease = await store.consume(group, b, now)
        await store.settle()  # the lease taken ahead lands too
        raw = redis.Redis.from_url(url).hgetall(key)
        # the bucket remembers when the latest lease on it ends (advice for refusals)
        assert int(raw.pop(LEASE_END)) == W.now_ms(now + ttl)
        fields = {int(k): float(v) for k, v in raw.items()}
        cur, end = W.slot_of(W.now_ms(now), width), W.slot_of(W.now_ms(now + ttl), width)
        assert fields == {cur: 1.0, end: 4.0 + 4.0}
        assert lease.reservation is not None and lease.reservation.items[0].slot == end
        # at their end neither lease's credit is handed out: a fresh lease, booked at its own end
        late = await store.consume(group, b, now + ttl)
        assert late.admitted and late.reservation is not None
        assert late.reservation.items[0].slot == W.slot_of(W.now_ms(now + 2 * ttl), width)
    finally:
        await store.close()


async def test_a_refusal_while_credit_is_leased_advises_a_retry_when_the_lease_ends(
    private_redis: RedisServer, group: str
) -> None:
    """Process A leases credit it does not use; process B, refused, is told to retry when A's
    lease ends (its unused credit returns then), not when the window frees budget an hour later.
    """
    url = private_redis.url
    ttl = 20.0  # A's leases must not expire (in real time) while B is refused
    a = leased(url, requests=10, ttl_s=ttl, margin=1)
    b = leased(url, requests=10, ttl_s=ttl, margin=1)
    plain = RedisQuotaStore.from_url(url, timeout_s=2.0)
    bucket = [tenant(1.0, 30.0)]
    now = time.time()
    closed = False
    try:
        await a.consume(group, bucket, now)  # alone: learns the headroom
        await a.consume(group, bucket, now)  # a lease of 10, and one more taken ahead
        await a.settle()
        assert held(url, group, bucket[0]) == 21.0
        results = [await b.consume(group, bucket, now) for _ in range(10)]
        # B is too close to the limit to lease: each request goes to Redis, 9 fit
        assert [r.admitted for r in results] == [True] * 9 + [False]
        assert results[-1].retry_after_s == ttl  # A's leases end then
        await a.close()  # A's 19 unused requests' worth goes back ...
        closed = True
        assert held(url, group, bucket[0]) == 30.0 - 19.0
        later = now + ttl + 1  # ... and after the leases' end, the window decides the advice
        fits = [await plain.consume(group, bucket, later) for _ in range(20)]
        assert [r.admitted for r in fits] == [True] * 19 + [False]
        assert fits[-1].retry_after_s is not None and fits[-1].retry_after_s > WINDOW - 60
    finally:
        if not closed:
            await a.close()
        await b.close()
        await plain.close()


async def test_refunding_a_leased_request_gives_back_exactly_once(
    private_redis: RedisServer, group: str
) -> None:
    url = private_redis.url
    store = leased(url, requests=4)
    b = [tenant(3.0, 1000.0)]
    now = time.time()
    try:
        await store.consume(group, b, now)
        r = await store.consume(group, b, now)  # from a fresh lease; the next one goes out ahead
        await store.settle()
        assert r.reservation is not None and held(url, group, b[0]) == 3.0 + 12.0 + 12.0
        await store.refund(r.reservation)  # the upstream failed
        assert held(url, group, b[0]) == 3.0 + 9.0 + 12.0
    finally:
        await store.close()  # the unused 3 + 4 requests' worth goes back too
    assert held(url, group, b[0]) == 3.0


async def test_a_refund_after_the_lease_expired_is_still_exact(
    private_redis: RedisServer, group: str
) -> None:
    url = private_redis.url
    store = leased(url, requests=4, ttl_s=0.2)
    b = [tenant(1.0, 1000.0)]
    try:
        await store.consume(group, b, time.time())
        r = await store.consume(group, b, time.time())
        await asyncio.sleep(0.5)  # both leases expire; their unused credit goes back
        await store.settle()
        assert held(url, group, b[0]) == 2.0
        assert r.reservation is not None
        await store.refund(r.reservation)  # the upstream failed after all
        assert held(url, group, b[0]) == 1.0
    finally:
        await store.close()
    assert held(url, group, b[0]) == 1.0


async def test_concurrent_requests_share_one_lease(private_redis: RedisServer, group: str) -> None:
    url = private_redis.url
    store = leased(url, requests=16)
    b = [tenant(1.0, 100_000.0)]
    now = time.time()
    try:
        await store.consume(group, b, now)
        calls = evalsha_calls(url)
        results = await fire(64, lambda i: store.consume(group, b, now))
        assert all(r.admitted for r in results)
        # 64 requests from leases of 16: four script calls (one or two more taken ahead), not 64
        assert 4 <= evalsha_calls(url) - calls <= 6
    finally:
        await store.close()
    assert held(url, group, b[0]) == 65.0


async def test_near_the_limit_every_request_goes_to_redis(
    private_redis: RedisServer, group: str
) -> None:
    url = private_redis.url
    store = leased(url, requests=4, margin=8)  # a lease needs room for 8 x 4 = 32 requests
    b = [tenant(1.0, 40.0)]
    now = time.time()
    try:
        calls = evalsha_calls(url)
        results = [await store.consume(group, b, now) for _ in range(12)]
        assert all(r.admitted for r in results)
        # 1 alone (39 left), a lease (35 left), the next one ahead (31 left), then one call per
        # request: below 32 no lease is taken
        assert evalsha_calls(url) - calls == 1 + 1 + 1 + 3
        assert held(url, group, b[0]) == 12.0
        before = evalsha_calls(url)
        for _ in range(5):
            await store.consume(group, b, now)
        assert evalsha_calls(url) - before == 5
    finally:
        await store.close()
    assert held(url, group, b[0]) == 17.0


async def test_a_lost_store_costs_unused_credit_but_no_crash(group: str) -> None:
    server = RedisServer().start()
    store = leased(server.url, requests=8, ttl_s=0.2)
    b = [tenant(1.0, 1000.0)]
    errors = counter(metrics.STORE_ERRORS)
    try:
        await store.consume(group, b, time.time())
        assert (await store.consume(group, b, time.time())).admitted
        server.stop()
        # credit already charged is still handed out: no over-admission is possible
        assert (await store.consume(group, b, time.time())).admitted
        # the lease expires; its refund fails and is counted
        await await_until(lambda: counter(metrics.STORE_ERRORS) > errors)
    finally:
        await asyncio.wait_for(store.close(), 10)
        server.stop()


async def test_configuration() -> None:
    assert QuotaConfig().lease_requests == 16
    store = create_store(QuotaConfig(store="redis://127.0.0.1:1/0"))
    off = create_store(QuotaConfig(store="redis://127.0.0.1:1/0", lease_requests=0))
    try:
        assert isinstance(store, LeasedQuotaStore) and store.requests == 16
        assert store.max_requests == QuotaConfig().lease_requests_max == 256
        assert isinstance(off, RedisQuotaStore)
        assert not isinstance(create_store(QuotaConfig()), LeasedQuotaStore)  # memory: no lease
        with pytest.raises(ValueError):
            LeasedQuotaStore(off, requests=0, ttl_s=1)
    finally:
        await store.close()
        await off.close()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lease_requests", "-1", "between 0 and 10000"),
        ("lease_requests", "1000000000", "between 0 and 10000"),
        ("lease_requests", "1.5", "must be an integer"),
        ("lease_requests_max", "-1", "between 0 and 100000"),
        ("lease_requests_max", "many", "quota.lease_requests_max"),
        ("lease_ttl_s", "0", "between 0.01 and 60"),
        ("lease_ttl_s", "yes", "quota.lease_ttl_s"),
    ],
)
def test_bad_lease_settings_are_config_errors(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(f"quota:\n  store: redis://127.0.0.1:6390/0\n  {key}: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert message in str(err.value)
