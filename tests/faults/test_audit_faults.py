"""Audit under faults through a real gate.

* kill -9 under concurrent load: every request that got an answer or reached the upstream has its
  decision record on disk, and ``gatekeeper audit verify`` passes up to a possibly torn last line,
  which it reports; the restarted gate continues the chain after it.
* disk full (audit file on a small tmpfs): 503 ``audit-unavailable``, nothing forwarded without a
  record, and the gate recovers by itself when space returns.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.gate import Upstream
from tests.faults.harness import (
    CN_IP,
    Keys,
    Result,
    assert_accounted,
    gate_config,
    metric,
    start_gate,
    submit,
    tmpfs_mount,
    wait_for,
    write_entities,
    write_policy,
)
from tests.support import free_port, repo_root

pytestmark = pytest.mark.timeout(120)

ENTITIES: list[dict[str, Any]] = [
    {"id": "lab", "name": "Lab Inc.", "kind": "company", "country": "US", "hq_country": "US"},
]
RULES: list[dict[str, Any]] = [
    {"id": "from-cn", "when": {"geo.country": "CN"}, "action": "deny"},
    {"id": "known", "when": {"entity.known": True}, "action": "allow"},
]


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    up = Upstream(tmp_path)
    try:
        yield up
    finally:
        up.stop()


def _config(tmp: Path, upstream: Upstream, keys: Keys, audit_dir: Path) -> dict[str, Any]:
    return gate_config(
        tmp,
        upstream=upstream.url,
        entities=write_entities(tmp / "entities.yaml", ENTITIES),
        policies=[write_policy(tmp / "policy.yaml", RULES)],
        jwks_file=keys.write(tmp / "jwks.json"),
        audit_dir=audit_dir,
    )


def verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper", "audit", "verify", *map(str, paths)],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_kill_9_under_load_loses_no_record(tmp_path: Path, upstream: Upstream) -> None:
    keys = Keys()
    cfg = _config(tmp_path, upstream, keys, tmp_path)
    audit = Path(cfg["audit"]["sinks"][0]["path"])
    gate = start_gate(tmp_path, cfg)
    token = keys.token("lab")
    results: list[Result] = []

    async def client(s: aiohttp.ClientSession, n: int) -> None:
        i = 0
        while True:
            r = await submit(s, gate.url, token, ip=CN_IP if (i + n) % 3 == 0 else "8.8.8.8")
            results.append(r)
            i += 1
            if r.status == 0:
                return  # the gate is gone

    try:
        async with aiohttp.ClientSession() as s:
            loops = [asyncio.ensure_future(client(s, n)) for n in range(32)]
            # both answers seen (however slowly the gate starts answering), then a random moment
            await wait_for(lambda: {200, 451} <= {r.status for r in results}, 30)
            await asyncio.sleep(random.uniform(0.2, 1.2))
            gate.proc.kill()  # SIGKILL: no drain, no flush, no atexit
            gate.proc.wait(5)
            await asyncio.wait_for(asyncio.gather(*loops), 30)
    finally:
        gate.stop()
    answered = [r for r in results if r.status]
    statuses = Counter(r.status for r in answered)
    assert set(statuses) <= {200, 451} and statuses[200] and statuses[451], statuses
    recs = assert_accounted(upstream, [audit], answered)
    print(f"\nkill -9: {len(answered)} answered {dict(statuses)}, {len(recs)} records on disk, "
          f"{len(upstream.seen())} reached the upstream")  # fmt: skip
    for r in answered:
        rec = recs[r.decision_id]  # type: ignore[index]
        assert rec["decision"]["action"] == ("allow" if r.status == 200 else "deny")
    done = verify(audit)
    assert done.returncode == 0 or "torn last line" in done.stdout, done.stdout + done.stderr

    # A crash in the middle of a write leaves a torn last line: verify reports it (exit 1) and
    # the restarted gate links its new records to the last complete one.
    with open(audit, "ab") as fh:
        fh.write(b'{"v": 1, "seq": 99999, "decision_id": "torn-by-the-tes')
    torn = verify(audit)
    assert torn.returncode == 1 and "torn last line" in torn.stdout, torn.stdout
    cfg2 = dict(cfg, listen={"host": "127.0.0.1", "port": free_port()},
                admin={"host": "127.0.0.1", "port": free_port()})  # fmt: skip
    gate2 = start_gate(tmp_path, cfg2, name="restarted")
    try:
        async with aiohttp.ClientSession() as s:
            after = await submit(s, gate2.url, token)
        assert after.status == 200
    finally:
        gate2.stop()
    resumed = verify(audit)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "torn line" in resumed.stderr  # still listed, now harmless inside the chain


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return sorted(out)


def _exited(pid: int) -> bool:
    """Gone, or a zombie (its sockets closed) waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def test_kill_9_one_of_two_workers(tmp_path: Path, upstream: Upstream) -> None:
    """The supervisor restarts a SIGKILLed worker, which continues its own chain."""
    keys = Keys()
    cfg = dict(_config(tmp_path, upstream, keys, tmp_path), workers=2)
    gate = start_gate(tmp_path, cfg)
    paths = [tmp_path / f"audit.w{i}.jsonl" for i in (0, 1)]
    token = keys.token("lab")
    results: list[Result] = []
    stop = asyncio.Event()

    async def client(s: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            results.append(await submit(s, gate.url, token))

    try:
        workers = _children(gate.proc.pid)
        assert len(workers) == 2, workers
        conn = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=conn) as s:
            loops = [asyncio.ensure_future(client(s)) for _ in range(16)]
            await asyncio.sleep(random.uniform(0.5, 1.2))
            victim = random.choice(workers)
            os.kill(victim, 9)
            # Its listener is gone once it has exited (a slow exit keeps it a while longer).
            await wait_for(lambda: _exited(victim), 30, interval=0.01)
            t_dead = time.monotonic()
            await wait_for(lambda: len(set(_children(gate.proc.pid)) - set(workers)) == 1, 30)
            # The new worker starts (imports, loads the registry) and takes connections again:
            # wait until both workers' files grow, however long a start takes on a busy machine.
            sizes = [p.stat().st_size for p in paths]
            await wait_for(
                lambda: all(p.stat().st_size > n for p, n in zip(paths, sizes, strict=True)), 60
            )
            t_both = time.monotonic()
            await wait_for(
                lambda: sum(bool(r.status) and r.sent > t_both for r in results) >= 64, 60
            )
            stop.set()
            await asyncio.gather(*loops)
    finally:
        gate.stop()
    answered = [r for r in results if r.status]
    lost = [r for r in results if not r.status]
    assert {r.status for r in answered} == {200}
    assert all(r.sent < t_dead + 0.5 for r in lost), "only requests on the killed worker fail"
    recs = assert_accounted(upstream, paths, answered)
    late = [r for r in answered if r.sent > t_both]
    replicas = Counter(recs[r.decision_id]["replica"] for r in late)  # type: ignore[index]
    assert len(replicas) == 2, f"the restarted worker answers again: {replicas}"
    for p in paths:
        done = verify(p)
        assert done.returncode == 0, done.stdout + done.stderr
    print(f"\nkill -9 one worker: {len(answered)} answered, {len(lost)} lost in flight, "
          f"{len(recs)} records, both chains verify")  # fmt: skip


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs_mount(tmp_path / "mnt", "512k") as mnt:
        yield mnt


