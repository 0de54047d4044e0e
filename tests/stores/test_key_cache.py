"""The key-part caches (``stores/quota.py``) give exactly what uncached encoding gives, and stay
bounded whatever ids clients send."""

from __future__ import annotations

from urllib.parse import quote

from gatekeeper.memo import MAX_ENTRIES
from gatekeeper.stores import quota as Q
from gatekeeper.stores.quota import bucket_key, encode_part

IDS = ["acme", "org 42", "x:y{z}", "100%", "*", "", "ümlaut/ü", "a" * 300, "tenant-3", "~._-"]


def test_cached_encoding_equals_quote_on_every_call() -> None:
    for _ in range(3):  # first call fills the cache, later calls read it
        for i in IDS:
            assert encode_part(i) == quote(i, safe="")
            for per in ("tenant", "ultimate_parent"):
                expected = f"{quote('q:1', safe='')}:{per}:{quote(i, safe='')}"
                assert bucket_key("q:1", per, i) == expected
    assert encode_part(None) == "*"
    assert bucket_key("q", "tenant", None) == "q:tenant:*"


def test_caches_are_bounded_and_skip_long_ids() -> None:
    for n in range(MAX_ENTRIES * 2 + 10):
        assert encode_part(f"fresh-{n}") == f"fresh-{n}"
        assert bucket_key("q", "tenant", f"fresh-{n}") == f"q:tenant:fresh-{n}"
    assert len(Q._encoded) <= MAX_ENTRIES
    assert len(Q._bucket_keys) <= MAX_ENTRIES
    long_id = "L" * 1000
    assert encode_part(long_id) == long_id
    assert long_id not in Q._encoded
