"""The audit file sink.

File sink. A batch is one ``write`` (looped over short writes) followed, with ``durability:
fsync``, by one ``fsync``; ``buffered`` skips the fsync, which survives a crash of the gate but
not of the machine. Everything that touches the file (opening, the write and fsync of each
batch, rotation, cutting back, the final fsync at close) runs on one dedicated thread per file,
in the order the event loop asked for it, so the loop never waits on the disk and batches reach
the file in chain order; while one batch is on its way to the disk the next one collects in
the log (group commit), and a batch queued behind it starts the moment its fsync returns.

The thread alone knows what is durable: the end of the last batch whose write *and* fsync
returned. If anything fails on the way (opening, a write or short write, the fsync, a rotation,
the thread's own death; disk full, permission, I/O error) the batch is not durable, the file is
cut back to the last durable batch (at once if the disk allows, else before anything else is
written), and a required sink refuses every batch until ``recover()``: ``AuditLog`` may already
have queued the next batch, chained on the one that failed, and writing it would break the
chain on disk. ``AuditLog`` calls ``recover()`` only when nothing is in flight and it has
re-chained from its last durable record, which is exactly where the file now ends. That is the
only truncation there is; rotation renames (``files.next_segment``), it never truncates or
deletes. The live file and its directory are fsynced after a rotation. ``DiskOps`` holds the
system calls of a batch, so tests can fail each of them for real.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Sequence
from typing import Any

from gatekeeper import metrics
from gatekeeper.audit import files, notes
from gatekeeper.audit.verify import ChainTail, TailError, read_tail
from gatekeeper.audit.worker import SinkError, Worker


class FileInUse(OSError):
    """Another process holds the audit file: two writers would fork one chain."""


class DiskOps:
    """The system calls a file sink makes on its open file, in one place.

    The fault-injection tests give a sink a subclass that fails some of them (ENOSPC, EIO, short
    writes, a thread that dies); everything else the sink does is the real thing.
    """

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)


class FileSink:
    """Append-only JSONL file with group-commit fsync and size rotation (module docstring).

    Every call that touches the file runs on the sink's one thread, in the order the event loop
    made them; ``_durable`` (the end of the last batch that is on the disk) and ``_broken`` are
    only changed there, so the state that decides what is cut is never raced.
    """

    kind = "file"

    def __init__(
        self,
        path: str,
        *,
        rotate_bytes: int = 104_857_600,
        fsync: bool = True,
        required: bool = True,
        ops: DiskOps | None = None,
    ) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.fsync = fsync
        self.required = required
        self.ops = ops or DiskOps()
        self._fd: int | None = None
        self._durable = 0  # end of the last durable batch in the live file
        self._prev_durable = 0  # ... and its start (for rollback)
        self._dirty = False  # bytes after _durable may exist (a failed or rolled-back batch)
        self._broken = False  # a batch failed: refuse batches until recover()
        self.batches = 0  # successful write(+fsync) calls: the group-commit count
        # A moving mean of the thread's write (+ fsync) time per batch, in seconds (0 before the
        # first): how long a batch handed to the thread now will keep it busy (AuditLog's lag).
        self.batch_seconds = 0.0
        self._worker = Worker("gk-audit-file")

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await self._worker.run(fn, *args)

    # -- chain state on disk
    def tail(self) -> ChainTail:
        """The chain state at the end of the existing files (verified); ``TailError`` if bad."""
        return read_tail(files.chain_files(self.path))

    async def resume(self) -> tuple[ChainTail, dict[str, Any] | None]:
        """Lock the live file and find where its chain stands, before the first write.

        A chain that does not verify is moved aside untouched while the lock is held
        (``notes.move_aside``); the answer is then an empty tail and the ``chain-break`` note
        the new chain starts with. A folder that cannot be opened yet is left to ``open()``
        (the gate starts not ready and the probe retries).
        """
        return await self._run(self._resume_sync)  # type: ignore[no-any-return]

    def _resume_sync(self) -> tuple[ChainTail, dict[str, Any] | None]:
        try:
            self._lock_sync()
        except FileInUse:  # another writer: the caller refuses to start
            raise
        except OSError:  # not usable yet (no folder, permissions): open() reports, probe retries
            pass
        try:
            tail = self.tail()
        except TailError as exc:
            if self._fd is None:
                raise OSError(errno.EACCES, f"cannot move the broken chain aside: {exc}") from exc
            note = notes.move_aside(self.path, str(exc))
            old, self._fd = self._fd, None
            try:
                self._lock_sync()  # the new live file, locked before the old lock goes
            finally:
                os.close(old)
            return ChainTail(), note
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._end_torn_or_close()
        return tail, None

    async def open(self) -> None:
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        if self._fd is None:
            self._lock_sync()
            self._end_torn_or_close()

    def _end_torn_or_close(self) -> None:
        try:
            self._end_torn_sync()
        except OSError:
            assert self._fd is not None
            os.close(self._fd)  # no write may follow a torn line: open() tries again later
            self._fd = None
            raise

    def _lock_sync(self) -> None:
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        # SECURITY: audit files are not world-readable (they name tenants and entities).
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # one writer per chain
            size = os.fstat(fd).st_size
        except BlockingIOError:
            os.close(fd)
            msg = f"{self.path} is written by another process (workers > 1 need per-replica files)"
            raise FileInUse(errno.EBUSY, msg) from None
        except OSError:
            os.close(fd)
            raise
        self._fd, self._durable, self._prev_durable, self._dirty = fd, size, size, False

    def _end_torn_sync(self) -> None:
        """A torn last line (crash mid-write): end it so the next record starts on a line of its
        own; the verifier reports it and the chain links across it."""
        fd = self._fd
        assert fd is not None
        if self._durable:
            with open(self.path, "rb") as f:
                f.seek(self._durable - 1)
                last = f.read(1)
            if last != b"\n":
                os.write(fd, b"\n")
                os.fsync(fd)
                self._durable += 1
                self._prev_durable = self._durable

    async def write(self, lines: Sequence[bytes]) -> None:
        # Run whatever happens (``always``): a commit that stops waiting must not leave its batch
        # unwritten while the batches queued behind it are written (the thread runs every write).
        try:
            seconds = await self._worker.run(self._commit_sync, b"".join(lines), always=True)
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc.strerror or exc}") from exc
        # Observed here, on the event loop: histogram cells are not for other threads.
        metrics.buffered(metrics.AUDIT_FSYNC_SECONDS).observe(seconds)
        self.batch_seconds += (seconds - self.batch_seconds) * 0.125

    def _commit_sync(self, data: bytes) -> float:
        """Write one batch and (``durability: fsync``) fsync it; how long that took.

        Any failure, at any point (opening, cutting, rotating, a short or failed write, the
        fsync, the thread's death), leaves ``_durable`` where it was and the sink dirty (the
        batch's bytes are cut, now or before the next write) and, when required, broken: the
        log may have chained the next batch on this one already, and it must not be written.
        """
        if self._broken:
            raise OSError(errno.EIO, "an earlier batch failed (not written)")
        try:
            self._prepare_sync(len(data))
            fd = self._fd
            assert fd is not None
            start = self._durable
            self._dirty = True
            started = time.perf_counter()
            self._write_all(fd, data)
            if self.fsync:
                self.ops.fsync(fd)
            seconds = time.perf_counter() - started
        except Exception:
            self._broken = self.required
            self._dirty = True
            with contextlib.suppress(OSError):
                self._cut_sync()  # what the disk allows now; else before the next write
            raise
        except BaseException:  # the thread dies: the next thread cuts before it writes
            self._broken = self.required
            self._dirty = True
            raise
        self._prev_durable, self._durable, self._dirty = start, start + len(data), False
        self.batches += 1
        return seconds

    def _rotation_due(self, size: int) -> bool:
        return self._durable > 0 and self._durable + size > self.rotate_bytes

    def _prepare_sync(self, size: int) -> None:
        """Open the file, cut what a failed batch left, rotate when due (on the thread)."""
        self._open_sync()
        self._cut_sync()
        if self._rotation_due(size):
            self._rotate_sync()

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.ops.write(fd, view)  # a short write (disk almost full) loops
            if n <= 0:  # write(2) reports errors by raising; 0 would loop forever
                raise OSError(errno.EIO, "write wrote nothing")
            view = view[n:]

    def _rotate_sync(self) -> None:
        assert self._fd is not None
        self.ops.fsync(self._fd)
        target = files.next_segment(self.path)
        os.rename(self.path, target)
        os.close(self._fd)
        self._fd = None
        self._open_sync()
        dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)  # make the rename and the new file durable
        finally:
            os.close(dfd)

    async def rollback(self) -> None:
        """Undo the last successful batch (a later required sink failed; one commit in flight).

        After a rotation the batch is alone in the fresh live file and ``_prev_durable`` is 0.
        """
        with contextlib.suppress(OSError):
            await self._run(self._rollback_sync)

    def _rollback_sync(self) -> None:
        self._durable, self._dirty = self._prev_durable, True
        self._cut_sync()

    def _cut_sync(self) -> None:
        """Truncate the live file to the last durable batch, if anything may follow it."""
        if self._fd is not None and self._dirty:
            self.ops.ftruncate(self._fd, self._durable)
            self.ops.fsync(self._fd)
            self._dirty = False

    async def recover(self) -> None:
        """Take batches again after a failed write (the log has re-chained from its last durable
        record); what the failed batch left behind is cut before the next write."""
        await self._run(self._recover_sync)

    def _recover_sync(self) -> None:
        self._broken = False

    async def probe(self) -> bool:
        """Can the next batch be written? (file open, leftovers cut, some space free)"""
        try:
            return bool(await self._run(self._probe_sync))
        except OSError:
            return False

    def _probe_sync(self) -> bool:
        self._open_sync()
        self._cut_sync()
        assert self._fd is not None
        st = os.fstatvfs(self._fd)
        return st.f_bavail * st.f_frsize >= 64 * 1024

    async def close(self) -> None:
        def _close() -> None:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    if self._dirty:
                        os.ftruncate(self._fd, self._durable)
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

        with contextlib.suppress(OSError):
            await self._run(_close)
        self._worker.stop()
