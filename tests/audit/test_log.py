"""AuditLog: fields, group commit, resume, seals, bounded backlog, tampered tail at start."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from gatekeeper import metrics
from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.record import ZERO_HASH, canonical, chain_hash
from gatekeeper.audit.sinks import FileSink, StdoutSink
from gatekeeper.audit.verify import verify_files
from gatekeeper.config import AuditConfig
from gatekeeper.errors import ConfigError, DependencyError
from tests.audit.helpers import body, file_cfg, make_keys, read_lines


def records_of(path: Path) -> list[dict]:
    out = [json.loads(raw) for raw in read_lines(path)]
    return [r for r in out if r.get("type") != "seal"]


async def started_file_log(path: Path) -> tuple[AuditLog, FileSink]:
    """A running AuditLog with one file sink at ``path``, and that sink (it counts batches)."""
    log = AuditLog(file_cfg(path), replica="gk-0")
    await log.start()
    sink = log.sinks[0]
    assert isinstance(sink, FileSink)
    return log, sink


async def test_outcome_lines_ride_with_the_next_record_or_go_after_a_few_ms(
    tmp_path: Path,
) -> None:
    """An outcome line pays no fsync of its own: it waits (LAZY_COMMIT_S) for a record to share one."""
    from gatekeeper.audit.log import LAZY_COMMIT_S

    path = tmp_path / "audit.jsonl"
    log, sink = await started_file_log(path)
    await log.append(body(1))
    assert sink.batches == 1
    log.append_nowait({"type": "outcome", "decision_id": "d1"})
    await asyncio.sleep(0)
    rec = await log.append(body(2))  # the outcome line goes in the same commit as this record
    assert sink.batches == 2 and rec["seq"] == 3
    log.append_nowait({"type": "outcome", "decision_id": "d2"})  # alone: written after the wait
    await asyncio.sleep(0)
    assert sink.batches == 2 and len(records_of(path)) == 3
    start = time.monotonic()
    while sink.batches == 2 and time.monotonic() - start < 30:
        await asyncio.sleep(0.001)
    assert sink.batches == 3 and time.monotonic() - start >= LAZY_COMMIT_S * 0.5
    assert [r.get("decision_id") for r in records_of(path)][-1] == "d2"
    log.append_nowait({"type": "outcome", "decision_id": "d3"})
    await log.close()  # closing writes what waits
    assert [r.get("decision_id") for r in records_of(path)][-1] == "d3"
    assert verify_files([str(path)]).records == 5


async def test_records_arriving_in_the_next_loop_iterations_join_the_due_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A due commit waits while each loop iteration brings a record (at most SETTLE_ITERATIONS)."""
    from gatekeeper.audit import log as log_module
    from gatekeeper.audit.log import SETTLE_ITERATIONS

    monkeypatch.setattr(log_module, "SETTLE_MAX_S", 60.0)  # iterations only, however slow the host
    path = tmp_path / "audit.jsonl"
    log, sink = await started_file_log(path)

    async def after(iterations: int, i: int) -> dict:
        for _ in range(iterations):
            await asyncio.sleep(0)
        return await log.append(body(i))

    # One record per loop iteration, as requests finishing their decisions one after the other.
    recs = await asyncio.gather(*(after(k, k) for k in range(SETTLE_ITERATIONS)))
    assert sink.batches == 1, sink.batches
    assert [r["seq"] for r in recs] == list(range(1, SETTLE_ITERATIONS + 1))
    # A record that comes an iteration after one without arrivals waits for the next commit.
    recs = await asyncio.gather(after(0, 10), after(4, 11))
    assert sink.batches == 3, sink.batches
    await log.close()
    assert verify_files([str(path)]).records == SETTLE_ITERATIONS + 2


def commit_ends(path: Path) -> list[int]:
    """The last seq of each group commit: every commit of a sealed log ends with a seal."""
    return [r["seq"] for r in map(json.loads, read_lines(path)) if r.get("type") == "seal"]


