"""Size rotation: the chain continues across files, verify takes them in chain order."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from gatekeeper.audit.files import (
    chain_files,
    next_segment,
    order_paths,
    per_replica_path,
    split_segment,
)
from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.verify import verify_files
from tests.audit.helpers import body, file_cfg, make_keys, read_lines, write_lines


async def _fill(path: Path, n: int, *, key: str | None = None, rotate: int = 2000) -> None:
    log = AuditLog(file_cfg(path, rotate_bytes=rotate, signing_key=key), replica="gk-0")
    await log.start()
    for i in range(n):
        await log.append(body(i))
    await log.close()


async def test_rotation_keeps_the_chain_across_files(tmp_path: Path) -> None:
    priv, pub = make_keys(tmp_path)
    path = tmp_path / "audit.jsonl"
    await _fill(path, 40, key=priv)
    files = chain_files(str(path))
    assert len(files) > 5 and files[-1] == str(path) and files[0] == f"{path}.1"
    for f in files[:-1]:  # no rotated file exceeds the limit by more than one batch
        assert Path(f).stat().st_size <= 2000 + 1200
    first_of_second = json.loads(read_lines(Path(files[1]))[0])
    last_of_first = [json.loads(x) for x in read_lines(Path(files[0]))]
    last_record = [o for o in last_of_first if o.get("type") != "seal"][-1]
    assert first_of_second["prev_hash"] == last_record["hash"]
    shuffled = files[:]
    random.shuffle(shuffled)
    report = verify_files(shuffled, public_key=pub)  # e.g. a shell glob: .10 sorts before .2
    assert report.ok and report.records == 40 and report.chains == 1


async def test_restart_resumes_from_the_newest_segment(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await _fill(path, 12)
    path.rename(next_segment(str(path)))  # crash right after a rotation's rename
    await _fill(path, 3)
    report = verify_files(chain_files(str(path)))
    assert report.ok and report.records == 15


async def test_missing_middle_segment_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await _fill(path, 30)
    files = chain_files(str(path))
    r = verify_files([files[0], *files[2:]])
    assert not r.ok and r.first_error is not None
    assert r.first_error.startswith(f"{files[2]}:1: prev_hash")


async def test_records_moved_between_segments_are_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await _fill(path, 30)
    files = [Path(f) for f in chain_files(str(path))]
    a, b = read_lines(files[0]), read_lines(files[1])
    write_lines(files[0], a[:-1])
    write_lines(files[1], [a[-1], b[0], *b[1:]][::-1])
    assert not verify_files([str(f) for f in files]).ok


async def test_replicas_keep_separate_chains(tmp_path: Path) -> None:
    base = str(tmp_path / "audit.jsonl")
    for replica in ("gk-0", "gk-1"):
        path = Path(per_replica_path(base, replica))
        log = AuditLog(file_cfg(path, rotate_bytes=1500), replica=replica)
        await log.start()
        await asyncio.gather(*(log.append(body(i)) for i in range(5)))
        for i in range(5):
            await log.append(body(i))
        await log.close()
    paths = sorted(str(p) for p in tmp_path.iterdir())
    report = verify_files(paths)
    assert report.ok and report.chains == 2 and report.records == 20


def test_file_naming_helpers() -> None:
    assert per_replica_path("/a/audit.jsonl", "gk-1") == "/a/audit.gk-1.jsonl"
    assert per_replica_path("/a/audit", "gk-1") == "/a/audit.gk-1"
    assert split_segment("/a/audit.jsonl.12") == ("/a/audit.jsonl", 12)
    assert split_segment("/a/audit.jsonl") == ("/a/audit.jsonl", None)
    groups = order_paths(["x.jsonl", "x.jsonl.10", "y.jsonl.1", "x.jsonl.2", "y.jsonl"])
    assert groups == [["x.jsonl.2", "x.jsonl.10", "x.jsonl"], ["y.jsonl.1", "y.jsonl"]]
