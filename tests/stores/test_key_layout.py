"""The Redis key layout is a contract (ARCHITECTURE principle 11): asserted here, key by key."""

from __future__ import annotations

import pytest
import redis

from gatekeeper.stores import window as W
from gatekeeper.stores.quota import Bucket, bucket_key, encode_part
from gatekeeper.stores.redis import RedisQuotaStore, redis_key
from tests.support import RedisServer


@pytest.mark.parametrize(
    ("group", "quota", "per", "ident", "window_s", "expected"),
    [
        ("acme-group", "foreign-monthly", "ultimate_parent", "acme-group", 2592000,
         "{gk:acme-group}:q:foreign-monthly:ultimate_parent:acme-group:2592000"),
        ("acme-group", "daily", "tenant", "org 42", 86400,
         "{gk:acme-group}:q:daily:tenant:org%2042:86400"),
        # hostile ids: braces, colons and percent signs are escaped, never interpreted
        ("a}b", "q", "tenant", "x:y{z}", 60, "{gk:a%7Db}:q:q:tenant:x%3Ay%7Bz%7D:60"),
        ("g", "q", "entity", "100%", 60, "{gk:g}:q:q:entity:100%25:60"),
        # unknown id / group: the shared "*" bucket, which no encoded id can equal
        ("", "q", "tenant", None, 60, "{gk:*}:q:q:tenant:*:60"),
        ("*", "q", "tenant", "*", 60, "{gk:%2A}:q:q:tenant:%2A:60"),
    ],
)  # fmt: skip
def test_key_layout(
    group: str, quota: str, per: str, ident: str | None, window_s: int, expected: str
) -> None:
    assert redis_key("gk", group, bucket_key(quota, per, ident), window_s) == expected


def test_licence_bucket_key() -> None:
    assert bucket_key("license", "license", "D1234567") == "license:license:D1234567"


def test_encoding_is_injective_on_separators() -> None:
    # two different (quota, per, id) triples must never share a key
    assert bucket_key("a:b", "tenant", "c") != bucket_key("a", "b:tenant", "c")
    assert encode_part(None) == "*" and encode_part("*") == "%2A"


async def test_keys_written_match_the_layout(private_redis: RedisServer) -> None:
    store = RedisQuotaStore.from_url(private_redis.url, prefix="gkt")
    now = 1_700_000_000.25
    b1 = Bucket("daily", bucket_key("daily", "tenant", "t:1"), 2.5, 10, 86400)
    b2 = Bucket("monthly", bucket_key("monthly", "ultimate_parent", "p{1}"), 2.5, 10, 2592000)
    try:
        r = await store.consume("p{1}", [b1, b2], now)
        assert r.admitted
    finally:
        await store.close()
    sync = redis.Redis.from_url(private_redis.url)
    try:
        keys = sorted(k.decode() for k in sync.scan_iter(match="{gkt:*"))
        assert keys == [
            "{gkt:p%7B1%7D}:q:daily:tenant:t%3A1:86400",
            "{gkt:p%7B1%7D}:q:monthly:ultimate_parent:p%7B1%7D:2592000",
        ]
        for key, window_s in zip(keys, (86400, 2592000), strict=True):
            width = W.width_ms(window_s)
            slot = int(now * 1000) // width
            assert sync.hgetall(key) == {str(slot).encode(): b"2.5"}
            ttl = sync.pttl(key)
            assert (W.SUB_BUCKETS + 2) * width - 5000 < ttl <= (W.SUB_BUCKETS + 2) * width
    finally:
        sync.close()


def test_one_group_one_cluster_slot() -> None:
    from redis.cluster import key_slot

    keys = [
        redis_key("gk", "acme}{x", bucket_key(q, per, i), w)
        for q, per, i, w in [
            ("a", "tenant", "t1", 60),
            ("b", "ultimate_parent", "acme}{x", 86400),
            ("license", "license", "D1", 315360000),
        ]
    ]
    assert len({key_slot(k.encode()) for k in keys}) == 1
