"""``LeasedQuotaStore.consume_held`` answers exactly what ``consume`` would, or ``None``.

Two stores on the same Redis, one group each, take the same requests at the same instants: one
as the quota stage does (``consume_held``, else ``consume``), the other with ``consume`` alone.
Every answer and what Redis holds must be the same, through every lease state: none yet, a lease
that serves, one too small for the request (the next one takes over), an expired one, and the
limit reached.
"""

from __future__ import annotations

import time

from gatekeeper.stores.quota import Bucket, ConsumeResult, bucket_key
from gatekeeper.stores.redis import redis_key
from tests.stores.race import redis_bucket_total
from tests.stores.test_lease import leased
from tests.support import RedisServer

WINDOW = 3600
LIMIT = 200.0


def _buckets(amount: float) -> tuple[Bucket, ...]:
    return (
        Bucket("tenant-q", bucket_key("tenant-q", "tenant", "t1"), amount, LIMIT, WINDOW),
        Bucket(
            "parent-q", bucket_key("parent-q", "ultimate_parent", "p"), amount, 4 * LIMIT, WINDOW
        ),
    )


def _seen(r: ConsumeResult) -> tuple[object, ...]:
    items = () if r.reservation is None else tuple(r.reservation.items)
    return (r.admitted, r.remaining, r.retry_after_s, r.exhausted, items)


async def test_consume_held_is_consume_in_every_lease_state(
    private_redis: RedisServer, group: str
) -> None:
    url = private_redis.url
    staged, plain = leased(url, requests=4, margin=2), leased(url, requests=4, margin=2)
    small, large = _buckets(1.0), _buckets(3.0)
    # amounts and clock offsets: leases serve, run short (3.0 after 1.0s), expire (+6 s > ttl)
    steps = [(small, 0.0)] * 6 + [(large, 0.0)] * 3 + [(small, 6.0)] * 4 + [(large, 6.0)] * 80
    start = time.time()
    helds = 0
    try:
        for buckets, offset in steps:
            now = start + offset
            a = staged.consume_held(group + "-a", buckets, now)
            helds += a is not None
            if a is None:
                a = await staged.consume(group + "-a", buckets, now)
            b = await plain.consume(group + "-b", buckets, now)
            assert _seen(a) == _seen(b)
            await staged.settle()
            await plain.settle()
        assert helds > 0  # the held path was taken, and refusals came (the limit was reached)
        assert not b.admitted
    finally:
        await staged.close()
        await plain.close()
    for bucket in small:
        a_key = redis_key("gk", group + "-a", bucket.key, bucket.window_s)
        b_key = redis_key("gk", group + "-b", bucket.key, bucket.window_s)
        assert redis_bucket_total(url, a_key) == redis_bucket_total(url, b_key)
