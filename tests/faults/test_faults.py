"""Faults with real processes: each one gives its documented status, nothing is
forwarded without a decision and an audit record, and the gate recovers without a restart.

Redis killed and restarted (quota store) is in ``tests/race/test_gate_race.py``; kill -9 and disk
full of the gate itself are in ``test_audit_faults.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tests.e2e.gate import Gate, Upstream
from tests.faults.harness import (
    CN_IP,
    Keys,
    Result,
    assert_accounted,
    audit_files,
    audit_lines,
    decisions,
    gate_config,
    metric,
    outcomes,
    start_gate,
    submit,
    wait_for,
    write_entities,
    write_policy,
)
from tests.identity.idp import FakeIdP
from tests.stores.race import bucket_redis_key, redis_bucket_total
from tests.support import RedisServer, repo_root, wait_port

pytestmark = pytest.mark.timeout(120)

ENTITIES: list[dict[str, Any]] = [
    {"id": "lab", "name": "Lab Inc.", "kind": "company", "country": "US", "hq_country": "US"},
]
ALLOW_RULES: list[dict[str, Any]] = [
    {"id": "from-cn", "when": {"geo.country": "CN"}, "action": "deny"},
    {"id": "known", "when": {"entity.known": True}, "action": "allow", "quota": "tenant-requests"},
]
QUOTAS = {"tenant-requests": {"unit": "requests", "limit": 1000, "window": "1h", "per": "tenant"}}


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    up = Upstream(tmp_path)
    try:
        yield up
    finally:
        up.stop()


def _gate(tmp: Path, upstream: Upstream, keys: Keys, *, name: str = "gatekeeper",
          rules: list[dict[str, Any]] | None = None, **cfg: Any) -> Gate:  # fmt: skip
    if "jwks_url" not in cfg:
        cfg["jwks_file"] = keys.write(tmp / "jwks.json")
    config = gate_config(
        tmp,
        upstream=upstream.url,
        entities=write_entities(tmp / "entities.yaml", ENTITIES),
        policies=cfg.pop("policies", None)
        or [write_policy(tmp / "policy.yaml", rules or ALLOW_RULES, QUOTAS)],
        **cfg,
    )
    return start_gate(tmp, config, name=name)


def _audit(gate: Gate) -> list[Path]:
    return audit_files(gate.config)


def _restart_upstream(up: Upstream) -> None:
    """A new upstream process on the same port and log (the gate keeps its configured URL)."""
    up.proc = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.upstream_server", "--port", str(up.port),
         "--log", str(up.log)],
        cwd=repo_root(),
    )  # fmt: skip
    wait_port(up.port)


# ----------------------------------------------------------------------- upstream mid-stream


async def test_upstream_killed_mid_stream(
    tmp_path: Path, upstream: Upstream, redis_server: RedisServer
) -> None:
    """Client sees a truncated body; the reservation is refunded; the outcome line says so."""
    keys = Keys()
    route = {"name": "download", "match": {"path_prefix": "/download", "methods": ["GET"]},
             "upstream": upstream.url, "adapter": "generic", "gpu_model": "H100-SXM",
             "generic": {"gpus_header": "X-Test-Gpus"}}  # fmt: skip
    gate = _gate(tmp_path, upstream, keys, store=redis_server.url, extra_routes=[route])
    headers = {"Authorization": f"Bearer {keys.token('lab')}", "X-Test-Gpus": "1",
               "X-Forwarded-For": "8.8.8.8"}  # fmt: skip
    key = bucket_redis_key("lab", "tenant-requests", "tenant", "lab", 3600)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(gate.url + "/download?size=100000", headers=headers) as r:
                assert r.status == 200 and len(await r.read()) == 100000
            assert redis_bucket_total(redis_server.url, key) == 1
            size = 512 * 1024 * 1024
            got = 0
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(gate.url + f"/download?size={size}", headers=headers) as r:
                    assert r.status == 200 and r.content_length == size
                    cut_id = r.headers["X-Gatekeeper-Decision-Id"]
                    got += len(await r.content.readexactly(1 << 20))
                    upstream.proc.kill()  # SIGKILL mid-stream
                    upstream.proc.wait(5)
                    while chunk := await r.content.read(1 << 16):
                        got += len(chunk)
            assert 0 < got < size, "the client must see a truncated body, never a complete one"
            paths = _audit(gate)
            await wait_for(lambda: cut_id in outcomes(audit_lines(paths)), 30)
            outcome = outcomes(audit_lines(paths))[cut_id]
            assert outcome["quota"]["refunded"] is True
            assert outcome["http"]["status"] >= 500 and outcome["http"]["upstream_status"] is None
            assert redis_bucket_total(redis_server.url, key) == 1, "the cut request is refunded"
            # Upstream down: 502 (refunded too); back on the same port: 200, no gate restart.
            async with s.get(gate.url + "/download?size=10", headers=headers) as r:
                assert r.status == 502
                assert (await r.json(content_type=None))["type"].endswith("upstream-unreachable")
            assert redis_bucket_total(redis_server.url, key) == 1
            _restart_upstream(upstream)
            async with s.get(gate.url + "/download?size=10", headers=headers) as r:
                assert r.status == 200 and len(await r.read()) == 10
            assert redis_bucket_total(redis_server.url, key) == 2
        recs = decisions(audit_lines(_audit(gate)))
        assert recs[cut_id]["decision"]["action"] == "allow"
        assert len(recs) == 4
        assert_accounted(upstream, _audit(gate), [])
    finally:
        gate.stop()


# ------------------------------------------------------------------------------ JWKS down


async def test_jwks_endpoint_down(tmp_path: Path, upstream: Upstream) -> None:
    """Cached keys keep verifying; without a cache: 503 jwks-unavailable; back: recovers."""
    keys = Keys()
    idp = await FakeIdP(keys.jwks).start()
    fast = {"jwks_refresh_s": 0.5, "jwks_min_fetch_interval_s": 0.5, "jwks_timeout_s": 0.5}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cached = _gate(tmp_path / "a", upstream, keys, jwks_url=idp.url, issuer_extra=fast)
    fresh: Gate | None = None
    results: list[Result] = []
    token = keys.token("lab")
    try:
        async with aiohttp.ClientSession() as s:
            results.append(await submit(s, cached.url, token))
            assert results[-1].status == 200
            await idp.stop()
            await wait_for(
                lambda: metric(cached.admin_url, "gatekeeper_jwks_fetches_total", result="error"),
                10,
            )
            for _ in range(5):  # uncached tokens too: the keys, not a token cache, verify them
                results.append(await submit(s, cached.url, keys.token("lab", tenant="t2")))
            assert {r.status for r in results} == {200}

            fresh = _gate(tmp_path / "b", upstream, keys, jwks_url=idp.url, issuer_extra=fast)
            down = await submit(s, fresh.url, token)
            results.append(down)
            assert down.status == 503 and down.problem is not None
            assert down.problem["type"] == "urn:gatekeeper:problem:jwks-unavailable"
            assert down.headers["Content-Type"].startswith("application/problem+json")

            idp2 = FakeIdP(keys.jwks)
            idp2.port = idp.port  # the IdP comes back at the same address
            await idp2.start()
            t_back = time.monotonic()
            try:
                while True:
                    r = await submit(s, fresh.url, token)
                    results.append(r)
                    if r.status == 200 or time.monotonic() - t_back > 30:
                        break
                    assert r.status == 503
                    await asyncio.sleep(0.05)
                recovery = time.monotonic() - t_back
                assert r.status == 200, "no recovery after the IdP came back"
            finally:
                await idp2.stop()
        print(f"\njwks down: cached keys served, fresh gate 503 then recovered in {recovery:.2f}s")
        paths = _audit(cached) + _audit(fresh)
        recs = assert_accounted(upstream, paths, results)
        assert recs[down.decision_id]["http"]["status"] == 503  # type: ignore[index]
        assert len(upstream.seen()) == sum(1 for r in results if r.status == 200)
    finally:
        cached.stop()
        if fresh is not None:
            fresh.stop()
        await idp.stop()


# ------------------------------------------------------------------------- policy reload


async def _reload(gate: Gate) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(gate.admin_url + "/v1/reload") as r:
        return r.status, await r.json()


async def test_corrupt_policy_keeps_last_good_then_fixed_file_loads(
    tmp_path: Path, upstream: Upstream
) -> None:
    keys = Keys()
    policy = write_policy(tmp_path / "policy.yaml", ALLOW_RULES, QUOTAS)
    gate = _gate(tmp_path, upstream, keys, policies=[policy])
    token = keys.token("lab")
    results: list[Result] = []

    async def errors() -> float:
        return await metric(gate.admin_url, "gatekeeper_policy_reloads_total", result="error")

    try:
        async with aiohttp.ClientSession() as s:
            results.append(await submit(s, gate.url, token))
            assert results[-1].status == 200
            first = decisions(audit_lines(_audit(gate)))[results[-1].decision_id]  # type: ignore[index]
            version = first["decision"]["policy_version"]

            policy.write_text(
                "version: 1\nname: broken\nrules:\n  - id: x\n    when: {geo.country: [\n"
            )
            assert await errors() == 0
            gate.signal(signal.SIGHUP)
            await wait_for(lambda: _ge(errors(), 1), 30)
            results.append(await submit(s, gate.url, token))
            results.append(await submit(s, gate.url, token, ip=CN_IP))
            assert [r.status for r in results[-2:]] == [200, 451]

            status, body = await _reload(gate)
            assert status == 500 and body["reloaded"] is False
            assert body["policy_version"] == version  # the last good one runs on
            assert await errors() == 2

            deny_lab = [{"id": "lab-suspended", "when": {"principal.entity": "lab"},
                         "action": "deny"}, *ALLOW_RULES]  # fmt: skip
            write_policy(tmp_path / "policy.yaml", deny_lab, QUOTAS)
            status, body = await _reload(gate)
            assert status == 200 and body["reloaded"] is True
            assert body["policy_version"] != version
            ok = await metric(gate.admin_url, "gatekeeper_policy_reloads_total", result="success")
            assert ok == 1 and await errors() == 2
            results.append(await submit(s, gate.url, token))
            assert results[-1].status == 451
            assert results[-1].problem is not None
            assert results[-1].problem["rule"] == "lab-suspended"
        recs = assert_accounted(upstream, _audit(gate), results)
        versions = [recs[r.decision_id]["decision"]["policy_version"] for r in results]  # type: ignore[index]
        assert versions[:3] == [version] * 3 and versions[3] == body["policy_version"]
        assert len(upstream.seen()) == 2
    finally:
        gate.stop()


async def _ge(value: Any, bound: float) -> bool:
    return float(await value) >= bound


# ---------------------------------------------------------------------------- GeoIP file


def _write_mmdb(path: Path) -> Path:
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    for net, iso in (("198.51.100.0/24", "US"), ("203.0.113.0/24", "CN")):
        w.insert_network(IPSet([net]), {"country": {"iso_code": iso}, "registered_country":
                                        {"iso_code": iso}})  # fmt: skip
    w.to_db_file(str(path))
    return path


async def test_geoip_file_deleted_at_runtime(tmp_path: Path, upstream: Upstream) -> None:
    keys = Keys()
    db = _write_mmdb(tmp_path / "country.mmdb")
    gate = _gate(tmp_path, upstream, keys, geoip={"country_db": str(db)})
    token = keys.token("lab")
    results: list[Result] = []
    try:
        async with aiohttp.ClientSession() as s:
            results.append(await submit(s, gate.url, token, ip="198.51.100.7"))
            results.append(await submit(s, gate.url, token, ip="203.0.113.7"))
            assert [r.status for r in results] == [200, 451]
            db.unlink()
            # New addresses (no lookup cache): the open reader still answers.
            for i in range(8, 12):
                results.append(await submit(s, gate.url, token, ip=f"198.51.100.{i}"))
                results.append(await submit(s, gate.url, token, ip=f"203.0.113.{i}"))
            assert [r.status for r in results[2:]] == [200, 451] * 4
            status, body = await _reload(gate)
            assert status == 500 and body["reloaded"] is False
            assert (
                await metric(gate.admin_url, "gatekeeper_policy_reloads_total", result="error") == 1
            )
            results.append(await submit(s, gate.url, token, ip="198.51.100.20"))
            results.append(await submit(s, gate.url, token, ip="203.0.113.20"))
            assert [r.status for r in results[-2:]] == [200, 451]
            _write_mmdb(db)
            status, body = await _reload(gate)
            assert status == 200 and body["reloaded"] is True
            results.append(await submit(s, gate.url, token, ip="203.0.113.21"))
            assert results[-1].status == 451
        recs = assert_accounted(upstream, _audit(gate), results)
        countries = Counter(recs[r.decision_id]["geo"]["country"] for r in results)  # type: ignore[index]
        assert countries == {"US": 6, "CN": 7}
        assert len(upstream.seen()) == 6
    finally:
        gate.stop()


# ---------------------------------------------------------------------- audit sink failing


async def test_audit_redis_stream_sink_down_then_back(
    tmp_path: Path, upstream: Upstream, redis_server: RedisServer
) -> None:
    keys = Keys()
    sink = {"type": "redis_stream", "url": redis_server.url, "stream": "gk:audit"}
    gate = _gate(tmp_path, upstream, keys, extra_sinks=[sink])
    token = keys.token("lab")
    results: list[Result] = []
    stop = asyncio.Event()

    async def client(s: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            results.append(await submit(s, gate.url, token))
            await asyncio.sleep(0.01)

    try:
        async with aiohttp.ClientSession() as s:
            loops = [asyncio.ensure_future(client(s)) for _ in range(4)]
            await wait_for(lambda: sum(r.status == 200 for r in results) >= 8, 30)
            t_kill = time.monotonic()
            redis_server.kill()
            await wait_for(lambda: sum(r.sent > t_kill + 0.1 for r in results) >= 8, 30)
            t_restart = time.monotonic()
            redis_server.start()
            up = time.monotonic()  # a slow start of redis-server is not the gate's
            await wait_for(lambda: any(r.status == 200 and r.sent > t_restart for r in results), 30)
            recovery = min(r.done for r in results if r.status == 200 and r.sent > t_restart)
            await wait_for(lambda: sum(r.sent > recovery for r in results) >= 8, 30)
            stop.set()
            await asyncio.gather(*loops)
        down = [r for r in results if r.sent > t_kill + 0.1 and r.done < t_restart]
        assert down and {r.status for r in down} == {503}, Counter(r.status for r in down)
        for r in down:
            assert r.problem is not None
            assert r.problem["type"] == "urn:gatekeeper:problem:audit-unavailable"
        assert {r.status for r in results} == {200, 503}
        print(f"\naudit sink down: {len(down)} x 503, recovered "
              f"{recovery - up:.2f}s after Redis came back")  # fmt: skip
        assert recovery - up < 5
        assert await metric(gate.admin_url, "gatekeeper_audit_errors_total",
                            sink="redis_stream") >= 1  # fmt: skip
        recs = assert_accounted(upstream, _audit(gate), results)
        assert len(upstream.seen()) == sum(1 for r in results if r.status == 200)
        assert len(recs) == len(upstream.seen())  # a refused request left no record behind
        import redis

        client_ = redis.Redis.from_url(redis_server.url)
        try:
            entries = client_.xrange("gk:audit")
        finally:
            client_.close()
        on_stream = [json.loads(f[b"data"]) for _, f in entries]
        ids = {e["decision_id"] for e in on_stream if e.get("type") != "commit-failed"}
        after = [r.decision_id for r in results if r.status == 200 and r.sent > t_restart]
        assert set(after) <= ids, "records since the restart are on the stream"
        # The refused requests are named by the gate's commit-failed records.
        named = {i for e in on_stream if e.get("type") == "commit-failed" for i in e["unforwarded"]}
        assert {r.decision_id for r in down} <= named
    finally:
        gate.stop()
    assert os.path.getsize(_audit(gate)[0]) > 0


async def test_corrupt_policy_reload_across_two_workers(tmp_path: Path, upstream: Upstream) -> None:
    """SIGHUP and POST /v1/reload reach both workers; each keeps its last good policy."""
    keys = Keys()
    policy = write_policy(tmp_path / "policy.yaml", ALLOW_RULES, QUOTAS)
    gate = _gate(tmp_path, upstream, keys, policies=[policy], workers=2)
    token = keys.token("lab")

    async def count(result: str) -> float:
        return await metric(gate.admin_url, "gatekeeper_policy_reloads_total", result=result)

    async def burst(n: int = 24) -> list[Result]:
        conn = aiohttp.TCPConnector(force_close=True)  # new connections: both workers answer
        async with aiohttp.ClientSession(connector=conn) as s:
            return list(await asyncio.gather(*(submit(s, gate.url, token) for _ in range(n))))

    results: list[Result] = []
    try:
        policy.write_text("version: 1\nrules: [{id: x, when: {nope.attr: 1}, action: allow}]\n")
        gate.signal(signal.SIGHUP)  # to the supervisor, which fans it out
        await wait_for(lambda: _ge(count("error"), 2), 30)
        status, _ = await _reload(gate)
        assert status == 202
        await wait_for(lambda: _ge(count("error"), 4), 30)
        results += await burst()
        assert {r.status for r in results} == {200}
        deny_lab = [{"id": "lab-suspended", "when": {"principal.entity": "lab"},
                     "action": "deny"}, *ALLOW_RULES]  # fmt: skip
        write_policy(policy, deny_lab, QUOTAS)
        status, _ = await _reload(gate)
        assert status == 202
        await wait_for(lambda: _ge(count("success"), 2), 30)
        fixed = await burst()
        assert {r.status for r in fixed} == {451}
        results += fixed
        assert await count("error") == 4
    finally:
        gate.stop()
    paths = _audit(gate)
    assert_accounted(upstream, paths, results)
    per_worker = [
        Counter(r["decision"]["rule"] for r in decisions(audit_lines([p])).values()) for p in paths
    ]
    assert all(c["lab-suspended"] for c in per_worker), per_worker  # both workers swapped


async def test_client_gone_mid_stream_keeps_the_charge(
    tmp_path: Path, upstream: Upstream, redis_server: RedisServer
) -> None:
    """The upstream accepted and answered 200; a client that hangs up while the answer streams
    back must not get its quota back (else: submit, hang up, compute for free)."""
    keys = Keys()
    route = {"name": "download", "match": {"path_prefix": "/download", "methods": ["GET"]},
             "upstream": upstream.url, "adapter": "generic", "gpu_model": "H100-SXM",
             "generic": {"gpus_header": "X-Test-Gpus"}}  # fmt: skip
    gate = _gate(tmp_path, upstream, keys, store=redis_server.url, extra_routes=[route])
    headers = {"Authorization": f"Bearer {keys.token('lab')}", "X-Test-Gpus": "1",
               "X-Forwarded-For": "8.8.8.8"}  # fmt: skip
    key = bucket_redis_key("lab", "tenant-requests", "tenant", "lab", 3600)
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.get(gate.url + f"/download?size={512 * 1024 * 1024}", headers=headers)
            assert r.status == 200
            gone_id = r.headers["X-Gatekeeper-Decision-Id"]
            await r.content.readexactly(1 << 20)
            r.close()  # hang up mid-body
        paths = _audit(gate)
        await wait_for(lambda: gone_id in outcomes(audit_lines(paths)), 30)
        outcome = outcomes(audit_lines(paths))[gone_id]
        assert outcome["http"]["upstream_status"] == 200
        assert outcome["quota"]["refunded"] is False
        assert redis_bucket_total(redis_server.url, key) == 1
        assert_accounted(upstream, paths, [])
    finally:
        gate.stop()
