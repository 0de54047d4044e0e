"""``workers: 2`` serves from two processes sharing one port; SIGHUP reaches both (issue 2, #5)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp

from tests.e2e.gate import Gate, Upstream, base_config


def _decisions(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") is None:
            out.append(rec)
    return out


async def test_two_workers_share_the_port(tmp_path: Path, upstream: Upstream) -> None:
    gate = Gate(tmp_path, base_config(tmp_path, upstream.url, workers=2))
    try:
        # The port opens with the first worker; wait until both have opened their audit chains.
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"audit.w{i}.jsonl").exists() for i in (0, 1)):
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        time.sleep(0.5)

        async def one(session: aiohttp.ClientSession, i: int) -> int:
            # A new connection each time, so the kernel spreads them across both listeners.
            async with session.get(gate.url + f"/w/{i}", headers={"Connection": "close"}) as r:
                await r.read()
                return r.status

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            statuses = await asyncio.gather(*(one(s, i) for i in range(200)))
        assert set(statuses) == {200}
        time.sleep(0.5)
        w0 = _decisions(tmp_path / "audit.w0.jsonl")
        w1 = _decisions(tmp_path / "audit.w1.jsonl")
        assert w0 and w1, (len(w0), len(w1))
        assert len(w0) + len(w1) == 200
        assert {r["replica"] for r in w0} != {r["replica"] for r in w1}

        # Metrics from any worker add up both processes (prometheus multiprocess mode).
        total = 0.0
        async with aiohttp.ClientSession() as s:
            async with s.get(gate.admin_url + "/metrics") as r:
                text = await r.text()
        for line in text.splitlines():
            if line.startswith("gatekeeper_requests_total{"):
                total += float(line.rsplit(" ", 1)[1])
        assert total == 200

        # SIGHUP to the supervisor reloads every worker.
        gate.signal(signal.SIGHUP)
        time.sleep(1.5)
        async with aiohttp.ClientSession() as s:
            async with s.get(gate.admin_url + "/metrics") as r:
                text = await r.text()
        reloads = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('gatekeeper_policy_reloads_total{result="success"}')
        )
        assert reloads == 2
    finally:
        assert gate.stop() == 0
