"""Start-up over a chain that does not verify: moved aside untouched, a new chain names the
break, the gate serves, and ``audit verify`` reads both as one explained break."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatekeeper import metrics
from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.verify import verify_files
from gatekeeper.errors import ConfigError
from tests.audit.helpers import body, file_cfg, make_keys, read_lines, write_lines
from tests.support import repo_root, venv_env


async def _write(path: Path, n: int, *, key: str | None = None, rotate: int = 104_857_600) -> None:
    log = AuditLog(file_cfg(path, signing_key=key, rotate_bytes=rotate), replica="gk-0")
    await log.start()
    for i in range(n):
        await log.append(body(i))
    await log.close()


def _tamper(path: Path, line: int) -> None:
    lines = read_lines(path)
    lines[line - 1] = lines[line - 1].replace(b'"allow"', b'"deny"')
    write_lines(path, lines)


def _breaks() -> float:
    metrics.flush()
    return metrics.AUDIT_CHAIN_BREAKS._value.get()


def _verify_cli(*paths: Path, key: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gatekeeper", "audit", "verify", *map(str, paths)]
    if key:
        cmd += ["--public-key", key]
    return subprocess.run(cmd, capture_output=True, text=True, env=venv_env(), cwd=repo_root())


async def test_a_tampered_chain_is_moved_aside_and_a_new_chain_names_it(tmp_path: Path) -> None:
    priv, pub = make_keys(tmp_path)
    path = tmp_path / "audit.jsonl"
    await _write(path, 3, key=priv)
    _tamper(path, 3)  # record 2 (line 1: record 1, line 2: its seal)
    original = path.read_bytes()
    before = _breaks()
    log = AuditLog(file_cfg(path, signing_key=priv), replica="gk-0")
    await log.start()  # does not refuse
    assert log.healthy()
    rec = await log.append(body(10))
    await log.close()
    assert _breaks() == before + 1
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("audit.jsonl.broken-")]
    assert len(moved) == 1 and moved[0].read_bytes() == original  # untouched
    first = json.loads(read_lines(path)[0])
    assert rec["seq"] == 2 and rec["prev_hash"] == first["hash"]
    assert first["type"] == "chain-break" and first["seq"] == 1
    assert first["moved_to"] == moved[0].name and first["files"] == 1
    rec1 = json.loads(original.splitlines()[0])
    assert (first["last_seq"], first["last_hash"]) == (1, rec1["hash"])
    assert first["error"] == f"{moved[0]}:3: hash mismatch at seq 2: record edited"
    # The moved chain alone fails; with the new chain beside it, the break is explained.
    assert not verify_files([str(moved[0])]).ok
    report = verify_files([str(path), str(moved[0])], public_key=pub)
    assert report.ok, report.first_error
    assert report.breaks == [
        f"chain restarted after break: {moved[0].name} verifies up to seq 1, then "
        f"{moved[0]}:3: hash mismatch at seq 2: record edited; the new chain starts at {path}:1"
    ]
    done = _verify_cli(path, moved[0], key=pub)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chain restarted after break" in done.stdout
    assert done.stdout.strip().endswith("2 chain(s), 1 break(s)")
    # The new chain alone verifies and says where the old one went.
    alone = verify_files([str(path)])
    assert alone.ok and alone.breaks[0].startswith(f"chain restarted after break at {path}:1:")


async def test_rotated_segments_move_with_their_chain_in_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await _write(path, 12, rotate=1500)
    segments = sorted(p.name for p in tmp_path.iterdir() if p.name != "audit.jsonl")
    assert len(segments) >= 2
    _tamper(path, 1)
    log = AuditLog(file_cfg(path, rotate_bytes=1500), replica="gk-0")
    await log.start()
    await log.append(body(99))
    await log.close()
    first = json.loads(read_lines(path)[0])
    moved = sorted(p for p in tmp_path.iterdir() if ".broken-" in p.name)
    assert len(moved) == first["files"] == len(segments) + 1
    assert all(p.name.startswith(first["moved_to"]) for p in moved)
    report = verify_files([str(p) for p in tmp_path.iterdir()])
    assert report.ok and len(report.breaks) == 1, report.first_error


async def test_a_break_record_that_does_not_match_the_old_chain_fails(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await _write(path, 4)
    _tamper(path, 3)
    log = AuditLog(file_cfg(path), replica="gk-0")
    await log.start()
    await log.close()
    (moved,) = [p for p in tmp_path.iterdir() if ".broken-" in p.name]
    _tamper(moved, 1)  # someone edits the kept chain further: it ends earlier than recorded
    report = verify_files([str(path), str(moved)])
    assert not report.ok and report.breaks == []
    assert report.first_error == f"{moved}:1: hash mismatch at seq 1: record edited"
    done = _verify_cli(path, moved)
    assert done.returncode == 1 and "FAILED" in done.stdout


async def test_a_file_held_by_another_writer_is_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await _write(path, 3)
    _tamper(path, 2)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        log = AuditLog(file_cfg(path), replica="gk-0")
        with pytest.raises(ConfigError, match="written by another process"):
            await log.start()
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_lost_records_are_bounded_and_merge_back() -> None:
    from gatekeeper.audit.notes import MAX_IDS, LostRecords

    lost = LostRecords()
    assert not lost
    for i in range(MAX_IDS + 5):
        lost.add(f"d{i}", answered=True, detail="disk full")
    lost.add("o1", answered=False, detail="disk full")
    note = lost.take()
    assert not lost and len(note["unforwarded"]) == MAX_IDS
    assert (note["unforwarded_count"], note["outcomes_lost"]) == (MAX_IDS + 5, ["o1"])
    lost.add("d-late", answered=True, detail="EIO")
    lost.merge(note)  # its commit failed too: everything waits again, still bounded
    again = lost.take()
    assert len(again["unforwarded"]) == MAX_IDS and again["unforwarded"][0] == "d-late"
    assert (again["unforwarded_count"], again["outcomes_lost_count"]) == (MAX_IDS + 6, 1)


async def test_hostile_break_records_do_not_explain_a_break(tmp_path: Path) -> None:
    """A chain-break record with odd fields (by hand: its hash is recomputed) explains nothing."""
    from gatekeeper.audit.record import ZERO_HASH, canonical, chain_hash

    path = tmp_path / "audit.jsonl"
    await _write(path, 3)
    _tamper(path, 2)
    broken = tmp_path / "audit.jsonl.broken-x"
    path.rename(broken)
    for fields in (
        {"moved_to": ["audit.jsonl.broken-x"], "last_seq": 1},
        {"moved_to": "audit.jsonl.broken-x", "last_seq": "1", "last_hash": None},
        {"moved_to": "audit.jsonl.broken-x"},
    ):
        rec = {"v": 1, "seq": 1, "type": "chain-break", "ts": "t", "replica": "gk-0",
               "prev_hash": ZERO_HASH, **fields}  # fmt: skip
        rec["hash"] = chain_hash(ZERO_HASH, rec)
        path.write_bytes(canonical(rec) + b"\n")
        report = verify_files([str(path), str(broken)])
        assert not report.ok and report.first_error is not None
        assert report.first_error.startswith(f"{broken}:2: hash mismatch")
