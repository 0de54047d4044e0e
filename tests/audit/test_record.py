"""Canonical JSON, the chain hash and the record body (docs/reference.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gatekeeper.audit.record import ZERO_HASH, canonical, chain_hash, record_body, scrub
from gatekeeper.context import RequestContext, RequestInfo
from tests.audit.helpers import SECRET_TOKEN, full_ctx


def stdlib(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_canonical_is_byte_identical_to_stdlib(obj: Any) -> None:
    assert canonical(obj) == stdlib(obj)


def test_canonical_small_and_large_floats_take_the_stdlib_form() -> None:
    for value in (1e-05, 1.5e-07, 0.00001234, 1e16, 1e-300, 2**65, -0.0):
        assert canonical({"x": value}) == stdlib({"x": value})


def test_canonical_rejects_what_json_cannot_carry() -> None:
    for bad in ({"x": "\ud800"}, {"x": float("nan")} | {"y": 1e-7}):
        try:
            canonical(bad)
        except (TypeError, ValueError):
            continue
        raise AssertionError(f"{bad!r} was accepted")


def test_scrub_makes_anything_canonicalisable() -> None:
    dirty = {"s": "a\ud800b", "f": float("inf"), 1: {2, 3}, "t": (1, 2), "o": object}
    clean = scrub(dirty)
    canonical(clean)  # must not raise
    assert clean["s"] == "a?b" and clean["f"] is None and clean["t"] == [1, 2]


def test_chain_hash_is_sha256_of_prev_hash_and_canonical_record() -> None:
    rec = {"v": 1, "seq": 1, "prev_hash": ZERO_HASH, "b": "ü", "a": [1, 2.5]}
    want = hashlib.sha256(ZERO_HASH.encode() + stdlib(rec)).hexdigest()
    assert chain_hash(ZERO_HASH, rec) == "sha256:" + want
    # any change to the record or to the previous hash changes the result
    assert chain_hash(ZERO_HASH, {**rec, "b": "u"}) != chain_hash(ZERO_HASH, rec)
    assert chain_hash("sha256:" + "1" * 64, rec) != chain_hash(ZERO_HASH, rec)


def test_record_body_has_the_contract_fields_and_no_secrets() -> None:
    body = record_body(full_ctx(), status=451, upstream_status=None, latency_ms=1.23456)
    assert set(body) == {"decision_id", "http", "principal", "ownership", "geo", "compute",
                         "decision", "quota"}  # fmt: skip
    assert body["http"] == {"method": "POST", "path": "/slurm/v0.0.41/job/submit",
                            "route": "slurm-submit", "client_ip": "203.0.113.7", "status": 451,
                            "upstream_status": None, "latency_ms": 1.235}  # fmt: skip
    assert body["principal"] == {"subject": "alice", "tenant": "acme", "entity": "acme-sg",
                                 "issuer": "https://idp.example.com/"}  # fmt: skip
    assert body["ownership"] == {"ultimate_parent": "acme-group", "parent_hq_country": "CN",
                                 "affiliated": False, "listed_share": 0.0,
                                 "affiliated_flags": []}  # fmt: skip
    assert body["geo"] == {"country": "SG", "asn": 7473, "anonymous": False}
    assert body["compute"]["tpp_hours"] == 6079488.0 and body["compute"]["eccn"] == "3A090.a"
    assert body["decision"]["action"] == "require_license"
    assert body["decision"]["rule"] == "d5-headquarters"
    assert body["decision"]["enforced"] is True
    assert body["quota"] == {"name": "foreign-monthly", "consumed": 0.0, "remaining": 1.0e8}
    text = canonical(body).decode()
    assert SECRET_TOKEN not in text and "Bearer" not in text and "Authorization" not in text


def test_record_body_of_an_early_failure_has_nulls() -> None:
    ctx = RequestContext(
        decision_id="d1",
        request=RequestInfo(route="r", method="GET", path="/x", client_ip="::1"),
        headers=CIMultiDictProxy(CIMultiDict({"Authorization": "Bearer " + SECRET_TOKEN})),
    )
    body = record_body(ctx, status=401, upstream_status=None, latency_ms=float("nan"))
    for fact in ("principal", "ownership", "geo", "compute", "decision", "quota"):
        assert body[fact] is None
    assert body["http"]["latency_ms"] is None
    assert SECRET_TOKEN not in canonical(body).decode()


def test_record_body_shares_no_part_a_record_could_change() -> None:
    """The parts built once per fact object (compute, ownership) are the same bytes on every
    record, and a body with unusual numbers leaves the shared part as it was."""
    ctx = full_ctx()
    first = canonical(record_body(ctx, status=200, upstream_status=None, latency_ms=1.0))
    assert canonical(record_body(ctx, status=200, upstream_status=None, latency_ms=1.0)) == first
    ctx.compute = replace(ctx.compute, hours=float("nan"), gpus=1e-5)
    ctx.ownership = replace(ctx.ownership, listed_share=float("inf"))
    for _ in range(2):
        body = record_body(ctx, status=200, upstream_status=None, latency_ms=1.0)
        assert body["compute"]["hours"] is None and body["compute"]["gpus"] == 1e-5
        assert body["ownership"]["listed_share"] is None
        assert canonical(body) == stdlib(body)
    again = record_body(ctx, status=200, upstream_status=None, latency_ms=1.0)
    assert again["compute"] is not body["compute"]  # each unusual body has its own copy
