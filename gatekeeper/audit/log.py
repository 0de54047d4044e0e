"""The audit log: one hash-chained record per request, durable before the response leaves.

``append(body)`` queues the record and waits. A single writer task takes *everything* queued at that
moment as one batch (group commit): it numbers and chains the records, adds a seal when a signing
key is configured, and hands the batch to every sink (file sinks first). The file sink does one
``write`` + one ``fsync`` per batch on its own thread, so while one batch is on its way to the
disk the next one collects: concurrent requests share an fsync and the event loop never waits
for the disk. Outcome lines (``append_nowait``, nobody waits for them) do not start a commit of
their own: they go with the next record's commit, or after ``LAZY_COMMIT_S`` if none comes.

Settling: a due commit first lets the event loop run up to ``SETTLE_ITERATIONS`` more times
(and for at most ``SETTLE_MAX_S``) while each of them queues new records (requests whose bytes
have already arrived finish deciding and join this commit instead of waiting for the next one);
the first iteration that adds nothing ends the wait, so a lone request waits one iteration.
Every commit costs a seal, a hand-off to the disk, an fsync and a chain pass, whatever its size:
under load, letting a burst of decisions finish before the batch is taken means fewer, larger
commits and less CPU per request, for a wait no longer than the burst itself.

Two commits in flight when the one required sink is a file: while one batch is on its way to the
disk, the next one is chained and queued behind it on the file's thread, which starts it the
moment the first fsync returns. The second is not taken at once, though: the thread is busy with
the first anyway, so the writer lets the next batch grow for ``PIPELINE_LAG`` of the thread's
usual time per batch (``FileSink.batch_seconds``), counted from the first one's hand-off, or until
the first one finishes, whichever comes first; handed over then, it still reaches the thread
before the first fsync returns, so the disk does not wait on the event loop, and the commits are
fewer and larger. A commit finishes (writes to the other sinks, answers its
appends) only after the commit before it has finished, so records are acknowledged and reach the
stream in chain order. A second required sink (a stream, stdout, another file) would need a
rollback across two batches, so such logs keep one commit in flight.

Failure: if a *required* sink fails, every append in the batch raises
``DependencyError("audit-unavailable")`` (the gate answers 503 and does not forward). The file
sink cuts the file back to its last durable batch and refuses every batch until ``recover()``;
a batch chained behind the failed one is refused with it. The writer then waits until nothing
is in flight, chains from the last durable record (``seq``/``head``, which is where the file now
ends) and lets the file sink take batches again: the chain on disk is unbroken, whatever failed
and when. Why that holds with two commits in flight: the file's thread runs batches strictly in
chain order and alone decides what is durable; it marks itself broken before a failure reaches
the loop, so nothing chained on the failed batch is written; ``seq``/``head`` advance only for a
batch whose write and fsync returned after every batch before it had; and ``recover()`` runs only
with nothing in flight, once the tip is back at ``seq``/``head``. A batch that fails before the
file (its seal) is never handed to it (``tests/audit/test_fault_injection.py`` tries all of
these). ``gatekeeper_audit_errors_total{sink}`` counts it, ``healthy()`` turns false and the
writer probes the sinks every second; the next append, or a successful probe, brings it back.
A non-required sink only counts its errors.

What happened to refused requests: the decision ids of the records a failed commit did not keep
(requests answered without being forwarded) and of the outcome lines it lost go into one
``commit-failed`` record, written at the head of the next commit that succeeds (``notes.py``).

Resume: ``start()`` continues the chain of the existing file (or, with no file sink, of this
replica's entries on the Redis stream), re-verifying the last MiB first. A file chain that does
not verify is moved aside untouched and a new chain starts with a ``chain-break`` record naming
it (``notes.py``); a Redis-only chain that does not verify refuses to start. A torn last line
(crash mid-write) is logged, ended with a newline and left in place; the new records link to the
last complete record, and ``audit verify`` lists the torn line. Chains are per replica: with
``workers > 1`` each process gets its own file and replica name.

Timing (per group commit, on ``/metrics``): ``gatekeeper_audit_commit_seconds`` from taking the
batch to every required sink holding it, ``gatekeeper_audit_write_seconds{sink}`` each sink's
share as the event loop waits for it, ``gatekeeper_audit_fsync_seconds`` the file's write +
fsync timed on its thread (the disk's part), and ``gatekeeper_audit_batch_records``, the lines
per commit (how well group commit works).

Memory is bounded: more than ``max_pending`` queued records make ``append`` fail fast with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from gatekeeper import metrics
from gatekeeper.audit import notes
from gatekeeper.audit.chain import Chained, Pending, chain_batch, utc_ts
from gatekeeper.audit.record import ZERO_HASH
from gatekeeper.audit.seal import Sealer, load_private_key
from gatekeeper.audit.sinks import (
    FileInUse,
    FileSink,
    RedisStreamSink,
    Sink,
    SinkError,
    build_sink,
)
from gatekeeper.audit.verify import ChainTail, TailError
from gatekeeper.config import AuditConfig
from gatekeeper.context import R_AUDIT_UNAVAILABLE
from gatekeeper.errors import ConfigError, DependencyError, Problem

log = logging.getLogger("gatekeeper.audit")

_PROBE_EVERY_S = 1.0
# Outcome lines (``append_nowait``) wait at most this long for a decision record to share a
# commit with, instead of paying an fsync of their own.
LAZY_COMMIT_S = 0.005
# At most this many event-loop iterations, and this long in all, a due commit waits while
# records keep arriving (module docstring).
SETTLE_ITERATIONS = 16
SETTLE_MAX_S = 0.002
# Commits in flight at once when every required sink is a file (module docstring).
PIPELINE_DEPTH = 2
# The part of the file thread's usual time per batch the next batch grows while one is in flight.
PIPELINE_LAG = 0.5


_records_counters: dict[str, Any] = {}


def _records_counter(kind: str) -> Any:
    """The ``gatekeeper_audit_records_total`` child of a sink kind (``labels()`` is slow)."""
    child = _records_counters.get(kind)
    if child is None:
        child = _records_counters[kind] = metrics.AUDIT_RECORDS.labels(sink=kind)
    return child


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
        sealer: Sealer | None = None,
        depth: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.replica = replica
        fsync = cfg.durability == "fsync"
        built = sinks if sinks is not None else [build_sink(s, fsync=fsync) for s in cfg.sinks]
        # File sinks first: a record reaches the stream or stdout only once it is on disk.
        self.sinks: list[Sink] = sorted(built, key=lambda s: s.kind != "file")
        self._file_sinks = [s for s in self.sinks if s.kind == "file"]
        self._other_sinks = [s for s in self.sinks if s.kind != "file"]
        self._sealer = sealer or (
            Sealer(load_private_key(cfg.signing_key), replica) if cfg.signing_key else None
        )
        self.max_pending = max_pending
        self.max_batch = max_batch
        self._pending: list[Pending] = []
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
        self._handed = 0.0  # when the last commit was handed to the sinks (perf_counter)
        required = [s for s in self.sinks if s.required]
        only = required[0] if len(required) == 1 else None
        # The one required sink, when it is a file: two commits in flight, with the lag.
        self._disk = only if isinstance(only, FileSink) else None
        self.depth = depth or (PIPELINE_DEPTH if self._disk is not None else 1)
        self.resumed: ChainTail | None = None
        self.chain_break: dict[str, Any] | None = None  # the start moved a broken chain aside
        self._break_note: dict[str, Any] | None = None  # ... and the note waits for seq 1
        self._lost = notes.LostRecords()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the sinks and continue the existing chain (see module docstring)."""
        tail = ChainTail()
        try:
            for sink in self.sinks:
                if isinstance(sink, FileSink):
                    tail, self.chain_break = await sink.resume()
                    break
            else:
                for sink in self.sinks:
                    if isinstance(sink, RedisStreamSink):
                        tail = await sink.tail(self.replica)
                        break
        except TailError as exc:
            msg = f"existing audit chain does not verify: {exc}"
            raise ConfigError([Problem("<audit>", None, "audit.sinks", msg)]) from exc
        except FileInUse as exc:
            raise ConfigError([Problem("<audit>", None, "audit.sinks", str(exc.strerror))]) from exc
        except (SinkError, OSError) as exc:
            # Starting a fresh chain next to an unreadable one would hide the old one: refuse.
            raise DependencyError(R_AUDIT_UNAVAILABLE, f"cannot resume audit chain: {exc}") from exc
        if self.chain_break is not None:
            # SECURITY: the old chain is kept, untouched; the new one starts by naming it.
            metrics.AUDIT_CHAIN_BREAKS.inc()
            log.error(
                "audit: existing chain does not verify (%s); moved aside as %s, new chain started",
                self.chain_break["error"],
                self.chain_break["moved_to"],
            )
            self._break_note = self.chain_break
            self._due = True
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
            work = bool(self._pending) or (self._healthy and self._notes_waiting())
            if not (work and (self._due or self._closing)):
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
            if self._inflight and not self._closing and len(self._pending) < self.max_batch:
                await self._lag()  # a full batch has nothing to gain from waiting
            if self._rewind:
                await self._restart_chain()
            if self._lazy_timer is not None:
                self._lazy_timer.cancel()
                self._lazy_timer = None
            await self._settle()
            if self._rewind:  # a commit failed meanwhile: re-chain before taking a batch
                continue
            batch = self._notes()
            take = self.max_batch - len(batch)
            batch += self._pending[:take]
            del self._pending[:take]
            self._due = bool(self._pending)  # more than a batch queued: the rest goes next
            try:
                chained = chain_batch(
                    batch, self._tip_seq, self._tip_head, self.replica, self._sealer
                )
            except Exception as exc:  # e.g. the seal: this batch fails, nothing was chained
                log.exception("audit: cannot chain a group commit")
                self._fail(batch, f"internal error: {type(exc).__name__}")
                continue
            # The tip moves now, on the writer task: the next batch is chained behind this one.
            self._tip_seq, self._tip_head = chained[2], chained[3]
            previous = self._inflight[-1] if self._inflight else None
            self._handed = time.perf_counter()
            task = asyncio.create_task(self._commit_task(batch, chained, previous))
            self._inflight.append(task)
            task.add_done_callback(self._finished)

    async def _lag(self) -> None:
        """With a commit in flight, let the next batch grow a while (module docstring)."""
        busy = self._disk.batch_seconds if self._disk is not None else 0.0
        wait = PIPELINE_LAG * busy - (time.perf_counter() - self._handed)
        if wait > 0:
            await asyncio.wait((self._inflight[0],), timeout=wait)

    def _notes_waiting(self) -> bool:
        return bool(self._lost) or (self._break_note is not None and self._tip_seq == 0)

    def _notes(self) -> list[Pending]:
        """The log's own records that go first in the next batch (``notes.py``)."""
        found: list[Pending] = []
        if self._break_note is not None and self._tip_seq == 0:
            found.append((self._break_note, utc_ts(), None))
            self._break_note = None
        if self._lost:
            found.append((self._lost.take(), utc_ts(), None))
        return found

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
        self, batch: list[Pending], chained: Chained, previous: asyncio.Task[bool] | None
    ) -> bool:
        try:
            return await self._commit(batch, chained, previous)
        except Exception as exc:  # never let the writer die with requests waiting
            log.exception("audit: unexpected error in group commit")
            self._fail(batch, f"internal error: {type(exc).__name__}")
            return False

    async def _settle(self) -> None:
        """Let records that are about to arrive join this commit (module docstring)."""
        clock = time.perf_counter
        until = clock() + SETTLE_MAX_S
        for _ in range(SETTLE_ITERATIONS):
            queued = len(self._pending)
            if queued >= self.max_batch or self._closing:
                return
            await asyncio.sleep(0)
            if len(self._pending) == queued or clock() >= until:
                return

    async def _commit(
        self, batch: list[Pending], chained: Chained, previous: asyncio.Task[bool] | None
    ) -> bool:
        """Store the chained ``batch`` and answer its appends once ``previous`` (the commit
        before it, if still in flight) has finished; True if it was stored."""
        clock = time.perf_counter
        started = clock()
        lines, records, seq, head = chained
        written: list[Sink] = []
        failure = await self._store(lines, self._file_sinks, written)
        # The other sinks and the answers follow chain order: this commit goes on once the one
        # before it has finished. If that one failed, this batch is chained on a record that
        # is not stored and fails too (the file sink has already refused it).
        if previous is not None:
            # Shielded: this commit giving up must not cancel the one before it. Usually that
            # one has finished by now (its write returned first): its result, without a wait.
            ok = previous.result() if previous.done() else await asyncio.shield(previous)
            if not ok and failure is None:
                failure = "an earlier batch failed"
        if failure is None:
            failure = await self._store(lines, self._other_sinks, written)
        if failure is not None:
            for sink in written:
                await sink.rollback()
            self._fail(batch, failure)
            return False
        # Durable: first thing, so that whatever fails from here on re-chains after this batch.
        self.seq, self.head = seq, head
        for sink in written:
            _records_counter(sink.kind).inc(len(records))
        metrics.buffered(metrics.AUDIT_COMMIT_SECONDS).observe(clock() - started)
        metrics.buffered(metrics.AUDIT_BATCH_RECORDS).observe(len(records))
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
            except Exception as exc:  # SinkError, or anything unforeseen: the batch failed
                metrics.AUDIT_ERRORS.labels(sink=sink.kind).inc()
                log.error("audit: %s sink failed: %s", sink.kind, exc)
                if sink.required:
                    return str(exc) if isinstance(exc, SinkError) else type(exc).__name__
                continue
            written.append(sink)
        return None

    def _fail(self, batch: list[Pending], why: str) -> None:
        self._healthy = False
        self._rewind = True
        for body, _, fut in batch:
            kind = body.get("type")
            if kind == notes.CHAIN_BREAK:
                self._break_note = body  # waits for the next seq 1
                continue
            if kind == notes.COMMIT_FAILED:
                self._lost.merge(body)  # waits for the next commit
                continue
            self._lost.add(body.get("decision_id"), answered=fut is not None, detail=why)
            if fut is None:
                log.warning("audit: %s line for %s not written", kind, body.get("decision_id"))
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
        if self._lost or self._break_note is not None:
            self._due = True  # write what the failed commits left to say, now that it can