async def records_one_per_iteration(tmp_path: Path, count: int, busy_s: float = 0.0) -> Path:
    """``count`` records, the k-th appended after k loop iterations (each kept busy ``busy_s``),
    through a sealed file log; the file."""
    path = tmp_path / "audit.jsonl"
    priv, _ = make_keys(tmp_path)
    log = AuditLog(file_cfg(path, signing_key=priv), replica="gk-0")
    await log.start()

    async def after(iterations: int, i: int) -> dict:
        for _ in range(iterations):
            if busy_s:
                time.sleep(busy_s)  # an iteration that keeps the loop busy
            await asyncio.sleep(0)
        return await log.append(body(i))

    recs = await asyncio.gather(*(after(k, k) for k in range(count)))
    await log.close()
    assert [r["seq"] for r in recs] == list(range(1, count + 1))
    assert verify_files([str(path)]).records == count
    return path


async def test_settling_stops_after_its_iterations_while_records_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A steady stream of records does not hold a commit back for more than SETTLE_ITERATIONS."""
    from gatekeeper.audit import log as log_module
    from gatekeeper.audit.log import SETTLE_ITERATIONS

    monkeypatch.setattr(log_module, "SETTLE_MAX_S", 60.0)
    ends = commit_ends(await records_one_per_iteration(tmp_path, 3 * SETTLE_ITERATIONS))
    # The first commit took the first iteration's record and those of at most
    # SETTLE_ITERATIONS more; the rest went in later commits.
    assert len(ends) >= 2 and ends[0] <= SETTLE_ITERATIONS + 1, ends


async def test_settling_stops_after_settle_max_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow loop iterations end the wait after SETTLE_MAX_S, however many records come."""
    from gatekeeper.audit import log as log_module

    monkeypatch.setattr(log_module, "SETTLE_MAX_S", 0.005)
    ends = commit_ends(await records_one_per_iteration(tmp_path, 12, busy_s=0.002))
    # 2 ms per iteration against a 5 ms limit: the first commit went after at most 3 iterations
    # (far fewer than SETTLE_ITERATIONS), so later records waited for a commit of their own.
    assert len(ends) >= 2 and ends[0] <= 4, ends


