"""The audit trail survives a full disk, and the gate always comes back (acceptance, end to end).

A real ``gatekeeper serve`` with ``workers: 2``, ``durability: fsync`` and seals keeps its audit
files on a 2 MiB tmpfs. Many clients send submissions while a filler file takes every free byte
and is deleted again, over and over. Afterwards: every answered request has its record (503
``audit-unavailable`` aside, and each of those is named by a ``commit-failed`` record), no
forwarded request lacks one, ``gatekeeper audit verify`` passes on every file with the public
key, and the gate starts again on the files it left, also after one of them was edited (that
chain is moved aside, a new one names the break, and verify reports the break as a break).
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.audit.helpers import make_keys
from tests.e2e.gate import Upstream
from tests.faults.harness import (
    Keys,
    Result,
    assert_accounted,
    audit_files,
    audit_lines,
    gate_config,
    metric,
    start_gate,
    submit,
    tmpfs_mount,
    write_entities,
    write_policy,
)
from tests.support import free_port, repo_root

pytestmark = pytest.mark.timeout(240)

EPISODES = 24
CLIENTS = 12
ENTITIES: list[dict[str, Any]] = [
    {"id": "lab", "name": "Lab Inc.", "kind": "company", "country": "US", "hq_country": "US"},
]
RULES: list[dict[str, Any]] = [{"id": "known", "when": {"entity.known": True}, "action": "allow"}]
AUDIT_UNAVAILABLE = "urn:gatekeeper:problem:audit-unavailable"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs_mount(tmp_path / "mnt", "2m") as mnt:
        yield mnt


def _fill(folder: Path) -> Path:
    """A filler file that takes every free byte (ENOSPC on the next write)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (65536, 4096, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def _verify(*paths: Path, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper", "audit", "verify", *map(str, paths),
         "--public-key", key],
        cwd=repo_root(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("audit."))


def _named_unforwarded(lines: list[dict[str, Any]]) -> set[str]:
    return {i for r in lines if r.get("type") == "commit-failed" for i in r["unforwarded"]}


async def _episodes(gate_url: str, token: str, tmpfs: Path) -> tuple[list[Result], Counter[str]]:
    results: list[Result] = []
    stop = asyncio.Event()
    seen: Counter[str] = Counter()

    async def client(s: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            results.append(await submit(s, gate_url, token, timeout=30))
            await asyncio.sleep(0.05)

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        loops = [asyncio.ensure_future(client(s)) for _ in range(CLIENTS)]
        try:
            for _ in range(EPISODES):
                mark = len(results)
                filler = _fill(tmpfs)
                await asyncio.sleep(0.4)
                seen["full-503"] += sum(1 for r in results[mark:] if r.status == 503)
                filler.unlink()
                seen["episodes"] += 1
                t0 = time.monotonic()
                mark = len(results)
                while not any(r.status == 200 for r in results[mark:]):
                    assert time.monotonic() - t0 < 20, "no 200 within 20 s of space returning"
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.15)
        finally:
            stop.set()
            await asyncio.gather(*loops)
    return results, seen


async def test_full_disk_episodes_under_load_with_two_workers(tmp_path: Path, tmpfs: Path) -> None:
    upstream = Upstream(tmp_path)
    keys = Keys()
    priv, pub = make_keys(tmp_path)
    cfg = gate_config(
        tmp_path,
        upstream=upstream.url,
        entities=write_entities(tmp_path / "entities.yaml", ENTITIES),
        policies=[write_policy(tmp_path / "policy.yaml", RULES)],
        jwks_file=keys.write(tmp_path / "jwks.json"),
        workers=2,
        audit_dir=tmpfs,
    )
    cfg["audit"]["signing_key"] = priv
    token = keys.token("lab")
    gate = start_gate(tmp_path, cfg)
    try:
        results, seen = await _episodes(gate.url, token, tmpfs)
        # The disk is free again: the notes of the last failed commits go with the next ones.
        async with aiohttp.ClientSession() as s:
            tail = [await submit(s, gate.url, token) for _ in range(20)]
        results += tail
        assert all(r.status == 200 for r in tail), Counter(r.status for r in tail)
    finally:
        code = gate.stop()
        upstream.stop()
    assert code == 0, gate.stderr()[-3000:]
    answered = [r for r in results if r.status]
    statuses = Counter(r.status for r in answered)
    assert set(statuses) <= {200, 503} and statuses[200] and statuses[503], statuses
    refused = [r for r in answered if r.status == 503]
    assert all(r.problem and r.problem["type"] == AUDIT_UNAVAILABLE for r in refused)
    paths = audit_files(cfg)
    recs = assert_accounted(upstream, paths, answered)
    assert len(upstream.seen()) == statuses[200]
    lines = audit_lines(paths)
    named = _named_unforwarded(lines)
    assert all(r.decision_id not in recs for r in refused)  # refused: no decision record
    unnamed = [r.decision_id for r in refused if r.decision_id not in named]
    assert not unnamed, f"{len(unnamed)} refused requests not named by a commit-failed record"
    reported = 0
    for p in paths:
        done = _verify(p, key=pub)
        assert done.returncode == 0, done.stdout + done.stderr
        # verify names the refused requests as such, not as a gap in the trail
        note = re.search(r"note: (\d+) request\(s\) refused unforwarded", done.stdout)
        reported += int(note.group(1)) if note else 0
    counted = sum(r["unforwarded_count"] for r in lines if r.get("type") == "commit-failed")
    assert reported == counted >= len(refused), (reported, counted, len(refused))
    print(f"\ndisk episodes: {seen['episodes']} full/free episodes, {dict(statuses)} answered, "
          f"{len(recs)} decision records, {len(named)} refused requests named")  # fmt: skip

    # The gate starts again on the files it left, also with one of them edited since.
    w0 = paths[0]
    raw = w0.read_bytes().splitlines(keepends=True)
    # The last allow record: start-up re-verifies the last MiB of a chain only (the whole file
    # is for `audit verify`), and a worker's file here can outgrow that window.
    at = max(i for i, line in enumerate(raw) if b'"allow"' in line)
    raw[at] = raw[at].replace(b'"allow"', b'"deny!"')
    w0.write_bytes(b"".join(raw))
    upstream2 = Upstream(tmp_path)
    cfg2 = dict(cfg, listen={"host": "127.0.0.1", "port": free_port()},
                admin={"host": "127.0.0.1", "port": free_port()})  # fmt: skip
    cfg2["routes"] = [dict(cfg["routes"][0], upstream=upstream2.url)]
    gate2 = start_gate(tmp_path, cfg2, name="restarted")
    try:
        async with aiohttp.ClientSession() as s:
            again = [await submit(s, gate2.url, token) for _ in range(20)]
        assert {r.status for r in again} == {200}
        # Worker 0 owns the edited file and counts the break when its audit log starts; the
        # port answers as soon as either worker listens, so worker 1 may have served all 20.
        deadline = time.monotonic() + 60
        while True:
            breaks = await metric(gate2.admin_url, "gatekeeper_audit_chain_breaks_total")
            if breaks == 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert breaks == 1
    finally:
        assert gate2.stop() == 0, gate2.stderr()[-3000:]
        upstream2.stop()
    moved = [p for p in _all_files(tmpfs) if ".broken-" in p.name]
    assert len(moved) == 1 and moved[0].name.startswith(w0.name + ".broken-")
    first = json.loads(w0.read_bytes().splitlines()[0])
    assert first["type"] == "chain-break" and first["moved_to"] == moved[0].name
    assert_accounted(upstream2, paths, again)
    done = _verify(*_all_files(tmpfs), key=pub)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chain restarted after break" in done.stdout
    assert done.stdout.strip().endswith("1 break(s)")
