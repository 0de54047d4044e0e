"""The chain's fast paths (checked bodies, the DEL hole) write exactly what the plain path would."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.record import ZERO_HASH, RecordBody, outcome_body, record_body
from gatekeeper.audit.verify import verify_files
from tests.audit.helpers import body, file_cfg, full_ctx, read_lines


def stdlib(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def check_lines(lines: list[bytes]) -> list[dict[str, Any]]:
    """Every line is the stdlib canonical form and every hash recomputes with the stdlib."""
    head = ZERO_HASH
    out = []
    for raw in lines:
        obj = json.loads(raw)
        assert raw == stdlib(obj) + b"\n"
        assert obj["prev_hash"] == head
        unhashed = stdlib({k: v for k, v in obj.items() if k != "hash"})
        head = "sha256:" + hashlib.sha256(head.encode() + unhashed).hexdigest()
        assert obj["hash"] == head
        out.append(obj)
    return out


def test_record_body_checks_its_numbers() -> None:
    ctx = full_ctx()
    assert type(record_body(ctx, status=200, upstream_status=200, latency_ms=1.5)) is RecordBody
    # a small float (orjson writes 0.00001, the stdlib 1e-05) or a NaN: a plain dict, scanned later
    ctx.ownership = replace(ctx.ownership, listed_share=1e-05)
    small = record_body(ctx, status=200, upstream_status=200, latency_ms=1.5)
    assert type(small) is dict and small["ownership"]["listed_share"] == 1e-05
    ctx = full_ctx()
    ctx.compute = replace(ctx.compute, tpp=float("inf"))
    inf = record_body(ctx, status=200, upstream_status=200, latency_ms=float("nan"))
    assert type(inf) is dict
    assert inf["compute"]["tpp"] is None and inf["http"]["latency_ms"] is None
    # shadow results are free-form: never vouched for
    ctx = full_ctx()
    ctx.decision.shadow = [{"policy": "p", "score": 1e-7}]
    assert type(record_body(ctx, status=200, upstream_status=200, latency_ms=1.5)) is dict


async def test_every_path_writes_canonical_lines_that_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(file_cfg(path), replica="gk-0")
    await log.start()
    ctx = full_ctx()
    small = full_ctx()
    small.quota = replace(small.quota, consumed=3e-06)
    shadow = full_ctx()
    shadow.decision.shadow = [{"policy": "p", "score": 1e-7, "hash": "\x7f"}]
    bodies: list[dict[str, Any]] = [
        record_body(ctx, status=200, upstream_status=200, latency_ms=1.25),
        record_body(small, status=None, upstream_status=None, latency_ms=0.00002),
        record_body(shadow, status=451, upstream_status=None, latency_ms=2.0),
        body(1),
        {**body(2), "note": "DEL \x7f in a string"},  # after the hole
        {**body(5), "aaa": "\x7f"},  # before the hole
        {**body(3), "nested": {"hash": "\x7f", "x": 1}},  # a member that looks like the hole
        {**body(4), "lone": "\ud800", "nan": float("nan")},  # scrubbed
        {"type": "outcome", "decision_id": "d", "http": {"status": 200, "latency_ms": 1e-05}},
    ]
    for b in bodies:
        await log.append(b)
    log.append_nowait({"type": "outcome", "decision_id": "e", "quota": {"refunded": False}})
    await log.close()
    objs = check_lines(read_lines(path))
    assert [o["seq"] for o in objs] == list(range(1, 11))
    assert objs[4]["note"] == "DEL \x7f in a string" and objs[6]["nested"]["hash"] == "\x7f"
    assert objs[1]["quota"]["consumed"] == 3e-06 and objs[7]["nan"] is None
    assert objs[5]["aaa"] == "\x7f"
    report = verify_files([str(path)])
    assert report.ok and report.records == 10


async def test_a_checked_body_becomes_the_returned_record(tmp_path: Path) -> None:
    log = AuditLog(file_cfg(tmp_path / "audit.jsonl"), replica="gk-0")
    await log.start()
    b = record_body(full_ctx(), status=200, upstream_status=200, latency_ms=1.0)
    rec = await log.append(b)
    plain = await log.append(body(1))
    await log.close()
    assert rec is b and rec["seq"] == 1 and rec["hash"].startswith("sha256:")
    assert plain["prev_hash"] == rec["hash"]
    assert [json.loads(x) for x in read_lines(tmp_path / "audit.jsonl")] == [rec, plain]


async def test_outcome_lines_are_checked_and_canonical(tmp_path: Path) -> None:
    plain = outcome_body("d1", 200, 200, 1.23456, False)
    assert type(plain) is RecordBody
    assert plain == {
        "type": "outcome",
        "decision_id": "d1",
        "http": {"status": 200, "upstream_status": 200, "latency_ms": 1.235},
        "quota": {"refunded": False},
    }
    # 0.00001 ms rounds to 0.0 (safe); a tiny non-zero latency and a NaN take the checked path
    tiny = outcome_body("d2", 502, None, 0.0004, True)
    assert type(tiny) is RecordBody and tiny["http"]["latency_ms"] == 0.0
    nan = outcome_body("d3", 502, None, float("nan"), True)
    assert type(nan) is dict and nan["http"]["latency_ms"] is None
    path = tmp_path / "audit.jsonl"
    log = AuditLog(file_cfg(path), replica="gk-0")
    await log.start()
    for b in (plain, tiny, nan, outcome_body("d4", 200, 200, 0.00051, False)):
        log.append_nowait(b)
    await log.close()
    lines = check_lines(read_lines(path))
    assert [x["http"]["latency_ms"] for x in lines] == [1.235, 0.0, None, 0.001]
    assert verify_files([str(path)]).ok
