"""``audit tail``: human lines, filters, JSON, following a rotating file and a Redis stream."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

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
    for _ in range(1500):  # up to 30 s on a busy machine
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
    for _ in range(1500):  # up to 30 s on a busy machine
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


async def test_refused_requests_and_chain_breaks_are_lines_of_their_own(tmp_path: Path) -> None:
    """A failed commit's requests show as ``unforwarded``; a new chain's first record as a
    ``chain-break`` (both can be filtered by that action)."""
    from gatekeeper.audit.filesink import DiskOps, FileSink
    from gatekeeper.errors import DependencyError

    class FullOnce(DiskOps):
        """Full exactly when the batch holding d000001 is written."""

        def write(self, fd: int, data: memoryview) -> int:
            if b'"decision_id":"d000001"' in bytes(data):
                raise OSError(28, "No space left on device")
            return super().write(fd, data)

    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"v":1,"seq":1,"hash":"x","prev_hash":"y"}\n')  # not a chain: moved aside
    log = AuditLog(file_cfg(path), replica="gk-0", sinks=[FileSink(str(path), ops=FullOnce())])
    await log.start()
    while log.seq < 1:  # the chain-break record goes first, in a commit of its own
        await asyncio.sleep(0.01)
    with pytest.raises(DependencyError):
        await log.append(body(1))
    await log.append(body(2))
    await log.close()
    out = io.StringIO()
    await tail(str(path), follow=False, out=out)
    lines = out.getvalue().splitlines()
    assert "chain-break" in lines[0] and "previous chain moved to a.jsonl.broken-" in lines[0]
    assert "verified up to seq 0" in lines[0]
    unforwarded = [line for line in lines if "unforwarded" in line]
    assert len(unforwarded) == 1 and "d000001" in unforwarded[0]
    assert "1 request(s) answered 503, not forwarded, records not kept" in unforwarded[0]
    assert "d000002" in lines[-1] and "allow" in lines[-1]
    out = io.StringIO()
    await tail(str(path), action="unforwarded", follow=False, out=out)
    assert out.getvalue().count("\n") == 1
    injected = {"type": "commit-failed", "ts": "t", "unforwarded": ["\x1b[2Jx"],
                "unforwarded_count": 1, "detail": "d", "outcomes_lost_count": 0}  # fmt: skip
    assert "\x1b" not in format_record(injected)
