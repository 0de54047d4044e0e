"""Where audit lines go: a file (group-commit fsync, rotation), a Redis stream, stdout.

Every sink receives whole group-commit batches (``list[bytes]``, each line ending in ``\\n``) and
either stores all of them or raises ``SinkError``. ``AuditLog`` writes to the file sinks first,
so a record reaches Redis or stdout only once it is on disk.

File sink. A batch is one ``write`` (looped over short writes) followed, with ``durability:
fsync``, by one ``fsync``; ``buffered`` skips the fsync, which survives a crash of the gate but
not of the machine. With ``fsync`` the event loop writes the batch into the page cache itself
(microseconds) and the fsync runs in a small process of its own (``syncer.py``: one byte to ask,
a few to answer, no GIL shared with the loop); batches are written in chain order and a batch
counts as stored only when its fsync has answered. Everything else that may block (opening,
rotation, cutting back, ``buffered`` writes, the final fsync at close) runs on one dedicated
thread per file, so the loop never waits on the disk's latency. If a write or fsync fails (disk
full, permission, I/O error) the file is cut back to the end of the last good batch before
anything else is written: the failed batch never joins the chain, nor does any batch written
after it. That is the only truncation there is; rotation renames (``files.next_segment``), it
never truncates or deletes. The live file and its directory are fsynced after a rotation. After
a failed write a required file sink refuses every batch until ``recover()``: ``AuditLog`` may
already have queued the next batch, chained on the one that failed, and writing it would break
the chain on disk.

Redis stream sink. ``XADD <stream> MAXLEN ~ <maxlen> * data <line>`` for records and seals alike
(the seals are an off-host anchor), in one MULTI/EXEC per batch. Delivery to the stream is
at-least-once: when Redis fails after applying a batch, that batch is rolled back in the file and
its ``seq`` numbers are used again, so stream consumers identify records by (replica, seq, hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gatekeeper import metrics
from gatekeeper.audit import files
from gatekeeper.audit.record import ZERO_HASH, canonical, chain_hash
from gatekeeper.audit.syncer import Syncer
from gatekeeper.audit.verify import ChainTail, TailError, read_tail


class SinkError(Exception):
    """A sink could not store a batch; ``str()`` says why (no secrets in it)."""


class FileInUse(OSError):
    """Another process holds the audit file: two writers would fork one chain."""


_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class _Worker:
    """One thread that runs a sink's blocking calls in order, for the event loop.

    Cheaper per call than ``run_in_executor`` (no concurrent.futures Future, no chained-future
    callbacks, one ``call_soon_threadsafe`` per call), which matters once per group commit. Like a
    pool's work item, a call whose future was cancelled before it started is skipped. The thread
    is a daemon started on first use; ``stop`` ends it (the next call starts a new one).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()
        self._jobs.put((fn, args, fut, loop))
        return fut

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, fut, loop = job
            if fut.cancelled():
                continue
            result: Any = None
            exc: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as e:  # handed to the awaiting coroutine, as an executor does
                exc = e
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, fut, result, exc)
            del job, fn, args, fut, result, exc  # drop references while idle

    def stop(self) -> None:
        """End the thread after the calls queued so far (blocks until they are done)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()


class Sink(Protocol):
    """One destination of audit lines."""

    kind: str  # metric label: file | redis_stream | stdout
    required: bool

    async def open(self) -> None: ...

    async def write(self, lines: Sequence[bytes]) -> None: ...

    async def rollback(self) -> None: ...

    async def probe(self) -> bool: ...

    async def close(self) -> None: ...


class FileSink:
    """Append-only JSONL file with group-commit fsync and size rotation (module docstring)."""

    kind = "file"

    def __init__(
        self,
        path: str,
        *,
        rotate_bytes: int = 104_857_600,
        fsync: bool = True,
        required: bool = True,
    ) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.fsync = fsync
        self.required = required
        self._fd: int | None = None
        self._size = 0  # end of the last good batch in the live file
        self._prev_size = 0  # ... and of the one before (for rollback)
        self._dirty = False  # bytes after _size may exist (failed or rolled-back write)
        self._broken = False  # a write failed: refuse batches until recover()
        self.batches = 0  # successful write(+fsync) calls: the group-commit count
        self._worker = _Worker("gk-audit-file")
        # durability: fsync. The fsync process; the live file's generation (one per open) and
        # the one the process has open; failures so far (a batch written before a failure
        # was answered is cut back with it); batches are written in chain order under _order.
        self.syncer = Syncer(path) if fsync else None
        self._generation = 0
        self._synced_generation = 0
        self._failures = 0
        self._order = asyncio.Lock()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await self._worker.run(fn, *args)

    # -- chain state on disk
    def tail(self) -> ChainTail:
        """The chain state at the end of the existing files (verified); ``TailError`` if bad."""
        return read_tail(files.chain_files(self.path))

    async def open(self) -> None:
        await self._run(self._open_sync)
        if self.syncer is not None:
            self.syncer.start()
            self._synced_generation = self._generation

    def _open_sync(self) -> None:
        if self._fd is not None:
            return
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        # SECURITY: audit files are not world-readable (they name tenants and entities).
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # one writer per chain
        except BlockingIOError:
            os.close(fd)
            msg = f"{self.path} is written by another process (workers > 1 need per-replica files)"
            raise FileInUse(errno.EBUSY, msg) from None
        try:
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    last = f.read(1)
                if last != b"\n":
                    # A torn last line (crash mid-write): end it so the next record starts on a
                    # line of its own; the verifier reports it and the chain links across it.
                    os.write(fd, b"\n")
                    os.fsync(fd)
                    size += 1
        except OSError:
            os.close(fd)
            raise
        self._fd, self._size, self._prev_size, self._dirty = fd, size, size, False
        self._generation += 1

    async def write(self, lines: Sequence[bytes]) -> None:
        if self.syncer is not None:
            await self._write_synced(self.syncer, b"".join(lines))
            return
        try:
            seconds = await self._run(self._timed_write_sync, b"".join(lines))
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc.strerror or exc}") from exc
        # Observed here, on the event loop: the buffered histogram is not for other threads.
        metrics.buffered(metrics.AUDIT_FSYNC_SECONDS).observe(seconds)

    async def _write_synced(self, syncer: Syncer, data: bytes) -> None:
        """``durability: fsync``: write on the loop, in chain order, then wait for the fsync
        process (module docstring)."""
        async with self._order:
            if self._broken:
                raise SinkError(f"{self.path}: an earlier batch failed (not written)")
            try:
                if self._fd is None or self._dirty or self._rotation_due(len(data)):
                    await self._run(self._prepare_sync, len(data))
                start = self._size
                self._write_all(data)
            except OSError as exc:
                self._failed(self._generation, None)
                raise SinkError(f"{self.path}: {exc.strerror or exc}") from exc
            self._prev_size, self._size = start, start + len(data)
            generation, failures = self._generation, self._failures
            answer = syncer.request(reopen=generation != self._synced_generation)
            self._synced_generation = generation
        try:
            seconds = await answer
        except OSError as exc:
            async with self._order:
                self._failed(generation, start)
            raise SinkError(f"{self.path}: fsync: {exc.strerror or exc}") from exc
        if failures != self._failures:  # an earlier batch failed: this one was cut with it
            raise SinkError(f"{self.path}: an earlier batch failed (cut back)")
        self.batches += 1
        metrics.buffered(metrics.AUDIT_FSYNC_SECONDS).observe(seconds)

    def _rotation_due(self, size: int) -> bool:
        return self._size > 0 and self._size + size > self.rotate_bytes

    def _prepare_sync(self, size: int) -> None:
        """Open the file, cut what a failed batch left, rotate when due (on the thread)."""
        self._open_sync()
        self._cut_sync()
        if self._rotation_due(size):
            self._rotate_sync()

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            if n <= 0:  # pragma: no cover - write(2) reports errors by raising
                raise OSError(errno.EIO, "short write")
            view = view[n:]

    def _failed(self, generation: int, start: int | None) -> None:
        """A batch (written from ``start``, if it was) did not become durable: it and every
        batch after it are cut before the next write; a required sink refuses batches until
        ``recover()``."""
        self._failures += 1
        self._broken = self.required
        self._dirty = True
        if start is not None and generation == self._generation:
            self._size = min(self._size, start)

    def _timed_write_sync(self, data: bytes) -> float:
        """``_write_sync``, and how long it took on this thread (the disk's part of a commit)."""
        started = time.perf_counter()
        self._write_sync(data)
        return time.perf_counter() - started

    def _write_sync(self, data: bytes) -> None:
        if self._broken:
            raise OSError(errno.EIO, "an earlier batch failed (not written)")
        try:
            self._append_sync(data)
        except OSError:
            # Only a required sink fails the batch (and so the batches chained behind it).
            self._broken = self.required
            raise

    def _append_sync(self, data: bytes) -> None:
        self._prepare_sync(len(data))
        self._dirty = True
        self._write_all(data)  # buffered: no fsync (with fsync, _write_synced writes instead)
        self._prev_size, self._size, self._dirty = self._size, self._size + len(data), False
        self.batches += 1

    def _rotate_sync(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
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
        """Undo the last successful batch (a later required sink failed).

        After a rotation the batch is alone in the fresh live file and ``_prev_size`` is 0.
        """
        async with self._order:
            self._size, self._dirty = self._prev_size, True
            with contextlib.suppress(OSError):
                await self._run(self._cut_sync)

    def _cut_sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
            self._dirty = False

    async def recover(self) -> None:
        """Take batches again after a failed write (the log has re-chained from its last durable
        record); what the failed batch left behind is cut before the next write."""
        async with self._order:
            await self._run(self._recover_sync)

    def _recover_sync(self) -> None:
        self._broken = False

    async def probe(self) -> bool:
        """Can the next batch be written? (file open, leftovers cut, some space free)"""
        try:
            async with self._order:
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
                        os.ftruncate(self._fd, self._size)
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

        if self.syncer is not None:
            await self.syncer.close()
        await self._run(_close)
        self._worker.stop()


class RedisStreamSink:
    """Records and seals on a Redis stream (``XADD ... MAXLEN ~``), for ``audit tail`` and SIEMs."""

    kind = "redis_stream"

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        maxlen: int = 1_000_000,
        required: bool = True,
        timeout_s: float = 1.0,
    ) -> None:
        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self.required = required
        self.timeout_s = timeout_s
        self._client: aioredis.Redis | None = None

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            # One retry: after a Redis restart the pooled connection is dead, the retry reconnects.
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 1),
            )
        return self._client

    async def open(self) -> None:
        self._redis()

    async def write(self, lines: Sequence[bytes]) -> None:
        pipe = self._redis().pipeline(transaction=True)
        for line in lines:
            pipe.xadd(self.stream, {"data": line}, maxlen=self.maxlen, approximate=True)
        try:
            await asyncio.wait_for(pipe.execute(), self.timeout_s * 2)
        except (RedisError, OSError, TimeoutError) as exc:
            raise SinkError(f"redis stream {self.stream}: {type(exc).__name__}") from exc

    async def rollback(self) -> None:
        return None  # at-least-once; see the module docstring

    async def probe(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._redis().ping(), self.timeout_s * 2))
        except (RedisError, OSError, TimeoutError):
            return False

    async def tail(self, replica: str, *, scan: int = 10_000) -> ChainTail:
        """The newest record of ``replica`` on the stream (when no file sink holds the chain)."""
        import json

        try:
            entries: Any = await self._redis().xrevrange(self.stream, count=scan)
        except (RedisError, OSError) as exc:
            raise SinkError(f"redis stream {self.stream}: {type(exc).__name__}") from exc
        for entry_id, fields in entries:
            raw = fields.get(b"data")
            if raw is None:
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if not isinstance(obj, dict) or obj.get("type") == "seal":
                continue
            if obj.get("replica") != replica:
                continue
            body = {k: v for k, v in obj.items() if k != "hash"}
            if canonical(obj) + b"\n" != raw and canonical(obj) != raw:
                raise TailError(f"{self.stream}:{entry_id!r}: entry is not canonical JSON")
            if chain_hash(str(obj.get("prev_hash", ZERO_HASH)), body) != obj.get("hash"):
                raise TailError(f"{self.stream}:{entry_id!r}: hash mismatch at seq {obj['seq']}")
            return ChainTail(seq=int(obj["seq"]), head=str(obj["hash"]), path=self.stream)
        return ChainTail()

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._client.aclose()
            self._client = None


class StdoutSink:
    """Lines to standard output (container log collectors); blocking writes off the loop."""

    kind = "stdout"

    def __init__(self, *, required: bool = True, out: BinaryIO | None = None) -> None:
        self.required = required
        self._out = out
        self._worker = _Worker("gk-audit-stdout")

    def _stream(self) -> BinaryIO:
        return self._out if self._out is not None else sys.stdout.buffer

    async def open(self) -> None:
        return None

    async def write(self, lines: Sequence[bytes]) -> None:
        def _write() -> None:
            out = self._stream()
            out.write(b"".join(lines))
            out.flush()

        try:
            await self._worker.run(_write)
        except (OSError, ValueError) as exc:  # ValueError: write to a closed stream
            raise SinkError(f"stdout: {exc}") from exc

    async def rollback(self) -> None:
        return None

    async def probe(self) -> bool:
        return not self._stream().closed

    async def close(self) -> None:
        self._worker.stop()
