"""Crash test: kill -9 during concurrent appends; every acknowledged record is on disk and intact."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gatekeeper.audit.files import chain_files
from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.verify import verify_files
from tests.audit.helpers import body, file_cfg, make_keys
from tests.support import repo_root


def _run_and_kill(path: Path, concurrency: int, key: str | None, min_acks: int) -> dict[int, str]:
    args = [sys.executable, "-m", "tests.audit.crash_writer", str(path), str(concurrency)]
    if key:
        args.append(key)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=repo_root())
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    acked: dict[int, str] = {}
    deadline = time.monotonic() + 20
    # kill at a random moment after a random number of acknowledgements
    target = random.randint(min_acks, min_acks * 4)
    while len(acked) < target and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seq, h = line.split()
        acked[int(seq)] = h.decode()
    time.sleep(random.random() * 0.02)
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # acknowledgements printed before the kill landed
    proc.wait(5)
    for line in rest.splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line cut by the kill is not an acknowledgement
            acked[int(parts[0])] = parts[1].decode()
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= min_acks
    return acked


def _on_disk(path: Path) -> dict[int, str]:
    found: dict[int, str] = {}
    for f in chain_files(str(path)):
        for raw in Path(f).read_bytes().splitlines():
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if obj.get("type") != "seal":
                found[obj["seq"]] = obj["hash"]
    return found


@pytest.mark.parametrize("signed", [False, True])
def test_kill_9_loses_no_acknowledged_record(tmp_path: Path, signed: bool) -> None:
    key, pub = make_keys(tmp_path) if signed else (None, None)
    path = tmp_path / "audit.jsonl"
    for round_ in range(3):  # crash, resume, crash again: the chain survives every restart
        acked = _run_and_kill(path, concurrency=32, key=key, min_acks=150)
        on_disk = _on_disk(path)
        missing = {s for s in acked if on_disk.get(s) != acked[s]}
        assert not missing, f"round {round_}: acknowledged but not on disk: {sorted(missing)[:5]}"
        report = verify_files(chain_files(str(path)), public_key=pub)
        # Everything verifies up to a possible torn last line, which is reported.
        assert report.intact, report.first_error
        assert report.records >= max(acked)
        if report.torn_tail:
            assert report.first_error is not None and "torn last line" in report.first_error
        else:  # records + seal go out in one write(2): without a torn write all are sealed
            assert report.ok, report.first_error
    # a restarted gate resumes after the last crash; then the whole chain verifies
    asyncio.run(_append_once(path, key))
    final = verify_files(chain_files(str(path)), public_key=pub)
    assert final.ok, final.first_error


async def _append_once(path: Path, key: str | None) -> None:
    log = AuditLog(file_cfg(path, signing_key=key, rotate_bytes=256 * 1024), replica="gk-0")
    await log.start()
    await log.append(body(0))
    await log.close()
