"""Where audit lines go: a file (group-commit fsync, rotation), a Redis stream, stdout.

Every sink receives whole group-commit batches (``list[bytes]``, each line ending in ``\\n``) and
either stores all of them or raises ``SinkError``. ``AuditLog`` writes to the file sinks first,
so a record reaches Redis or stdout only once it is on disk.

File sink: ``filesink.py``.

Redis stream sink. ``XADD <stream> MAXLEN ~ <maxlen> * data <line>`` for records and seals alike
(the seals are an off-host anchor), in one MULTI/EXEC per batch. Delivery to the stream is
at-least-once: when Redis fails after applying a batch, that batch is rolled back in the file and
its ``seq`` numbers are used again, so stream consumers identify records by (replica, seq, hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gatekeeper.audit.filesink import DiskOps, FileInUse, FileSink
from gatekeeper.audit.record import ZERO_HASH, canonical, chain_hash
from gatekeeper.audit.verify import ChainTail, TailError
from gatekeeper.audit.worker import SinkError, Worker, WorkerDied
from gatekeeper.config import AuditSinkConfig
from gatekeeper.errors import ConfigError, Problem

__all__ = [
    "DiskOps",
    "FileInUse",
    "FileSink",
    "RedisStreamSink",
    "Sink",
    "SinkError",
    "StdoutSink",
    "Worker",
    "WorkerDied",
    "build_sink",
]


class Sink(Protocol):
    """One destination of audit lines."""

    kind: str  # metric label: file | redis_stream | stdout
    required: bool

    async def open(self) -> None: ...

    async def write(self, lines: Sequence[bytes]) -> None: ...

    async def rollback(self) -> None: ...

    async def probe(self) -> bool: ...

    async def close(self) -> None: ...


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
        self._worker = Worker("gk-audit-stdout")

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
