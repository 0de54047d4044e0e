"""Redis stream sink against a private redis-server: records, seals, failure and recovery."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import redis

from gatekeeper import metrics
from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.verify import verify_files
from gatekeeper.config import AuditConfig, AuditSinkConfig
from gatekeeper.errors import DependencyError
from tests.audit.helpers import body, file_cfg, make_keys
from tests.support import RedisServer


def stream_cfg(
    server: RedisServer, *, required: bool = True, maxlen: int = 1000
) -> AuditSinkConfig:
    return AuditSinkConfig(type="redis_stream", url=server.url, stream="gk:audit", maxlen=maxlen,
                           required=required)  # fmt: skip


def entries(server: RedisServer) -> list[dict]:
    r = redis.Redis.from_url(server.url)
    try:
        return [json.loads(f[b"data"]) for _, f in r.xrange("gk:audit")]
    finally:
        r.close()


async def test_records_and_seals_reach_the_stream(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    priv, _ = make_keys(tmp_path)
    cfg = file_cfg(tmp_path / "a.jsonl", signing_key=priv, extra=(stream_cfg(redis_server),))
    log = AuditLog(cfg, replica="gk-0")
    await log.start()
    assert [s.kind for s in log.sinks] == ["file", "redis_stream"]
    recs = [await log.append(body(i)) for i in range(3)]
    await log.close()
    got = entries(redis_server)
    assert [e.get("type", "record") for e in got] == ["record", "seal"] * 3
    assert [e["hash"] for e in got[::2]] == [r["hash"] for r in recs]
    assert got[-1]["seq"] == 3 and got[-1]["sig"].startswith("ed25519:")


async def test_stream_is_capped(tmp_path: Path, redis_server: RedisServer) -> None:
    cfg = AuditConfig(sinks=(stream_cfg(redis_server, maxlen=10),))
    log = AuditLog(cfg, replica="gk-0")
    await log.start()
    for i in range(300):
        await log.append(body(i))
    await log.close()
    assert len(entries(redis_server)) < 300  # MAXLEN ~ trims whole macro nodes


async def test_required_stream_down_gives_503_then_recovers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(file_cfg(path, extra=(stream_cfg(redis_server),)), replica="gk-0")
    await log.start()
    await log.append(body(1))
    before = metrics.AUDIT_ERRORS.labels(sink="redis_stream")._value.get()
    redis_server.kill()
    with pytest.raises(DependencyError) as exc:
        await log.append(body(2))
    assert exc.value.reason == "audit-unavailable" and exc.value.status == 503
    assert not log.healthy()
    assert metrics.AUDIT_ERRORS.labels(sink="redis_stream")._value.get() == before + 1
    redis_server.start()
    rec = await log.append(body(3))
    # The failed record is not in the chain; seq 2 says that d000002 was refused.
    assert rec["seq"] == 3 and log.healthy()
    await log.close()
    report = verify_files([str(path)])
    assert report.ok and report.records == 3  # the file was cut back after the failed batch
    assert report.unforwarded == 1
    assert [e["seq"] for e in entries(redis_server)] == [2, 3]  # fresh server after the restart


async def test_optional_stream_down_is_counted_not_fatal(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(file_cfg(path, extra=(stream_cfg(redis_server, required=False),)),
                   replica="gk-0")  # fmt: skip
    await log.start()
    redis_server.kill()
    before = metrics.AUDIT_ERRORS.labels(sink="redis_stream")._value.get()
    rec = await log.append(body(1))
    assert rec["seq"] == 1 and log.healthy()
    assert metrics.AUDIT_ERRORS.labels(sink="redis_stream")._value.get() == before + 1
    await log.close()
    assert verify_files([str(path)]).records == 1


async def test_stream_only_chain_resumes_from_the_stream(redis_server: RedisServer) -> None:
    cfg = AuditConfig(sinks=(stream_cfg(redis_server),))
    for replica in ("gk-0", "gk-1", "gk-0"):
        log = AuditLog(cfg, replica=replica)
        await log.start()
        await log.append(body(1))
        await log.append(body(2))
        await log.close()
    got = entries(redis_server)
    gk0 = [e for e in got if e["replica"] == "gk-0"]
    assert [e["seq"] for e in gk0] == [1, 2, 3, 4]
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(gk0))
