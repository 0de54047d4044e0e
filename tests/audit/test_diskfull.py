"""Disk full: 503 (DependencyError), nothing acknowledged that is not on disk, recovery by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.audit.verify import verify_files
from tests.audit.diskfull_scenario import scenario
from tests.faults.harness import tmpfs_mount
from tests.support import repo_root


def _check(path: Path, result: dict[str, Any]) -> None:
    acked = result["acked"]
    assert result["refused"] > 0, "the disk never filled up"
    assert result["errors"] >= 1 and not result["healthy_when_full"] and result["still_refused"]
    assert result["healthy_after_probe"], "did not recover by itself after space returned"
    # The chain continues right after the last durable record: failed records are not in it,
    # and one commit-failed record names every request that was refused.
    records = [json.loads(raw) for raw in path.read_bytes().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert set(acked) <= {r["seq"] for r in records if r.get("type") is None}
    assert result["after_seq"] == acked[-1] == records[-1]["seq"]
    notes = [r for r in records if r.get("type") == "commit-failed"]
    assert sorted(i for n in notes for i in n["unforwarded"]) == sorted(result["refused_ids"])
    assert sum(n["unforwarded_count"] for n in notes) == len(result["refused_ids"])
    decided = {r["decision_id"] for r in records if r.get("type") is None}
    assert decided.isdisjoint(result["refused_ids"])
    report = verify_files([str(path)])
    assert report.ok, report.first_error
    assert report.records == len(records) and not report.torn_lines


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs_mount(tmp_path / "mnt", "96k") as mnt:
        yield mnt


async def test_disk_full_on_a_small_tmpfs(tmpfs: Path) -> None:
    path = tmpfs / "audit.jsonl"
    filler = tmpfs / "filler"

    def fill() -> None:
        st = os.statvfs(tmpfs)
        room = st.f_bavail * st.f_frsize
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, room - 24 * 1024))

    def free() -> None:
        filler.unlink()

    result = await scenario(path, fill, free)
    _check(path, result)


def test_file_size_limit_in_a_subprocess(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.audit.diskfull_scenario", "rlimit", str(tmp_path)],
        capture_output=True, cwd=repo_root(), timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    _check(tmp_path / "audit.jsonl", json.loads(out.stdout.decode().splitlines()[-1]))


async def test_unopenable_file_then_recovery(tmp_path: Path) -> None:
    """The audit folder is not usable at start (here: a file where the folder should be)."""
    from gatekeeper.audit.log import AuditLog
    from gatekeeper.errors import DependencyError
    from tests.audit.helpers import body, file_cfg

    folder = tmp_path / "audit"
    folder.write_bytes(b"not a folder")
    log = AuditLog(file_cfg(folder / "audit.jsonl"), replica="gk-0")
    await log.start()  # starts, but not ready
    assert not log.healthy()
    with pytest.raises(DependencyError):
        await log.append(body(1))
    folder.unlink()
    folder.mkdir()
    try:
        # seq 1 says which request was refused while the folder was unusable
        assert (await log.append(body(2)))["seq"] == 2
        assert log.healthy()
    finally:
        await log.close()
    first = json.loads((folder / "audit.jsonl").read_bytes().splitlines()[0])
    assert (first["type"], first["unforwarded"], first["seq"]) == ("commit-failed", ["d000001"], 1)
    assert verify_files([str(folder / "audit.jsonl")]).records == 2
