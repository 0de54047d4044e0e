"""The audit file's fsync process (``syncer.py``, ``fsync_helper.py``): real processes, real files.

What it must do: answer every request in order, share one fsync among requests that arrive
together, reopen the live file after a rotation, report a failed fsync's errno, fail every
waiting request when it dies (and start again on the next), ignore bytes that are not requests,
and leave no process behind.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gatekeeper.audit.fsync_helper import REPLY
from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.sinks import FileSink, SinkError
from gatekeeper.audit.syncer import HELPER, Syncer
from gatekeeper.audit.verify import verify_files
from tests.audit.helpers import body, file_cfg


async def held_file(pid: int) -> str:
    """The audit file the fsync process holds open (from /proc), once it has opened one."""
    for _ in range(500):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.endswith(".jsonl"):
                return target
        await asyncio.sleep(0.01)
    raise AssertionError("the fsync process holds no audit file")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stopped_syncer(tmp_path: Path) -> tuple[Syncer, int]:
    """An fsync process for a fresh file, started and then stopped: requests queue in its pipe."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"x\n")
    syncer = Syncer(str(path))
    syncer.start()
    assert syncer.pid is not None
    os.kill(syncer.pid, signal.SIGSTOP)
    return syncer, syncer.pid


async def test_requests_are_answered_in_order_and_share_fsyncs(tmp_path: Path) -> None:
    syncer, pid = stopped_syncer(tmp_path)  # ten requests arrive while it is stopped: one fsync
    answers = [syncer.request(reopen=False) for _ in range(10)]
    await asyncio.sleep(0.05)
    assert not any(a.done() for a in answers)
    os.kill(pid, signal.SIGCONT)
    seconds = await asyncio.wait_for(asyncio.gather(*answers), 10)
    assert all(s >= 0 for s in seconds)
    assert len(set(seconds)) == 1  # one fsync answered all ten
    await syncer.close()
    assert gone(pid) and syncer.pid is None


async def test_a_failed_fsync_answers_its_errno(tmp_path: Path) -> None:
    syncer = Syncer("/dev/null")  # fsync(2) on a character device fails with EINVAL
    syncer.start()
    with pytest.raises(OSError) as err:
        await asyncio.wait_for(syncer.request(reopen=False), 10)
    assert err.value.errno == errno.EINVAL
    missing = Syncer(str(tmp_path / "missing.jsonl"))  # cannot open: every request fails
    with pytest.raises(OSError) as err:
        await asyncio.wait_for(missing.request(reopen=False), 10)
    assert err.value.errno == errno.ENOENT
    await syncer.close()
    await missing.close()


async def test_a_dead_process_fails_the_waiting_requests_and_the_next_one_restarts(
    tmp_path: Path,
) -> None:
    syncer, first = stopped_syncer(tmp_path)
    waiting = [syncer.request(reopen=False) for _ in range(3)]
    os.kill(first, signal.SIGKILL)
    for answer in waiting:
        with pytest.raises(OSError) as err:
            await asyncio.wait_for(answer, 10)
        assert err.value.errno == errno.EIO
    assert syncer.pid is None and gone(first)
    assert await asyncio.wait_for(syncer.request(reopen=False), 10) >= 0
    assert syncer.pid not in (None, first)
    await syncer.close()


def test_the_helper_ignores_bytes_that_are_not_requests_and_exits_on_eof(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"")
    hostile = bytes(range(256)) * 64 + b"\x00" * 100_000  # one 's' and one 'r' per 256 bytes
    out = subprocess.run(
        [sys.executable, "-I", "-S", str(HELPER), str(path)],
        input=hostile,
        capture_output=True,
        timeout=60,
        check=True,
    )
    replies = [REPLY.unpack_from(out.stdout, i) for i in range(0, len(out.stdout), REPLY.size)]
    assert len(out.stdout) % REPLY.size == 0
    assert len(replies) == hostile.count(b"s") == 64
    assert all(code == 0 for code, _ in replies)
    assert out.stderr == b""
    usage = subprocess.run([sys.executable, str(HELPER)], capture_output=True, timeout=60)
    assert usage.returncode == 2 and b"usage" in usage.stderr


async def test_after_a_rotation_the_process_holds_the_live_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(str(path), rotate_bytes=4096)
    log = AuditLog(file_cfg(path), replica="gk-0", sinks=[sink])
    await log.start()
    assert sink.syncer is not None and sink.syncer.pid is not None
    pid = sink.syncer.pid
    assert await held_file(pid) == str(path)
    for i in range(40):  # several rotations
        await log.append(body(i))
    segments = sorted(p.name for p in tmp_path.glob("audit.jsonl*"))
    assert len(segments) > 2, segments
    assert await held_file(pid) == str(path)  # the live file, not a rotated segment
    await log.close()
    assert gone(pid)
    report = verify_files(sorted(str(p) for p in tmp_path.glob("audit.jsonl*")))
    assert report.records == 40, report.summary()


async def test_a_failed_fsync_fails_the_batch_and_the_file_is_cut_back(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(str(path))
    log = AuditLog(file_cfg(path), replica="gk-0", sinks=[sink])
    await log.start()
    kept = await log.append(body(0))
    size = path.stat().st_size
    assert sink.syncer is not None
    await sink.syncer.close()
    sink.syncer.path = "/dev/null"  # the next fsync process's fsync fails (EINVAL)
    with pytest.raises(Exception, match="audit write failed"):
        await log.append(body(1))
    assert not log.healthy()
    with pytest.raises(SinkError, match="earlier batch failed"):
        await sink.write([b"{}\n"])  # refused until the log re-chains
    await sink.syncer.close()
    sink.syncer.path = str(path)  # the disk is back
    after = await asyncio.wait_for(log.append(body(2)), 10)
    assert (after["seq"], after["prev_hash"]) == (2, kept["hash"])
    await log.close()
    assert path.stat().st_size > size
    report = verify_files([str(path)])
    assert report.ok and report.records == 2, report.summary()
