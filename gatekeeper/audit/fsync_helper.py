"""The audit file's fsync process: ``python -I -S fsync_helper.py <path>`` (started by ``Syncer``).

Why a process and not a thread: a thread that fsyncs must take the gate's GIL three times per
group commit (to wake, after the write, after the fsync) from an event loop that holds it while
it works, and every hand-off costs context switches on the loop's CPU. This process has its own
interpreter, so the loop only writes one byte to ask and reads a few bytes of answer
(``syncer.py`` has the figures).

Protocol (stdin to stdout, in order; stdlib only, so ``-S`` can skip site-packages):

* ``s`` — fsync the file; answer ``REPLY`` = errno (0 = durable) and the fsync's microseconds.
  Requests that arrive together share one fsync: each was sent after its bytes were written, so
  one fsync that starts after all of them covers them all.
* ``r`` — the gate rotated or reopened the file: reopen ``path`` (the live file) before the
  requests that follow; the ones before it were for the old file.

The process ignores SIGINT and SIGTERM (a Ctrl-C to the gate's process group must not kill it
before the gate's last commit) and exits when stdin closes: at the gate's ``close``, or when the
gate dies.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time

REPLY = struct.Struct("<BI")  # errno (0 = ok), fsync microseconds (saturating)
SYNC = b"s"[0]
REOPEN = b"r"[0]


def _code(exc: OSError) -> int:
    """The errno to answer (one byte, never 0: 0 means durable)."""
    return (exc.errno or 5) & 0xFF or 5


def _fsync(fd: int) -> tuple[int, int]:
    started = time.perf_counter()
    try:
        os.fsync(fd)
        code = 0
    except OSError as exc:
        code = _code(exc)
    micros = min(int((time.perf_counter() - started) * 1e6), 0xFFFFFFFF)
    return code, micros


def serve(path: str, inp: int = 0, out: int = 1) -> None:
    """Answer requests from ``inp`` on ``out`` until ``inp`` closes."""
    fd = -1
    opened: int | None = None  # errno of a failed (re)open: every sync fails until the next one

    def reopen() -> None:
        nonlocal fd, opened
        if fd >= 0:
            os.close(fd)
            fd = -1
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            opened = None
        except OSError as exc:
            opened = _code(exc)

    def answer(waiting: int, reply: bytearray) -> None:
        code, micros = (opened, 0) if opened is not None else _fsync(fd)
        reply += REPLY.pack(code, micros) * waiting

    reopen()
    while True:
        try:
            data = os.read(inp, 65536)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for old runtimes
            continue
        if not data:
            return
        reply = bytearray()
        waiting = 0
        for byte in data:
            if byte == REOPEN:
                if waiting:
                    answer(waiting, reply)
                    waiting = 0
                reopen()
            elif byte == SYNC:
                waiting += 1
        if waiting:
            answer(waiting, reply)
        view = memoryview(reply)
        while view:
            view = view[os.write(out, view) :]


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(sys.argv) != 2:
        print("usage: fsync_helper.py PATH", file=sys.stderr)
        return 2
    try:
        serve(sys.argv[1])
    except BrokenPipeError:  # the gate is gone
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
