"""``audit tail``: human lines, filters, JSON, following a rotating file and a Redis stream."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.tail import format_record, tail
from gatekeeper.config import AuditConfig, AuditSinkConfig
from tests.audit.helpers import body, file_cfg, make_keys
from tests.support import RedisServer


async def _write(log: AuditLog, specs: list[tuple[str, str]]) -> list[dict]:
    return [await log.append(body(i, tenant=t, action=a)) for i, (t, a) in enumerate(specs)]


async def test_file_tail_filters_and_formats(tmp_path: Path) -> None:
    priv, _ = make_keys(tmp_path)
    path = tmp_path / "a.jsonl"
    log = AuditLog(file_cfg(path, signing_key=priv), replica="gk-0")
    await log.start()
    await _write(log, [("acme", "allow"), ("acme", "deny"), ("zeta", "deny")])
    await log.close()

    out = io.StringIO()
    await tail(str(path), follow=False, out=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # seals are not printed
    assert "allow" in lines[0] and "tenant=acme" in lines[0] and "-> 200" in lines[0]
    assert "POST slurm-submit /slurm/job/submit" in lines[0] and "d000000" in lines[0]

    out = io.StringIO()
    await tail(str(path), action="deny", tenant="acme", follow=False, out=out)
    assert out.getvalue().count("\n") == 1 and "d000001" in out.getvalue()

    out = io.StringIO()
    await tail(str(path), action="deny", as_json=True, follow=False, out=out)
    recs = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r["seq"] for r in recs] == [2, 3]


def test_format_is_safe_for_terminals() -> None:
    rec = {"ts": "2026-11-25T20:01:02.345678Z", "http": {"path": "/x\x1b[2J\x07"}, "seq": 1}
    line = format_record(rec)
    assert "\x1b" not in line and "\x07" not in line
    assert line.startswith("2026-11-25T20:01:02.345Z  error")


async def test_follow_file_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    out = io.StringIO()
    follower = asyncio.create_task(tail(str(path), out=out, poll_s=0.02))
    log = AuditLog(file_cfg(path, rotate_bytes=1500), replica="gk-0")
    await log.start()
    for i in range(12):
        await log.append(body(i))
        await asyncio.sleep(0.01)
    await log.close()
    for _ in range(100):
        if out.getvalue().count("\n") >= 12:
            break
        await asyncio.sleep(0.02)
    follower.cancel()
    ids = [line.split()[-1] for line in out.getvalue().splitlines()]
    assert ids == [f"d{i:06d}" for i in range(12)]


async def test_follow_redis_stream(redis_server: RedisServer) -> None:
    sink = AuditSinkConfig(type="redis_stream", url=redis_server.url, stream="gk:audit")
    log = AuditLog(AuditConfig(sinks=(sink,)), replica="gk-0")
    await log.start()
    await _write(log, [("acme", "allow")])
    out = io.StringIO()
    follower = asyncio.create_task(tail((redis_server.url, "gk:audit"), tenant="zeta", out=out))
    await _write(log, [("zeta", "deny"), ("acme", "deny"), ("zeta", "allow")])
    for _ in range(100):
        if out.getvalue().count("\n") >= 2:
            break
        await asyncio.sleep(0.02)
    follower.cancel()
    await log.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all("tenant=zeta" in x for x in lines)
    out = io.StringIO()
    await tail((redis_server.url, "gk:audit"), as_json=True, follow=False, out=out)
    assert [json.loads(x)["seq"] for x in out.getvalue().splitlines()] == [1, 2, 3, 4]