def _fill(folder: Path) -> Path:
    """Write a filler file until the file system says ENOSPC."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        block = b"\0" * 4096
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                fh.write(b"\0")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


async def test_disk_full_503_then_recovers(tmp_path: Path, upstream: Upstream, tmpfs: Path) -> None:
    keys = Keys()
    cfg = _config(tmp_path, upstream, keys, tmpfs)
    audit = Path(cfg["audit"]["sinks"][0]["path"])
    gate = start_gate(tmp_path, cfg)
    token = keys.token("lab")
    results: list[Result] = []
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(20):
                results.append(await submit(s, gate.url, token))
            assert {r.status for r in results} == {200}
            filler = _fill(tmpfs)
            full: list[Result] = []
            for _ in range(30):
                full.append(await submit(s, gate.url, token))
            statuses = Counter(r.status for r in full)
            assert set(statuses) <= {200, 503}, statuses
            assert {r.status for r in full[-20:]} == {503}, statuses  # slack in the last page aside
            for r in full:
                if r.status == 503:
                    assert r.problem is not None
                    assert r.problem["type"] == "urn:gatekeeper:problem:audit-unavailable"
            assert await metric(gate.admin_url, "gatekeeper_audit_errors_total", sink="file") >= 20
            results += full
            filler.unlink()
            t_free = time.monotonic()
            back: list[Result] = []
            while time.monotonic() - t_free < 30:
                back.append(await submit(s, gate.url, token))
                if back[-1].status == 200:
                    break
                await asyncio.sleep(0.05)
            recovery = time.monotonic() - t_free
            assert back[-1].status == 200, "no recovery within 30 s of space returning"
            for _ in range(10):
                back.append(await submit(s, gate.url, token))
            assert back[-1].status == 200
            results += back
        print(f"\ndisk full: {dict(statuses)} while full, recovered {recovery:.2f}s after space "
              f"returned")  # fmt: skip
    finally:
        gate.stop()
    recs = assert_accounted(upstream, [audit], results)
    refused = [r for r in results if r.status == 503]
    assert all(r.decision_id not in recs for r in refused)  # refused because not recordable
    assert len(upstream.seen()) == sum(1 for r in results if r.status == 200)
    done = verify(audit)
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.path.getsize(audit) > 0
