"""The audit log: one hash-chained record per request, durable before the response leaves.

``append(body)`` queues the record and waits. A single writer task takes *everything* queued at that
moment as one batch (group commit): it numbers and chains the records, adds a seal when a signing
key is configured, and hands the batch to every sink (file sinks first). The file sink does one
``write`` + one ``fsync`` per batch, the fsync in a process of its own (``syncer.py``), so while one
batch is on its way to the disk the next one collects: concurrent requests share an fsync and the
event loop never waits for the disk.
Outcome lines (``append_nowait``, nobody waits for them) do not start a commit of their own: they
go with the next record's commit, or after ``LAZY_COMMIT_S`` (5 ms) if none comes. At 500 req/s
that halves the fsyncs and keeps a decision record from queueing behind an outcome line's fsync
(the gate's p50 fell by 0.07–0.3 ms in six paired runs).

Settling: a due commit first lets the event loop run up to ``SETTLE_ITERATIONS`` more times while
each of them queues new records (requests whose bytes have already arrived finish deciding and
join this commit instead of waiting for the next one); the first iteration that adds nothing
ends the wait. It costs one loop iteration (microseconds) when nothing else is running, and under
load it made group commits larger (13-14 to 17-18 lines at ``workers: 2``) and the gate cheaper
(proxy CPU -8 µs per request in three paired rounds): every commit also costs a seal, a hand-off
to the disk and a chain pass, whatever its size.

Two commits in flight: while one batch is on its way to the disk, the next one is chained,
written, and its fsync request queued behind the first's in the fsync process, which starts it
the moment the first fsync returns (instead of after a hand-back to the event loop and another
loop pass). A commit finishes, i.e. writes to
the other sinks and answers its appends, only after the commit before it has finished, so
records are acknowledged and reach the stream in chain order. Measured with ``bench/ab.py``
(gate against gate on one stack, 2026-11-27): this code against its parent, 8 pairs, req/s
+5.2% at 16 connections (95% interval -0.6..+16.4%, faster in 7 of 8) and +3.4% at 32
(-6.1..+11.0%), machine CPU per request -9.1% (-17.6..-3.4%) and -4.6%; a prototype, 12
pairs: +8.6% and +6.7%, CPU -10.5% and -7.5%. The loop no longer sits idle between an fsync's
end and the next batch's start, which matters most when few requests are in flight. Only
when the one required sink is a file (the common case): a second required
sink (a stream, stdout, another file) would need a rollback across two batches, so such logs
keep one commit in flight.

Failure: if a *required* sink fails, every append in the batch raises
``DependencyError("audit-unavailable")`` (the gate answers 503 and does not forward), the batch is
rolled back where possible (the file is cut back to the previous batch), and ``seq``/``prev_hash``
stay where they were, so the chain on disk is unbroken. A batch chained behind a failed one
fails with it (the file sink refuses it, ``FileSink.recover``), and the next batch is chained
from the last durable record again. ``gatekeeper_audit_errors_total{sink}``
counts it, ``healthy()`` turns false and the writer probes the sinks every second; the next
append, or a successful probe, brings it back. A non-required sink only counts its errors.

Resume: ``start()`` continues the chain of the existing file (or, with no file sink, of this
replica's entries on the Redis stream), re-verifying the last MiB first; a tail that does not
verify refuses to start (``ConfigError``) rather than extend a tampered chain. A torn last line
(crash mid-write) is logged, ended with a newline and left in place; the new records link to the
last complete record, and ``audit verify`` lists the torn line. Chains are per replica: with
``workers > 1`` each process must get its own file (``files.per_replica_path``) and replica name.

Timing (per group commit, on ``/metrics``): ``gatekeeper_audit_commit_seconds`` from taking the
batch to every required sink holding it, ``gatekeeper_audit_write_seconds{sink}`` each sink's
share as the event loop waits for it (for the file sink: the write and the wait for its fsync),
``gatekeeper_audit_fsync_seconds`` the file's fsync timed by its fsync process (the disk's
part), and ``gatekeeper_audit_batch_records``, the lines per commit (how well group commit
works). Every decision record waits for one commit, so a slow disk shows here first.

Memory is bounded: more than ``max_pending`` queued records make ``append`` fail fast with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from gatekeeper import metrics
from gatekeeper.audit.record import (
    RECORD_VERSION,
    ZERO_HASH,
    RecordBody,
    canonical,
    chain_hash,
    scrub,
)
from gatekeeper.audit.seal import Sealer, load_private_key
from gatekeeper.audit.sinks import (
    FileInUse,
    FileSink,
    RedisStreamSink,
    Sink,
    SinkError,
    StdoutSink,
)
from gatekeeper.audit.verify import ChainTail, TailError
from gatekeeper.config import AuditConfig, AuditSinkConfig
from gatekeeper.context import R_AUDIT_UNAVAILABLE
from gatekeeper.errors import ConfigError, DependencyError, Problem

log = logging.getLogger("gatekeeper.audit")

_PROBE_EVERY_S = 1.0
# Outcome lines (``append_nowait``) wait at most this long for a decision record to share a
# commit with, instead of paying an fsync of their own.
LAZY_COMMIT_S = 0.005
# At most this many event-loop iterations a due commit waits while records keep arriving.
SETTLE_ITERATIONS = 3
# Commits in flight at once when every required sink is a file (module docstring).
PIPELINE_DEPTH = 2


_ts_sec = -1
_ts_prefix = ""


def utc_ts(t: float | None = None) -> str:
    """``2026-11-25T20:01:02.345678Z`` (the formatted second is cached: strftime is slow)."""
    global _ts_sec, _ts_prefix
    now = time.time() if t is None else t
    sec = int(now)
    if sec != _ts_sec:
        _ts_prefix = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _ts_sec = sec
    return f"{_ts_prefix}{int((now - sec) * 1e6):06d}Z"


def build_sink(cfg: AuditSinkConfig, *, fsync: bool) -> Sink:
    """One sink from its config entry."""
    if cfg.type == "file":
        if not cfg.path:
            raise ConfigError([Problem("<config>", None, "audit.sinks", "file sink needs a path")])
        return FileSink(cfg.path, rotate_bytes=cfg.rotate_bytes, fsync=fsync, required=cfg.required)
    if cfg.type == "redis_stream":
        if not cfg.url:
            msg = "redis_stream sink needs a url"
            raise ConfigError([Problem("<config>", None, "audit.sinks", msg)])
        return RedisStreamSink(cfg.url, cfg.stream, maxlen=cfg.maxlen, required=cfg.required)
    if cfg.type == "stdout":
        return StdoutSink(required=cfg.required)
    raise ConfigError([Problem("<config>", None, "audit.sinks", f"unknown sink type {cfg.type!r}")])


# The chain leaves a hole for each record's own hash: ``"hash":"\x7f"`` sorts in place, and
# the canonical form without "hash" is the serialisation minus that member ("prev_hash" always
# sorts after "hash", so a comma follows it). DEL is the one character JSON writes raw that
# records practically never hold, so one memchr finds the hole; a record holding it anywhere
# else takes the plain path (two serialisations), never a wrong splice.
_HOLE = "\x7f"
_HOLE_MEMBER = b'"hash":"\x7f",'
_BEFORE_HOLE = len(b'"hash":"')
_AFTER_HOLE = len(b'",')


_records_counters: dict[str, Any] = {}


def _records_counter(kind: str) -> Any:
    """The ``gatekeeper_audit_records_total`` child of a sink kind (``labels()`` is slow)."""
    child = _records_counters.get(kind)
    if child is None:
        child = _records_counters[kind] = metrics.AUDIT_RECORDS.labels(sink=kind)
    return child


_Pending = tuple[dict[str, Any], str, "asyncio.Future[dict[str, Any]] | None"]


class AuditLog:
    """Hash-chained, group-committed audit records for one replica (module docstring)."""

    def __init__(
        self,
        cfg: AuditConfig,
        *,
        replica: str,
        sinks: list[Sink] | None = None,
        max_pending: int = 10_000,
        max_batch: int = 1024,
    ) -> None:
        self.cfg = cfg
        self.replica = replica
        fsync = cfg.durability == "fsync"
        built = sinks if sinks is not None else [build_sink(s, fsync=fsync) for s in cfg.sinks]
        # File sinks first: a record reaches the stream or stdout only once it is on disk.
        self.sinks: list[Sink] = sorted(built, key=lambda s: s.kind != "file")
        self._file_sinks = [s for s in self.sinks if s.kind == "file"]
        self._other_sinks = [s for s in self.sinks if s.kind != "file"]
        self._sealer = (
            Sealer(load_private_key(cfg.signing_key), replica) if cfg.signing_key else None
        )
        self.max_pending = max_pending
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        # Commit now (a waiting record, a full batch, the timer) or let outcome lines wait.
        self._due = False
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._healthy = True
        self.seq = 0  # the last durable record (every required sink has it)
        self.head = ZERO_HASH
        self._tip_seq = 0  # the last record chained, maybe still on its way
        self._tip_head = ZERO_HASH
        self._rewind = False  # a commit failed: chain the next batch from seq/head again
        self._inflight: deque[asyncio.Task[bool]] = deque()
        required = [s for s in self.sinks if s.required]
        one_file = len(required) == 1 and isinstance(required[0], FileSink)
        self.depth = PIPELINE_DEPTH if one_file else 1
        self.resumed: ChainTail | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the sinks and continue the existing chain (see module docstring)."""
        tail = ChainTail()
        try:
            for sink in self.sinks:
                if isinstance(sink, FileSink):
                    tail = await asyncio.to_thread(sink.tail)
                    break
            else:
                for sink in self.sinks:
                    if isinstance(sink, RedisStreamSink):
                        tail = await sink.tail(self.replica)
                        break
        except TailError as exc:
            msg = f"existing audit chain does not verify: {exc}"
            raise ConfigError([Problem("<audit>", None, "audit.sinks", msg)]) from exc
        except (SinkError, OSError) as exc:
            # Starting a fresh chain next to an unreadable one would hide the old one: refuse.
            raise DependencyError(R_AUDIT_UNAVAILABLE, f"cannot resume audit chain: {exc}") from exc
        if tail.torn:
            log.warning(
                "audit: torn last line at %s (crash mid-write); continuing after it", tail.torn
            )
        if self._sealer and tail.unsealed:
            log.warning("audit: %d record(s) at the end of the chain are not sealed", tail.unsealed)
        self.seq, self.head, self.resumed = tail.seq, tail.head, tail
        self._tip_seq, self._tip_head = tail.seq, tail.head
        for sink in self.sinks:
            try:
                await sink.open()
            except FileInUse as exc:
                raise ConfigError(
                    [Problem("<audit>", None, "audit.sinks", str(exc.strerror))]
                ) from exc
            except (OSError, SinkError) as exc:
                # Not fatal: the gate starts not-ready and the writer's probe retries.
                metrics.AUDIT_ERRORS.labels(sink=sink.kind).inc()
                log.error("audit: cannot open %s sink: %s", sink.kind, exc)
                if sink.required:
                    self._healthy = False
        self._writer = asyncio.create_task(self._run(), name="gatekeeper-audit-writer")

    async def close(self) -> None:
        """Write what is queued, then close the sinks."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.close()

    def healthy(self) -> bool:
        """False from a failed required write until the next success (or successful probe)."""
        return self._healthy and not self._closing

    # ------------------------------------------------------------------ append
    async def append(self, body: dict[str, Any]) -> dict[str, Any]:
        """Chain ``body`` into a record and return it once every required sink has it.

        A ``RecordBody`` (from ``record_body``) becomes the record itself: the log fills in the
        chain fields in place rather than copying it, so the caller must not reuse it.
        """
        if self._closing or self._writer is None:
            raise DependencyError(R_AUDIT_UNAVAILABLE, "audit log is not running")
        if len(self._pending) >= self.max_pending:
            metrics.AUDIT_ERRORS.labels(sink="queue").inc()
            raise DependencyError(R_AUDIT_UNAVAILABLE, "audit backlog full")
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((body, utc_ts(), fut))
        self._due = True
        self._wake.set()
        # A cancelled caller cancels only its own future; the record stays queued and is written.
        return await fut

    def append_nowait(self, body: dict[str, Any]) -> None:
        """Queue ``body`` without waiting (outcome lines): no future, no task per record.

        Raises ``DependencyError`` when the log is not running or the backlog is full; a later
        write failure is logged (the record is lost with its batch, as for ``append``).
        """
        if self._closing or self._writer is None:
            raise DependencyError(R_AUDIT_UNAVAILABLE, "audit log is not running")
        if len(self._pending) >= self.max_pending:
            metrics.AUDIT_ERRORS.labels(sink="queue").inc()
            raise DependencyError(R_AUDIT_UNAVAILABLE, "audit backlog full")
        self._pending.append((body, utc_ts(), None))
        if len(self._pending) >= self.max_batch:
            self._due = True
            self._wake.set()
        elif not self._due and self._lazy_timer is None:
            self._arm_lazy()

    def _arm_lazy(self) -> None:
        self._lazy_timer = asyncio.get_running_loop().call_later(LAZY_COMMIT_S, self._lazy_due)

    def _lazy_due(self) -> None:
        self._lazy_timer = None
        self._due = True
        self._wake.set()

    # ------------------------------------------------------------------ writer
    async def _run(self) -> None:
        while True:
            if not (self._pending and (self._due or self._closing)):
                if self._closing:
                    await self._drain()
                    return
                if self._pending and self._lazy_timer is None:
                    self._arm_lazy()  # lines queued during the last commit wait for a record
                try:
                    timeout = None if self._healthy else _PROBE_EVERY_S
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    await self._probe()
                    continue
                self._wake.clear()
                continue
            if len(self._inflight) >= self.depth:
                await asyncio.wait((self._inflight[0],))
                continue
            if self._rewind:
                await self._restart_chain()
            if self._lazy_timer is not None:
                self._lazy_timer.cancel()
                self._lazy_timer = None
            await self._settle()
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            self._due = bool(self._pending)  # more than a batch queued: the rest goes next
            previous = self._inflight[-1] if self._inflight else None
            task = asyncio.create_task(self._commit_task(batch, previous))
            self._inflight.append(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[bool]) -> None:
        # Commits finish in order (each waits for the one before it).
        if self._inflight and self._inflight[0] is task:
            self._inflight.popleft()
        else:  # pragma: no cover - defensive: keep the deque consistent whatever happened
            with contextlib.suppress(ValueError):
                self._inflight.remove(task)
        self._wake.set()

    async def _drain(self) -> None:
        while self._inflight:
            await asyncio.wait((self._inflight[-1],))

    async def _restart_chain(self) -> None:
        """After a failed commit: let the commits in flight finish (those chained behind the
        failed one fail too), then chain from the last durable record and let the file sinks
        take batches again."""
        await self._drain()
        self._tip_seq, self._tip_head = self.seq, self.head
        self._rewind = False
        for sink in self.sinks:
            if isinstance(sink, FileSink):
                with contextlib.suppress(OSError):
                    await sink.recover()

    async def _commit_task(
        self, batch: list[_Pending], previous: asyncio.Task[bool] | None
    ) -> bool:
        try:
            return await self._commit(batch, previous)
        except Exception as exc:  # never let the writer die with requests waiting
            log.exception("audit: unexpected error in group commit")
            self._fail(batch, f"internal error: {type(exc).__name__}")
            return False

    async def _settle(self) -> None:
        """Let records that are about to arrive join this commit (module docstring)."""
        for _ in range(SETTLE_ITERATIONS):
            queued = len(self._pending)
            if queued >= self.max_batch or self._closing:
                return
            await asyncio.sleep(0)
            if len(self._pending) == queued:
                return

    def _chain(self, batch: list[_Pending]) -> tuple[list[bytes], list[dict[str, Any]], int, str]:
        seq, head = self._tip_seq, self._tip_head
        prev = head.encode("ascii")
        replica = self.replica
        lines: list[bytes] = []
        records: list[dict[str, Any]] = []
        for body, ts, _ in batch:
            seq += 1
            checked = body.__class__ is RecordBody
            if checked:
                # record_body's own fresh dict, handed to the log by append(): completed in place.
                rec: dict[str, Any] = body
                rec["v"] = RECORD_VERSION
                rec["seq"] = seq
                rec["ts"] = ts
                rec["replica"] = replica
                rec["prev_hash"] = head
                rec["hash"] = _HOLE
            else:
                rec = {
                    **body,
                    "v": RECORD_VERSION,
                    "seq": seq,
                    "ts": ts,
                    "replica": replica,
                    "prev_hash": head,
                    "hash": _HOLE,
                }
            try:
                template = canonical(rec, checked=checked)
            except (TypeError, ValueError):  # lone surrogates, NaN, odd types: keep the record
                rec = scrub(rec)
                template = canonical(rec)
            # One serialisation instead of two: cut the hole member out for the hash, fill it in
            # for the line (see _HOLE). The hole must be the only DEL byte in the record.
            i = template.find(b"\x7f")
            start = i - _BEFORE_HOLE
            end = i + 1 + _AFTER_HOLE
            if (
                start > 0
                and template.startswith(_HOLE_MEMBER, start)
                and template.find(b"\x7f", end) < 0
            ):
                before = template[:start]
                after = template[end:]
                h = hashlib.sha256(prev)
                h.update(before)
                h.update(after)
                prev = b"sha256:" + h.hexdigest().encode("ascii")
                lines.append(b"".join((before, b'"hash":"', prev, b'",', after, b"\n")))
                head = prev.decode("ascii")
            else:  # DEL elsewhere in the record: hash and serialise it the plain way
                del rec["hash"]
                head = chain_hash(head, rec)
                rec["hash"] = head
                lines.append(canonical(rec) + b"\n")
                prev = head.encode("ascii")
            rec["hash"] = head
            records.append(rec)
        if self._sealer is not None:
            lines.append(canonical(self._sealer.seal(seq, head, utc_ts())) + b"\n")
        return lines, records, seq, head

    async def _commit(self, batch: list[_Pending], previous: asyncio.Task[bool] | None) -> bool:
        """Chain ``batch`` behind the tip, store it, and answer its appends once ``previous``
        (the commit before it, if still in flight) has finished; True if it was stored."""
        clock = time.perf_counter
        started = clock()
        lines, records, seq, head = self._chain(batch)
        self._tip_seq, self._tip_head = seq, head
        written: list[Sink] = []
        failure = await self._store(lines, self._file_sinks, written)
        # The other sinks and the answers follow chain order: this commit goes on once the one
        # before it has finished. If that one failed, this batch is chained on a record that
        # is not stored and fails too (the file sink has already refused it).
        if previous is not None and not await asyncio.shield(previous) and failure is None:
            failure = "an earlier batch failed"
        if failure is None:
            failure = await self._store(lines, self._other_sinks, written)
        if failure is not None:
            for sink in written:
                await sink.rollback()
            self._fail(batch, failure)
            return False
        for sink in written:
            _records_counter(sink.kind).inc(len(records))
        metrics.buffered(metrics.AUDIT_COMMIT_SECONDS).observe(clock() - started)
        metrics.buffered(metrics.AUDIT_BATCH_RECORDS).observe(len(records))
        self.seq, self.head = seq, head
        if not self._healthy:
            log.warning("audit: sinks recovered at seq %d", seq)
        self._healthy = True
        for (_, _, fut), rec in zip(batch, records, strict=True):
            if fut is not None and not fut.done():
                fut.set_result(rec)
        return True

    async def _store(
        self, lines: list[bytes], sinks: list[Sink], written: list[Sink]
    ) -> str | None:
        """Hand ``lines`` to ``sinks`` in turn; what stops at a required sink's failure (None if
        none failed). Sinks that took the lines are appended to ``written``."""
        clock = time.perf_counter
        for sink in sinks:
            t0 = clock()
            try:
                await sink.write(lines)
                metrics.buffered(metrics.AUDIT_WRITE_SECONDS, sink.kind).observe(clock() - t0)
            except SinkError as exc:
                metrics.AUDIT_ERRORS.labels(sink=sink.kind).inc()
                log.error("audit: %s sink failed: %s", sink.kind, exc)
                if sink.required:
                    return str(exc)
                continue
            written.append(sink)
        return None

    def _fail(self, batch: list[_Pending], why: str) -> None:
        self._healthy = False
        self._rewind = True
        for body, _, fut in batch:
            if fut is None:
                log.warning(
                    "audit: %s line for %s not written", body.get("type"), body.get("decision_id")
                )
            elif not fut.done():
                fut.set_exception(
                    DependencyError(R_AUDIT_UNAVAILABLE, f"audit write failed: {why}")
                )
                # Marked as retrieved (the waiting append still raises it): no "exception never
                # retrieved" if the caller left. Cheaper than a done callback on every future.
                fut.exception()

    async def _probe(self) -> None:
        for sink in self.sinks:
            if sink.required and not await sink.probe():
                return
        log.warning("audit: required sinks answer again")
        self._healthy = True
