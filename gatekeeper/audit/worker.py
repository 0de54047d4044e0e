"""The one thread per sink that runs its blocking calls, in order, for the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import queue
import threading
from collections.abc import Callable
from typing import Any


class SinkError(Exception):
    """A sink could not store a batch; ``str()`` says why (no secrets in it)."""


_Job = tuple[
    Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop, bool
]


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class WorkerDied(OSError):
    """The sink's thread ended in the middle of a call (the call and those queued behind it
    fail with this; the next call starts a new thread)."""

    def __init__(self, why: str) -> None:
        super().__init__(errno.EIO, why)


class Worker:
    """One thread that runs a sink's blocking calls in order, for the event loop.

    Cheaper per call than ``run_in_executor`` (no concurrent.futures Future, no chained-future
    callbacks, one ``call_soon_threadsafe`` per call), which matters once per group commit. Like a
    pool's work item, a call whose future was cancelled before it started is skipped (the file
    sink's writes run with ``always``, so none of them is skipped). The thread is a daemon started
    on first use; ``stop`` ends it (the next call starts a new one). A call that raises something
    that is not an ``Exception`` (``SystemExit`` and the like) ends the thread: that call and
    every call queued behind it fail with ``WorkerDied``, and the next call starts a new thread.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # run() against a dying thread's last look at the queue

    def run(self, fn: Callable[..., Any], *args: Any, always: bool = False) -> asyncio.Future[Any]:
        """The future of ``fn(*args)`` on the thread. ``always``: the call runs even when the
        future is cancelled first (as under ``asyncio.shield``, without its second future);
        a cancelled future then just takes no result."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
            self._jobs.put((fn, args, fut, loop, always))
        return fut

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, fut, loop, always = job
            if not always and fut.cancelled():
                continue
            result: Any = None
            exc: BaseException | None = None
            try:
                result = fn(*args)
            except Exception as e:  # handed to the awaiting coroutine, as an executor does
                exc = e
            except BaseException as e:  # the thread dies: this call and the queued ones fail
                died = WorkerDied(f"{self.name} thread died: {type(e).__name__}")
                self._die(job, died)
                return
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, fut, result, exc)
            del job, fn, args, fut, result, exc  # drop references while idle

    def _die(self, job: _Job, died: WorkerDied) -> None:
        with self._lock:
            if self._thread is threading.current_thread():
                self._thread = None
            failed = [job]
            while True:
                try:
                    queued = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if queued is not None:
                    failed.append(queued)
        for _, _, fut, loop, _ in failed:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, fut, None, died)

    def stop(self) -> None:
        """End the thread after the calls queued so far (blocks until they are done)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._jobs.put(None)
        if thread is not None:
            thread.join()
