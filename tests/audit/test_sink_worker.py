"""The file sink's worker thread: calls run in order, errors reach the caller, stop and restart."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gatekeeper.audit.sinks import Worker


async def test_calls_run_in_order_on_one_thread_and_errors_propagate() -> None:
    worker = Worker("gk-test")
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 2

    def boom() -> None:
        raise OSError(28, "No space left on device")

    results = await asyncio.gather(*(worker.run(job, i) for i in range(20)))
    assert results == [i * 2 for i in range(20)]
    assert [i for i, _ in seen] == list(range(20)) and {n for _, n in seen} == {"gk-test"}
    with pytest.raises(OSError, match="No space"):
        await worker.run(boom)
    worker.stop()
    assert await worker.run(job, 21) == 42  # a stopped worker starts a new thread
    worker.stop()


async def test_a_call_cancelled_before_it_starts_is_skipped() -> None:
    worker = Worker("gk-test")
    gate = threading.Event()
    ran: list[int] = []
    first = worker.run(gate.wait, 5)
    second = worker.run(ran.append, 1)
    second.cancel()
    gate.set()
    assert await first is True
    assert await worker.run(ran.append, 2) is None
    assert ran == [2]
    worker.stop()


async def test_a_call_run_always_is_not_skipped_when_cancelled() -> None:
    """What the file sink's writes rely on: a commit that stops waiting still writes its batch
    before the batches queued behind it, and the cancelled future takes no result."""
    worker = Worker("gk-test")
    gate = threading.Event()
    ran: list[int] = []

    def fail(i: int) -> None:
        ran.append(i)
        raise OSError(5, "I/O error")

    first = worker.run(gate.wait, 5)
    second = worker.run(ran.append, 1, always=True)
    third = worker.run(fail, 2, always=True)
    second.cancel()
    third.cancel()
    gate.set()
    assert await first is True
    assert await worker.run(ran.append, 3) is None
    assert ran == [1, 2, 3]
    assert second.cancelled() and third.cancelled()
    worker.stop()


def test_a_closed_loop_does_not_kill_the_thread() -> None:
    worker = Worker("gk-test")
    gate = threading.Event()

    async def leave() -> None:
        worker.run(gate.wait, 5)  # nobody waits for it; the loop closes first

    asyncio.run(leave())
    gate.set()

    async def again() -> int:
        return int(await worker.run(len, "abc"))

    assert asyncio.run(again()) == 3
    worker.stop()


async def test_a_dying_thread_fails_its_call_and_the_queued_ones_then_restarts() -> None:
    from gatekeeper.audit.worker import WorkerDied
    from tests.audit.disks import ThreadDeath

    worker = Worker("gk-test")
    gate = threading.Event()
    names: list[str] = []

    def die() -> None:
        gate.wait(5)
        names.append(threading.current_thread().name)
        raise ThreadDeath

    dying = worker.run(die)
    queued = [worker.run(names.append, "never") for _ in range(3)]
    gate.set()
    for fut in (dying, *queued):
        with pytest.raises(WorkerDied, match="gk-test thread died: ThreadDeath"):
            await fut
    assert names == ["gk-test"]  # the queued calls never ran
    assert await worker.run(len, "abcd") == 4  # a new thread takes the next call
    worker.stop()
