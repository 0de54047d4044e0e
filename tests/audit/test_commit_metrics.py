"""Per-commit audit timing on /metrics: commit, per-sink write and file fsync seconds, batch size.

A slow disk is played by a real ``FileSink`` whose fsync waits ``DISK_PAUSE_S`` on its thread
(``tests.audit.disks.SlowDisk``) at every batch; the file is still written and fsynced: the histograms must show that
pause, count one observation per group commit, and leave a failed commit out.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY

from gatekeeper import metrics
from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.sinks import FileSink, SinkError
from gatekeeper.audit.verify import verify_files
from tests.audit.disks import SlowDisk
from tests.audit.helpers import body, file_cfg

DISK_PAUSE_S = 0.03


class BrokenStreamSink(FileSink):
    """A required sink whose every write fails (as a Redis stream whose server is gone)."""

    kind = "redis_stream"

    async def write(self, lines: object) -> None:
        raise SinkError("connection refused")


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    metrics.flush()
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def snapshot() -> dict[str, float]:
    file = {"sink": "file"}
    return {
        "commits": sample("gatekeeper_audit_commit_seconds_count"),
        "commit_s": sample("gatekeeper_audit_commit_seconds_sum"),
        "writes": sample("gatekeeper_audit_write_seconds_count", file),
        "syncs": sample("gatekeeper_audit_fsync_seconds_count"),
        "sync_s": sample("gatekeeper_audit_fsync_seconds_sum"),
        "write_s": sample("gatekeeper_audit_write_seconds_sum", file),
        "fast_writes": sample("gatekeeper_audit_write_seconds_bucket", {**file, "le": "0.025"}),
        "batches": sample("gatekeeper_audit_batch_records_count"),
        "lines": sample("gatekeeper_audit_batch_records_sum"),
        "single_line_batches": sample("gatekeeper_audit_batch_records_bucket", {"le": "1.0"}),
    }


def delta(before: dict[str, float]) -> dict[str, float]:
    after = snapshot()
    return {k: after[k] - before[k] for k in after}


async def test_a_slow_disk_shows_in_write_and_commit_seconds(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(str(path), ops=SlowDisk(DISK_PAUSE_S))
    log = AuditLog(file_cfg(path), replica="gk-0", sinks=[sink])
    await log.start()
    before = snapshot()
    for i in range(5):  # one at a time: five commits of one record each
        await log.append(body(i))
    await log.close()
    d = delta(before)
    assert d["commits"] == d["writes"] == d["syncs"] == d["batches"] == sink.batches == 5
    assert d["lines"] == d["single_line_batches"] == 5
    assert d["fast_writes"] == 0  # every write took the disk's pause, none fits the 25 ms bucket
    assert d["write_s"] >= 5 * DISK_PAUSE_S
    # The loop's wait holds the write + fsync timed on the sink's thread (the disk's own part).
    assert d["write_s"] >= d["sync_s"] >= 5 * DISK_PAUSE_S
    assert d["commit_s"] >= d["write_s"]  # the commit holds the write (and the chain)
    assert verify_files([str(path)]).records == 5


async def test_group_commits_count_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(file_cfg(path), replica="gk-0")
    await log.start()
    sink = log.sinks[0]
    assert isinstance(sink, FileSink)
    before = snapshot()
    await asyncio.gather(*(log.append(body(i)) for i in range(200)))
    await log.close()
    d = delta(before)
    assert d["lines"] == 200
    assert d["batches"] == d["commits"] == sink.batches < 200
    assert d["single_line_batches"] < d["batches"] or d["batches"] == 1


async def test_a_failed_commit_is_not_timed_as_a_commit(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    file_sink = FileSink(str(path))
    broken = BrokenStreamSink(str(tmp_path / "unused.jsonl"))
    log = AuditLog(file_cfg(path), replica="gk-0", sinks=[file_sink, broken])
    await log.start()
    before = snapshot()
    errors = sample("gatekeeper_audit_errors_total", {"sink": "redis_stream"})
    try:
        await log.append(body(1))
    except Exception as exc:  # the request would get 503
        assert "audit write failed" in str(exc)
    else:
        raise AssertionError("a failed required sink must fail the append")
    await log.close()
    d = delta(before)
    assert d["writes"] == d["syncs"] == 1  # the file's own write happened (then was rolled back)
    assert d["commits"] == d["batches"] == 0
    assert sample("gatekeeper_audit_errors_total", {"sink": "redis_stream"}) == errors + 1
