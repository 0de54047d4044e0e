"""The audit log: one hash-chained record per request, durable before the response leaves.

``append(body)`` queues the record and waits. A single writer task takes *everything* queued at that
moment as one batch (group commit): it numbers and chains the records, adds a seal when a signing
key is configured, and hands the batch to every sink (file sinks first). The file sink does one
``write`` + one ``fsync`` per batch on its own thread, so while one batch is on its way to the disk
the next one collects: concurrent requests share an fsync and the event loop never blocks.

Failure: if a *required* sink fails, every append in the batch raises
``DependencyError("audit-unavailable")`` (the gate answers 503 and does not forward), the batch is
rolled back where possible (the file is cut back to the previous batch), and ``seq``/``prev_hash``
stay where they were, so the chain on disk is unbroken. ``gatekeeper_audit_errors_total{sink}``
counts it, ``healthy()`` turns false and the writer probes the sinks every second; the next
append, or a successful probe, brings it back. A non-required sink only counts its errors.

Resume: ``start()`` continues the chain of the existing file (or, with no file sink, of this
replica's entries on the Redis stream), re-verifying the last MiB first; a tail that does not
verify refuses to start (``ConfigError``) rather than extend a tampered chain. A torn last line
(crash mid-write) is logged, ended with a newline and left in place; the new records link to the
last complete record, and ``audit verify`` lists the torn line. Chains are per replica: with
``workers > 1`` each process must get its own file (``files.per_replica_path``) and replica name.

Memory is bounded: more than ``max_pending`` queued records make ``append`` fail fast with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from gatekeeper import metrics
from gatekeeper.audit.record import RECORD_VERSION, ZERO_HASH, canonical, chain_hash, scrub
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


_ts_cache: tuple[int, str] = (-1, "")


def utc_ts(t: float | None = None) -> str:
    """``2026-11-25T20:01:02.345678Z`` (the formatted second is cached: strftime is slow)."""
    global _ts_cache
    now = time.time() if t is None else t
    sec = int(now)
    if _ts_cache[0] != sec:
        _ts_cache = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_ts_cache[1]}.{int((now - sec) * 1e6):06d}Z"


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


_PLACEHOLDER = "sha256:" + secrets.token_hex(32)
_MARKER = b'"hash":"' + _PLACEHOLDER.encode() + b'",'


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


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
        self._sealer = (
            Sealer(load_private_key(cfg.signing_key), replica) if cfg.signing_key else None
        )
        self.max_pending = max_pending
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._healthy = True
        self.seq = 0
        self.head = ZERO_HASH
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
        """Chain ``body`` into a record and return it once every required sink has it."""
        if self._closing or self._writer is None:
            raise DependencyError(R_AUDIT_UNAVAILABLE, "audit log is not running")
        if len(self._pending) >= self.max_pending:
            metrics.AUDIT_ERRORS.labels(sink="queue").inc()
            raise DependencyError(R_AUDIT_UNAVAILABLE, "audit backlog full")
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)  # no "exception never retrieved" if the caller left
        self._pending.append((body, utc_ts(), fut))
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
        self._wake.set()

    # ------------------------------------------------------------------ writer
    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                try:
                    timeout = None if self._healthy else _PROBE_EVERY_S
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    await self._probe()
                    continue
                self._wake.clear()
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    await self._commit(batch)
                except Exception as exc:  # never let the writer die with requests waiting
                    log.exception("audit: unexpected error in group commit")
                    self._fail(batch, f"internal error: {type(exc).__name__}")

    def _chain(self, batch: list[_Pending]) -> tuple[list[bytes], list[dict[str, Any]], int, str]:
        seq, head = self.seq, self.head
        lines: list[bytes] = []
        records: list[dict[str, Any]] = []
        for body, ts, _ in batch:
            seq += 1
            rec: dict[str, Any] = {
                **body,
                "v": RECORD_VERSION,
                "seq": seq,
                "ts": ts,
                "replica": self.replica,
                "prev_hash": head,
                "hash": _PLACEHOLDER,
            }
            try:
                template = canonical(rec)
            except (TypeError, ValueError):  # lone surrogates, NaN, odd types: keep the record
                rec = scrub(rec)
                template = canonical(rec)
            # One serialisation instead of two: the canonical form without "hash" is the template
            # minus its `"hash":"<placeholder>",` member ("prev_hash" always sorts after "hash").
            # Strings cannot contain an unescaped quote, so only a real member can match, and the
            # placeholder is a per-process random value; a second match takes the plain path.
            i = template.find(_MARKER)
            if i < 0 or template.find(_MARKER, i + 1) >= 0:  # pragma: no cover - defensive
                del rec["hash"]
                head = chain_hash(head, rec)
                rec["hash"] = head
                lines.append(canonical(rec) + b"\n")
            else:
                rest = template[i + len(_MARKER) :]
                h = hashlib.sha256(head.encode("ascii"))
                h.update(template[:i])
                h.update(rest)
                head = "sha256:" + h.hexdigest()
                rec["hash"] = head
                lines.append(
                    b"".join((template[:i], b'"hash":"', head.encode(), b'",', rest, b"\n"))
                )
            records.append(rec)
        if self._sealer is not None:
            lines.append(canonical(self._sealer.seal(seq, head, utc_ts())) + b"\n")
        return lines, records, seq, head

    async def _commit(self, batch: list[_Pending]) -> None:
        lines, records, seq, head = self._chain(batch)
        written: list[Sink] = []
        failure: str | None = None
        for sink in self.sinks:
            try:
                await sink.write(lines)
            except SinkError as exc:
                metrics.AUDIT_ERRORS.labels(sink=sink.kind).inc()
                log.error("audit: %s sink failed: %s", sink.kind, exc)
                if sink.required:
                    failure = str(exc)
                    break
                continue
            written.append(sink)
        if failure is not None:
            for sink in written:
                await sink.rollback()
            self._fail(batch, failure)
            return
        for sink in written:
            metrics.AUDIT_RECORDS.labels(sink=sink.kind).inc(len(records))
        self.seq, self.head = seq, head
        if not self._healthy:
            log.warning("audit: sinks recovered at seq %d", seq)
        self._healthy = True
        for (_, _, fut), rec in zip(batch, records, strict=True):
            if fut is not None and not fut.done():
                fut.set_result(rec)

    def _fail(self, batch: list[_Pending], why: str) -> None:
        self._healthy = False
        for body, _, fut in batch:
            if fut is None:
                log.warning(
                    "audit: %s line for %s not written", body.get("type"), body.get("decision_id")
                )
            elif not fut.done():
                fut.set_exception(
                    DependencyError(R_AUDIT_UNAVAILABLE, f"audit write failed: {why}")
                )

    async def _probe(self) -> None:
        for sink in self.sinks:
            if sink.required and not await sink.probe():
                return
        log.warning("audit: required sinks answer again")
        self._healthy = True
