"""Two group commits in flight: the next batch is written and waits for its fsync while the
first one's fsync is still running.

The disk is a real ``FileSink`` on a real file whose fsync waits on its thread until the test
lets it go (``tests.audit.disks.HeldDisk``): that is the moment a second batch must already be
chained and queued behind the first. For the failure case the held fsync's thread dies, as if
it (or the disk under it) failed with both batches waiting.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gatekeeper import metrics
from gatekeeper.audit.log import PIPELINE_DEPTH, AuditLog
from gatekeeper.audit.sinks import FileSink, StdoutSink
from gatekeeper.audit.verify import verify_files
from gatekeeper.errors import DependencyError
from tests.audit.disks import HeldDisk
from tests.audit.helpers import body, file_cfg, read_lines


class HeldDiskFileSink(FileSink):
    """A file sink whose fsync can be held, let go, or whose thread dies, by the test."""

    def __init__(self, path: str) -> None:
        self.disk = HeldDisk()
        super().__init__(path, ops=self.disk)
        self.handed = 0  # batches handed to the sink by the log

    async def write(self, lines: Sequence[bytes]) -> None:
        self.handed += 1
        await super().write(lines)

    def hold(self) -> None:
        self.disk.hold()

    def release(self) -> None:
        self.disk.release()

    def crash(self) -> None:
        self.disk.crash()


async def wait_for(predicate: Any, timeout_s: float = 30.0) -> None:
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

    sink.hold()
    first = asyncio.create_task(append(1))
    await wait_for(lambda: sink.handed == 1)
    second = asyncio.create_task(append(2))
    # The second batch is chained and handed to the sink while the first is still held.
    await wait_for(lambda: sink.handed == 2)
    assert not first.done() and not second.done()
    third = asyncio.create_task(append(3))  # a third waits: two commits at most
    for _ in range(20):
        await asyncio.sleep(0)
    assert sink.handed == 2
    sink.release()
    recs = await asyncio.wait_for(asyncio.gather(first, second, third), 10)
    await log.close()
    assert [r["seq"] for r in recs] == [1, 2, 3]
    assert answered == [1, 2, 3]  # answered in chain order
    assert recs[1]["prev_hash"] == recs[0]["hash"] and recs[2]["prev_hash"] == recs[1]["hash"]
    assert sink.batches == 3
    assert (log.seq, log.head) == (3, recs[2]["hash"])
    report = verify_files([str(path)])
    assert report.ok and report.records == 3, report.summary()


async def test_the_next_batch_grows_for_part_of_a_batch_time_then_goes(tmp_path: Path) -> None:
    """With one commit in flight, the next batch is taken PIPELINE_LAG of the thread's usual time
    per batch after the first one's hand-off: records arriving meanwhile share it."""
    from gatekeeper.audit.log import PIPELINE_LAG

    path = tmp_path / "audit.jsonl"
    sink = HeldDiskFileSink(str(path))
    log = await started(path, sink)
    sink.batch_seconds = 0.4  # this disk's batches usually take 400 ms
    sink.hold()
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(log.append(body(1)))
    await wait_for(lambda: sink.handed == 1)
    handed = loop.time()
    second = asyncio.create_task(log.append(body(2)))
    await asyncio.sleep(0.02)
    third = asyncio.create_task(log.append(body(3)))  # arrives while the next batch grows
    await wait_for(lambda: sink.handed == 2)
    waited = loop.time() - handed
    assert waited >= PIPELINE_LAG * 0.4 * 0.9, waited
    assert not first.done()  # taken while the first is still on the disk
    sink.release()
    recs = await asyncio.wait_for(asyncio.gather(first, second, third), 10)
    await log.close()
    assert [r["seq"] for r in recs] == [1, 2, 3]
    assert sink.batches == 2  # records 2 and 3 in one commit
    assert verify_files([str(path)]).records == 3


async def test_the_next_batch_goes_the_moment_the_one_in_flight_finishes(tmp_path: Path) -> None:
    """The lag never keeps the disk waiting: when the commit in flight finishes first, the next
    batch is taken at once, however long batches usually take."""
    path = tmp_path / "audit.jsonl"
    sink = HeldDiskFileSink(str(path))
    log = await started(path, sink)
    sink.hold()
    first = asyncio.create_task(log.append(body(1)))
    await wait_for(lambda: sink.handed == 1)
    sink.batch_seconds = 600.0  # a lag of minutes, were it not cut short
    second = asyncio.create_task(log.append(body(2)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert sink.handed == 1  # the next batch grows while the first is held
    sink.release()
    recs = await asyncio.wait_for(asyncio.gather(first, second), 10)
    await log.close()
    assert [r["seq"] for r in recs] == [1, 2]
    assert sink.batches == 2
    assert verify_files([str(path)]).records == 2


async def test_a_full_batch_does_not_wait_out_the_lag(tmp_path: Path) -> None:
    """With max_batch records waiting, the next batch is taken at once, lag or not."""
    path = tmp_path / "audit.jsonl"
    sink = HeldDiskFileSink(str(path))
    log = AuditLog(file_cfg(path), replica="gk-0", sinks=[sink], max_batch=4)
    await log.start()
    sink.hold()
    first = asyncio.create_task(log.append(body(0)))
    await wait_for(lambda: sink.handed == 1)
    sink.batch_seconds = 600.0  # a lag of minutes, were it not skipped
    rest = [asyncio.create_task(log.append(body(i))) for i in range(1, 5)]
    await wait_for(lambda: sink.handed == 2, timeout_s=10)
    assert not first.done()  # taken while the first is still on the disk
    sink.release()
    recs = await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    await log.close()
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    assert verify_files([str(path)]).records == 5


async def test_a_batch_queued_behind_a_failed_one_fails_too_and_the_chain_stays_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    sink = HeldDiskFileSink(str(path))
    log = await started(path, sink)
    kept = await log.append(body(0))
    sink.hold()  # the next fsync does not come back: its thread dies with two batches waiting
    errors_before = metrics.AUDIT_ERRORS.labels(sink="file")._value.get()
    doomed = asyncio.create_task(log.append(body(1)))
    await wait_for(lambda: sink.handed == 2)
    behind = asyncio.create_task(log.append(body(2)))  # chained on the doomed record
    await wait_for(lambda: sink.handed == 3)
    sink.crash()
    for task in (doomed, behind):
        with pytest.raises(DependencyError) as err:
            await task
        assert err.value.reason == "audit-unavailable"
    assert not log.healthy()
    assert metrics.AUDIT_ERRORS.labels(sink="file")._value.get() - errors_before == 2
    assert (log.seq, log.head) == (1, kept["hash"])
    # The next record links to the last stored one: no fork, no gap, nothing of the two (they
    # were written before the fsync failed, and are cut); a new thread makes it durable.
    after = await asyncio.wait_for(log.append(body(3)), 10)
    await log.close()
    records = records_in(path)
    # seq 2 names the two refused requests; the next record follows it.
    assert (records[1]["type"], records[1]["unforwarded"]) == (
        "commit-failed",
        ["d000001", "d000002"],
    )
    assert (after["seq"], after["prev_hash"]) == (3, records[1]["hash"])
    assert records[1]["prev_hash"] == kept["hash"]
    assert log.healthy() is False  # closed
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert [r["hash"] for r in records] == [kept["hash"], records[1]["hash"], after["hash"]]
    report = verify_files([str(path)])
    assert report.ok and report.records == 3, report.summary()


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
