"""The audit record (docs/reference.md): its fields, canonical JSON and the SHA-256 hash chain.

Canonical JSON is ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
encoded as UTF-8. orjson produces the same bytes for everything except floats below 1e-4 in
exponent form (``1e-05`` vs ``0.00001``) and integers beyond 64 bits, so it is the fast path and
the standard library is the fallback whenever orjson's output could differ. Non-finite floats
are not JSON: ``record_body`` never produces them and ``scrub`` turns them into ``null``.

The chain: ``hash = "sha256:" + hex(SHA-256(prev_hash_ascii || canonical(record without hash)))``
where ``prev_hash`` is the previous record's ``hash`` (``ZERO_HASH`` for the first record, seq 1).
``prev_hash`` has a fixed length, so the plain concatenation is unambiguous. Every line the gate
writes is exactly ``canonical(record) + "\\n"``; the verifier insists on that too, so a line with
duplicate keys or extra whitespace (which two JSON parsers could read differently) is caught.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from gatekeeper.context import ComputeRequest, OwnershipProfile, Principal, RequestContext
from gatekeeper.memo import remember

ZERO_HASH = "sha256:" + "0" * 64
RECORD_VERSION = 1

_DIGITS = frozenset(b"0123456789")


def _may_differ(out: bytes) -> bool:
    """Could orjson's bytes differ from the stdlib's? Only for small floats, which orjson writes
    as 0.00001 / 1.5e-7 where Python writes 1e-05 / 1.5e-07. A false positive (a string such as
    "3e-5") only costs the slow path. Plain substring search: memchr-fast, unlike a regex."""
    if b"0.0000" in out:
        return True
    i = out.find(b"e-")
    while i > 0:
        if out[i - 1] in _DIGITS:
            return True
        i = out.find(b"e-", i + 2)
    return False


def _stdlib(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def canonical(obj: Any, *, checked: bool = False) -> bytes:
    """Sorted keys, no spaces, UTF-8; byte-identical to the stdlib ``json.dumps`` form above.

    Raises ``ValueError``/``TypeError``/``UnicodeEncodeError`` for values JSON cannot carry
    (lone surrogates, non-string keys, non-finite floats on the fallback path); ``scrub`` first.
    ``checked``: the caller vouches that every float in ``obj`` is one orjson writes like the
    stdlib (a ``RecordBody`` plus strings and ints), so orjson's bytes need no ``_may_differ``.
    """
    try:
        out = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # ints beyond 64 bits, lone surrogates, odd types: let the stdlib decide
        return _stdlib(obj)
    if not checked and _may_differ(out):
        return _stdlib(obj)
    return out


def chain_hash(prev_hash: str, record_without_hash: dict[str, Any]) -> str:
    """``sha256:<hex>`` over the previous hash and the canonical record (see module docstring)."""
    h = hashlib.sha256(prev_hash.encode("ascii"))
    h.update(canonical(record_without_hash))
    return "sha256:" + h.hexdigest()


def scrub(obj: Any) -> Any:
    """A JSON-safe copy: lone surrogates replaced, non-finite floats to null, keys as strings."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace").decode("utf-8")
    if isinstance(obj, bool) or obj is None or isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(scrub(k)): scrub(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [scrub(v) for v in obj]
    return scrub(str(obj))


class RecordBody(dict[str, Any]):
    """What ``record_body`` usually returns: a ``dict`` whose floats have been checked.

    Each of its numbers is finite and written by orjson exactly as by the standard library (zero,
    or a magnitude of at least 1e-4); everything else in it is what the context's dataclasses
    declare (strings, bools, lists of strings). So ``AuditLog`` may take orjson's bytes without
    the ``_may_differ`` scan of the whole record. A body with an unusual number or with shadow
    results (free-form) is returned as a plain ``dict`` and goes through that scan.
    """

    __slots__ = ()


_SMALLEST = 1e-4  # below this magnitude Python writes 1e-05 where orjson writes 0.00001
_LARGEST = sys.float_info.max


def _plain(nums: Sequence[Any]) -> bool:
    """Would orjson write every float of ``nums`` as the stdlib does, and are they all finite?

    Only exact floats can differ (orjson refuses float subclasses, so those reach the stdlib
    anyway): zero and finite magnitudes from 1e-4 on are written alike. A plain loop: cheaper
    than a ``_num`` call per field, and far cheaper than scanning the whole record's bytes.
    """
    for v in nums:
        if v.__class__ is float and not (
            v == 0.0 or _SMALLEST <= v <= _LARGEST or -_LARGEST <= v <= -_SMALLEST
        ):
            return False
    return True


def _num(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# A record's ``compute`` and ``ownership`` by the identity of the fact they show, with whether
# their numbers are plain (``_plain``). Adapters and the registry hand out the same frozen
# object for the same submission or entity, so its part is built once and shared by the records
# that show it: held with the object (an id is never reused while it lives), read-only from then
# on (``_unchecked`` copies before it changes one), emptied at ``_PARTS_MAX`` entries.
_PARTS_MAX = 1024
_parts: dict[int, tuple[Any, dict[str, Any], bool]] = {}


def _compute_part(c: ComputeRequest) -> tuple[dict[str, Any], bool]:
    part = c.to_json()
    plain = _plain((c.gpus, c.hours, c.gpu_hours, c.tpp, c.tpp_hours))
    remember(_parts, id(c), (c, part, plain), 0, 0, _PARTS_MAX)
    return part, plain


def _ownership_part(o: OwnershipProfile) -> tuple[dict[str, Any], bool]:
    part = {
        "ultimate_parent": o.ultimate_parent,
        "parent_hq_country": o.parent_hq_country,
        "affiliated": o.affiliated,
        "listed_share": o.listed_share,
        "affiliated_flags": sorted(o.affiliated_flags) if o.affiliated_flags else [],
    }
    plain = _plain((o.listed_share,))
    remember(_parts, id(o), (o, part, plain), 0, 0, _PARTS_MAX)
    return part, plain


def _who(p: Principal) -> dict[str, Any]:
    """The principal as the record names it: no claims, so no token can reach the trail."""
    return {"subject": p.subject, "tenant": p.tenant, "entity": p.entity, "issuer": p.issuer}


def record_body(
    ctx: RequestContext, *, status: int | None, upstream_status: int | None, latency_ms: float
) -> dict[str, Any]:
    """One request's decision record (docs/reference.md), without v/seq/ts/replica/prev_hash/hash
    (``AuditLog`` adds them).

    Facts no stage set are ``null``. # SECURITY: tokens, claims and headers are never copied here;
    only the named principal fields are, so no bearer token can reach the audit trail.

    Usually a ``RecordBody`` (its numbers checked in one pass, see there); a plain ``dict`` with
    non-finite floats turned into ``null`` when a number is unusual.
    """
    req = ctx.request
    # The slots directly: cheaper than six ctx.maybe() calls per request.
    principal = ctx._principal
    ownership = ctx._ownership
    geo = ctx._geo
    compute = ctx._compute
    decision = ctx._decision
    quota = ctx._quota
    latency = round(latency_ms, 3)
    plain = True
    parts = _parts
    if ownership is None:
        owned = None
    else:
        hit = parts.get(id(ownership))
        if hit is not None and hit[0] is ownership:
            owned, plain = hit[1], hit[2]
        else:
            owned, plain = _ownership_part(ownership)
    if compute is None:
        measured = None
    else:
        hit = parts.get(id(compute))
        if hit is not None and hit[0] is compute:
            measured = hit[1]
            plain = plain and hit[2]
        else:
            measured, measured_plain = _compute_part(compute)
            plain = plain and measured_plain
    body = RecordBody(
        decision_id=ctx.decision_id,
        http={
            "method": req.method,
            # a dry run is recorded as the API server saw it: the same path, ?dryRun=All
            "path": req.path + "?dryRun=All" if req.dry_run else req.path,
            "route": req.route,
            "client_ip": req.client_ip,
            "status": status,
            "upstream_status": upstream_status,
            "latency_ms": latency,
        },
        principal=None if principal is None else _who(principal),
        ownership=owned,
        geo=None
        if geo is None
        else {"country": geo.country, "asn": geo.asn, "anonymous": geo.anonymous},
        compute=measured,
        decision=None
        if decision is None
        else {
            "action": decision.action,
            "rule": decision.rule,
            "reasons": list(decision.reasons),
            "enforced": decision.enforced,
            "policy_version": decision.policy_version,
            "data_version": decision.data_version,
            "shadow": list(decision.shadow),
            "license": decision.license,
        },
        quota=None
        if quota is None
        else {"name": quota.name, "consumed": quota.consumed, "remaining": quota.remaining},
    )
    # The other numbers of the body, for one check (status and asn are ints, checked all the
    # same; ownership's and compute's were checked with their parts). A shadow result is
    # free-form: a body with one is left to the check of the record's bytes.
    nums: list[Any] = [status, upstream_status, latency]
    if geo is not None:
        nums.append(geo.asn)
    if quota is not None:
        nums += (quota.consumed, quota.remaining)
    if plain and (decision is None or not decision.shadow) and _plain(nums):
        return body
    return _unchecked(body)


def outcome_body(
    decision_id: str, status: int, upstream_status: int | None, latency_ms: float, refunded: bool
) -> dict[str, Any]:
    """The outcome line of a forwarded request (its status, once the answer went out)."""
    latency = round(latency_ms, 3)
    body = RecordBody()  # filled key by key: cheaper than keyword arguments to a dict subclass
    body["type"] = "outcome"
    body["decision_id"] = decision_id
    body["http"] = {"status": status, "upstream_status": upstream_status, "latency_ms": latency}
    body["quota"] = {"refunded": refunded}
    # _plain((latency,)), inline: the one float of the line.
    if latency.__class__ is not float or (
        latency == 0.0 or _SMALLEST <= latency <= _LARGEST or -_LARGEST <= latency <= -_SMALLEST
    ):
        return body
    return _unchecked_outcome(body)


def _unchecked_outcome(body: RecordBody) -> dict[str, Any]:
    body["http"]["latency_ms"] = _num(body["http"]["latency_ms"])
    return dict(body)


def _unchecked(body: RecordBody) -> dict[str, Any]:
    """``body`` as a plain dict (the chain checks its bytes), non-finite floats made ``null``."""
    for fact, fields in _NUMBER_FIELDS:
        part = body[fact]
        if part is not None:
            part = body[fact] = dict(part)  # a shared part (``_parts``) is never changed
            for name in fields:
                part[name] = _num(part[name])
    return dict(body)


# The float fields of a body, which _unchecked passes through _num (as record_body always did).
_NUMBER_FIELDS = (
    ("http", ("latency_ms",)),
    ("ownership", ("listed_share",)),
    ("compute", ("gpus", "hours", "gpu_hours", "tpp", "tpp_hours")),
    ("quota", ("consumed", "remaining")),
)
