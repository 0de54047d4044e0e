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
from tests.support import repo_root


def _check(path: Path, result: dict[str, Any]) -> None:
    acked = result["acked"]
    assert result["refused"] > 0, "the disk never filled up"
    assert result["errors"] >= 1 and not result["healthy_when_full"] and result["still_refused"]
    assert result["healthy_after_probe"], "did not recover by itself after space returned"
    # the chain continues right after the last acknowledged record: failed records are not in it
    assert acked == list(range(1, len(acked) + 1))
    assert result["after_seq"] == acked[-1]
    report = verify_files([str(path)])
    assert report.ok, report.first_error
    assert report.records == len(acked) and not report.torn_lines


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


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
    assert (await log.append(body(2)))["seq"] == 1
    assert log.healthy()
    await log.close()
    assert verify_files([str(folder / "audit.jsonl")]).records == 1