async def test_records_carry_chain_fields_and_the_file_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(file_cfg(path), replica="gk-0")
    await log.start()
    first = await log.append(body(1))
    second = await log.append(body(2))
    await log.close()
    assert first["seq"] == 1 and first["prev_hash"] == ZERO_HASH and first["v"] == 1
    assert first["replica"] == "gk-0" and first["ts"].endswith("Z") and len(first["ts"]) == 27
    assert second["seq"] == 2 and second["prev_hash"] == first["hash"]
    unhashed = {k: v for k, v in second.items() if k != "hash"}
    assert second["hash"] == chain_hash(first["hash"], unhashed)
    assert read_lines(path) == [canonical(first) + b"\n", canonical(second) + b"\n"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"
    report = verify_files([str(path)])
    assert report.ok and report.records == 2


async def test_concurrent_appends_share_one_fsync(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log, sink = await started_file_log(path)
    before = metrics.AUDIT_RECORDS.labels(sink="file")._value.get()
    recs = await asyncio.gather(*(log.append(body(i)) for i in range(200)))
    await log.close()
    assert sorted(r["seq"] for r in recs) == list(range(1, 201))
    # group commit: far fewer write+fsync calls than records
    assert sink.batches <= 10, sink.batches
    assert metrics.AUDIT_RECORDS.labels(sink="file")._value.get() - before == 200
    assert verify_files([str(path)]).records == 200


async def test_event_loop_keeps_running_during_fsync(tmp_path: Path) -> None:
    log = AuditLog(file_cfg(tmp_path / "a.jsonl"), replica="gk-0")
    await log.start()
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    for i in range(20):
        await log.append(body(i))
    stop = True
    await t
    await log.close()
    assert ticks >= 20  # the loop ran while every append waited for its fsync


async def test_resume_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for round_ in range(3):
        log = AuditLog(file_cfg(path), replica="gk-0")
        await log.start()
        await asyncio.gather(*(log.append(body(round_ * 10 + i)) for i in range(10)))
        await log.close()
    recs = records_of(path)
    assert [r["seq"] for r in recs] == list(range(1, 31))
    assert verify_files([str(path)]).ok


async def test_torn_last_line_is_reported_and_the_chain_continues_after_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(file_cfg(path), replica="gk-0")
    await log.start()
    for i in range(3):
        await log.append(body(i))
    await log.close()
    with open(path, "ab") as f:
        f.write(b'{"v":1,"seq":4,"decision_id":"d0000')  # a crash mid-write
    before = verify_files([str(path)])
    assert not before.ok and before.torn_tail and before.intact and before.records == 3
    assert before.first_error is not None and before.first_error.startswith(f"{path}:4:")

    log = AuditLog(file_cfg(path), replica="gk-0")
    await log.start()
    assert log.resumed is not None and log.resumed.torn == f"{path}:4"
    rec = await log.append(body(9))
    await log.close()
    assert rec["seq"] == 4
    after = verify_files([str(path)])
    assert after.ok and after.records == 4 and after.torn_lines == [f"{path}:4"]


async def test_seals_follow_every_group_commit(tmp_path: Path) -> None:
    priv, pub = make_keys(tmp_path)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(file_cfg(path, signing_key=priv), replica="gk-7")
    await log.start()
    await asyncio.gather(*(log.append(body(i)) for i in range(50)))
    await log.append(body(99))
    await log.close()
    objs = [json.loads(raw) for raw in read_lines(path)]
    assert objs[-1]["type"] == "seal" and objs[-1]["seq"] == 51
    assert objs[-1]["hash"] == objs[-2]["hash"] and objs[-1]["replica"] == "gk-7"
    assert objs[-1]["sig"].startswith("ed25519:")
    report = verify_files([str(path)], public_key=pub)
    assert report.ok and report.records == 51 and 2 <= report.seals <= 51
    assert report.unsealed_after is None


async def test_backlog_is_bounded(tmp_path: Path) -> None:
    log = AuditLog(file_cfg(tmp_path / "a.jsonl"), replica="gk-0", max_pending=5)
    await log.start()
    results = await asyncio.gather(*(log.append(body(i)) for i in range(20)),
                                   return_exceptions=True)  # fmt: skip
    await log.close()
    refused = [r for r in results if isinstance(r, DependencyError)]
    assert refused and all(r.reason == "audit-unavailable" for r in refused)
    written = [r for r in results if isinstance(r, dict)]
    assert [r["seq"] for r in written] == list(range(1, len(written) + 1))


async def test_append_after_close_is_refused(tmp_path: Path) -> None:
    log = AuditLog(file_cfg(tmp_path / "a.jsonl"), replica="gk-0")
    await log.start()
    await log.close()
    with pytest.raises(DependencyError):
        await log.append(body(1))


async def test_hostile_strings_are_scrubbed_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(file_cfg(path), replica="gk-0")
    await log.start()
    rec = await log.append({"decision_id": "x", "http": {"path": "/\ud800\x00\u202e", "ms": 1e-9}})
    await log.close()
    assert rec["http"]["path"] == "/?\x00\u202e"
    assert verify_files([str(path)]).ok


async def test_stdout_sink_gets_the_same_lines(tmp_path: Path) -> None:
    out_path = tmp_path / "stdout.bin"
    with open(out_path, "wb") as out:
        log = AuditLog(AuditConfig(), replica="gk-0", sinks=[StdoutSink(out=out)])
        await log.start()
        await log.append(body(1))
        await log.close()
    assert verify_files([str(out_path)]).ok


async def test_buffered_durability_writes_without_fsync(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(file_cfg(path, durability="buffered"), replica="gk-0")
    assert isinstance(log.sinks[0], FileSink) and log.sinks[0].fsync is False
    await log.start()
    t = time.perf_counter()
    for i in range(50):
        await log.append(body(i))
    assert time.perf_counter() - t < 5
    await log.close()
    assert verify_files([str(path)]).records == 50


async def test_a_second_writer_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    first = AuditLog(file_cfg(path), replica="gk-0")
    await first.start()
    await first.append(body(1))
    second = AuditLog(file_cfg(path), replica="gk-1")
    with pytest.raises(ConfigError, match="per-replica files"):
        await second.start()
    await first.append(body(2))
    await first.close()
    assert verify_files([str(path)]).records == 2


async def test_cancelled_caller_still_gets_its_record_written(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(file_cfg(path), replica="gk-0")
    await log.start()
    task = asyncio.create_task(log.append(body(1)))
    await asyncio.sleep(0)
    task.cancel()
    await log.append(body(2))
    await log.close()
    assert [r["decision_id"] for r in records_of(path)] == ["d000001", "d000002"]
