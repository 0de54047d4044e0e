"""The event loop's side of the audit file's fsync process (``fsync_helper.py``).

``FileSink`` with ``durability: fsync`` writes each group commit into the page cache from the
event loop (one ``write``: microseconds, and the page cache never holds more than a commit or
two unsynced) and asks this process to fsync it: one byte down a pipe; the answer comes back
on another pipe that the loop watches like a socket. Requests sent while an fsync runs are
answered together by the next one.

Why not the sink's thread, as before: the thread had to take the GIL from a busy event loop
three times per commit, and each hand-off cost wake-ups and context switches on the loop's CPU.
Measured with ``bench/ab.py`` (gate against gate on one stack, 2 workers pinned, 2026-11-27):
req/s +6.1% at 32 connections (95% interval -2.6..+10.8%, faster in 7 of 8 pairs), machine
CPU per request -5.0%; at 64 connections no change (+0.1%). ``bench/README.md`` has the runs.

Failure: a failed fsync answers its errno, which ``FileSink`` raises as ``SinkError``. If the
process dies, every waiting request fails (``OSError(EIO)``) and the next request starts a new
one; the sink then treats the batches as failed (cut back, re-chained), as after a failed write.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

from gatekeeper.audit.fsync_helper import REPLY

HELPER = Path(__file__).with_name("fsync_helper.py")


class Syncer:
    """One fsync process for one file path (module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._proc: subprocess.Popen[bytes] | None = None
        self._to: int = -1  # requests (the helper's stdin)
        self._from: int = -1  # answers (the helper's stdout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[asyncio.Future[float]] = deque()
        self._buf = bytearray()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the process (no-op when it runs); raises ``OSError`` if it cannot."""
        if self._proc is not None:
            return
        loop = asyncio.get_running_loop()
        # -I -S: no environment, no site-packages (the helper needs only the standard library);
        # it starts in ~10 ms and holds one read-only descriptor of the audit file.
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(HELPER), self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        self._to = os.dup(proc.stdin.fileno())
        self._from = os.dup(proc.stdout.fileno())
        proc.stdin.close()
        proc.stdout.close()
        os.set_blocking(self._to, False)
        os.set_blocking(self._from, False)
        self._proc, self._loop = proc, loop
        loop.add_reader(self._from, self._readable)

    def request(self, *, reopen: bool) -> asyncio.Future[float]:
        """Ask for an fsync of everything written so far (after reopening the path when the
        file was rotated or reopened): a future of the fsync's seconds, or ``OSError``."""
        self.start()
        assert self._loop is not None
        fut: asyncio.Future[float] = self._loop.create_future()
        try:
            # Never blocks: the pipe holds 64 KiB of one-byte requests and at most a few wait.
            sent = os.write(self._to, b"rs" if reopen else b"s")
        except BlockingIOError:
            fut.set_exception(OSError(errno.EIO, "fsync process is not reading"))
            return fut
        except OSError as exc:  # BrokenPipeError: it died; the reader fails the rest
            fut.set_exception(OSError(errno.EIO, f"fsync process is gone: {exc.strerror}"))
            self._stop()
            return fut
        if sent != (2 if reopen else 1):  # pragma: no cover - a pipe write this small is atomic
            fut.set_exception(OSError(errno.EIO, "short write to the fsync process"))
            return fut
        self._waiting.append(fut)
        return fut

    def _readable(self) -> None:
        try:
            data = os.read(self._from, 65536)
        except BlockingIOError:  # pragma: no cover - spurious wake-up
            return
        except OSError:
            data = b""
        if not data:
            self._stop()
            return
        self._buf += data
        size = REPLY.size
        whole = len(self._buf) - len(self._buf) % size
        for offset in range(0, whole, size):
            code, micros = REPLY.unpack_from(self._buf, offset)
            if not self._waiting:  # pragma: no cover - the helper answers only what was asked
                break
            fut = self._waiting.popleft()
            if fut.done():
                continue
            if code:
                fut.set_exception(OSError(code, os.strerror(code)))
            else:
                fut.set_result(micros / 1e6)
        del self._buf[:whole]

    def _stop(self) -> None:
        """Forget the process (it exited or must go): every waiting request fails."""
        proc, self._proc = self._proc, None
        if self._loop is not None and self._from >= 0:
            self._loop.remove_reader(self._from)
        for fd in (self._to, self._from):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to = self._from = -1
        self._buf.clear()
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(OSError(errno.EIO, "fsync process exited"))
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)  # it has exited or was just killed: this does not wait

    async def close(self) -> None:
        """Let the process answer what was asked, then end it (stdin closes, it exits)."""
        if self._proc is None:
            return
        waiting = [f for f in self._waiting if not f.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=30)
        with contextlib.suppress(OSError):
            os.close(self._to)
        self._to = -1
        proc = self._proc
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, 5)
        self._stop()
