"""Two group commits in flight: the next batch waits on the file's thread, not on the event loop.

The disk is a real ``FileSink`` on a real file whose first write is held on the sink's thread
until the test lets it go (and, for the failure cases, then fails as a full disk would): that is
the moment a second batch must already be chained and queued behind it.
"""

from __future__ import annotations

import asyncio
import errno
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gatekeeper import metrics
from gatekeeper.audit.log import PIPELINE_DEPTH, AuditLog
from gatekeeper.audit.sinks import FileSink, StdoutSink
from gatekeeper.audit.verify import verify_files
from gatekeeper.errors import DependencyError
from tests.audit.helpers import body, file_cfg, read_lines


class HeldDiskFileSink(FileSink):
    """A file sink whose first write waits for ``release`` (and fails if ``fail_first``)."""

    def __init__(self, path: str, *, fail_first: bool = False) -> None:
        super().__init__(path)
        self.fail_first = fail_first
        self.held = threading.Event()  # the first write is waiting on the thread
        self.release = threading.Event()
        self.handed = 0  # batches handed to the sink by the log
        self._first = True

    async def write(self, lines: Sequence[bytes]) -> None:
        self.handed += 1
        await super().write(lines)

    def _append_sync(self, data: bytes) -> None:
        if self._first:
            self._first = False
            self.held.set()
            assert self.release.wait(10)
            if self.fail_first:
                raise OSError(errno.ENOSPC, "No space left on device")
        super()._append_sync(data)


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def records_in(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in read_lines(path) if b'"type":"seal"' not in raw]


async def started(path: Path, sink: FileSink) -> AuditLog:
    log = AuditLog(file_cfg(path), replica="gk-0", sinks=[sink])
    await log.start()
    assert log.depth == PIPELINE_DEPTH == 2
    return log


async def test_the_next_batch_is_queued_while_the_first_is_on_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = HeldDiskFileSink(str(path))
    log = await started(path, sink)
    answered: list[int] = []

    async def append(i: int) -> dict[str, Any]:
        rec = await log.append(body(i))
        answered.append(i)
        return rec

    first = asyncio.create_task(append(1))
    await asyncio.to_thread(sink.held.wait, 5)
    second = asyncio.create_task(append(2))
    # The second batch is chained and handed to the sink while the first is still held.
    await wait_for(lambda: sink.handed == 2)
    assert not first.done() and not second.done()
    third = asyncio.create_task(append(3))  # a third waits: two commits at most
    for _ in range(20):
        await asyncio.sleep(0)
    assert sink.handed == 2
    sink.release.set()
    recs = await asyncio.wait_for(asyncio.gather(first, second, third), 10)
    await log.close()
    assert [r["seq"] for r in recs] == [1, 2, 3]
    assert answered == [1, 2, 3]  # answered in chain order
    assert recs[1]["prev_hash"] == recs[0]["hash"] and recs[2]["prev_hash"] == recs[1]["hash"]
    assert sink.batches == 3
    assert (log.seq, log.head) == (3, recs[2]["hash"])
    report = verify_files([str(path)])
    assert report.ok and report.records == 3, report.summary()


async def test_a_batch_queued_behind_a_failed_one_fails_too_and_the_chain_stays_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    sink = HeldDiskFileSink(str(path), fail_first=True)
    sink._first = False  # the first record goes through
    log = await started(path, sink)
    kept = await log.append(body(0))
    sink._first = True  # the next write is held, then fails (disk full)
    errors_before = metrics.AUDIT_ERRORS.labels(sink="file")._value.get()
    doomed = asyncio.create_task(log.append(body(1)))
    await asyncio.to_thread(sink.held.wait, 5)
    behind = asyncio.create_task(log.append(body(2)))  # chained on the doomed record
    await wait_for(lambda: sink.handed == 3)
    sink.release.set()
    for task in (doomed, behind):
        with pytest.raises(DependencyError) as err:
            await task
        assert err.value.reason == "audit-unavailable"
    assert not log.healthy()
    assert metrics.AUDIT_ERRORS.labels(sink="file")._value.get() - errors_before == 2
    assert (log.seq, log.head) == (1, kept["hash"])
    # The next record links to the last stored one: no fork, no gap, nothing of the two.
    after = await asyncio.wait_for(log.append(body(3)), 10)
    await log.close()
    assert (after["seq"], after["prev_hash"]) == (2, kept["hash"])
    assert log.healthy() is False  # closed
    assert [r["seq"] for r in records_in(path)] == [1, 2]
    assert [r["hash"] for r in records_in(path)] == [kept["hash"], after["hash"]]
    report = verify_files([str(path)])
    assert report.ok and report.records == 2, report.summary()


async def test_a_second_required_sink_keeps_one_commit_in_flight(tmp_path: Path) -> None:
    import io

    cfg = file_cfg(tmp_path / "audit.jsonl")
    both = AuditLog(cfg, replica="gk-0", sinks=[FileSink(str(tmp_path / "a.jsonl")),
                                                StdoutSink(out=io.BytesIO())])  # fmt: skip
    assert both.depth == 1  # a required stream would need a rollback across two batches
    optional = AuditLog(
        cfg,
        replica="gk-0",
        sinks=[FileSink(str(tmp_path / "b.jsonl")), StdoutSink(required=False, out=io.BytesIO())],
    )
    assert optional.depth == 2
    two_files = AuditLog(
        cfg,
        replica="gk-0",
        sinks=[FileSink(str(tmp_path / "c.jsonl")), FileSink(str(tmp_path / "d.jsonl"))],
    )
    assert two_files.depth == 1
