"""A minimal pipelined RESP connection for the quota store's hot call (``EVALSHA``).

redis-py spends ~400 Python calls per command on the way in and out; a consume per request makes
that ~10% of the gate's CPU. This connection writes every command queued in one event-loop turn
with one ``write`` and parses replies with hiredis' C reader, matching them to callers in order
(RESP answers in order on one connection), so concurrent requests pipeline by themselves.

Failure: a lost connection, a timeout in any caller or a protocol error closes the connection and
fails every outstanding call with ``ConnectionError``; the next call reconnects. Nothing is ever
resent (a script whose reply was lost may have run), as in the store's module docstring.
Only plain TCP (``redis://``) uses it; TLS, unix sockets and clusters stay on redis-py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis


def encode(args: tuple[Any, ...]) -> bytes:
    """One RESP command (arguments are str, bytes or int)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(out)


class RespPipe:
    """One pipelined connection (see module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 0.5,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.connect_timeout_s = connect_timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._connecting: asyncio.Future[None] | None = None

    async def call(self, args: tuple[Any, ...]) -> Any:
        """Send one command; its reply (hiredis.ReplyError instances are returned, not raised)."""
        if self._writer is None:
            await self._connect()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._out.append(encode(args))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        try:
            return await fut
        except asyncio.CancelledError:
            # A caller that gave up (timeout) leaves the stream in an unknown state: its reply
            # may never come. Start over rather than risk pairing replies with the wrong caller.
            self.reset(ConnectionError("quota store call abandoned"))
            raise

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        if self._writer is None or self._writer.is_closing():
            self.reset(ConnectionError("quota store connection closed"))
            return
        self._writer.write(data)

    async def _connect(self) -> None:
        if self._connecting is not None:
            await asyncio.shield(self._connecting)
            if self._writer is None:
                raise ConnectionError("quota store connection failed")
            return
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(self.host, self.port)
            self._writer = writer
            self._reader_task = loop.create_task(self._read(reader, writer))
            setup: list[tuple[Any, ...]] = []
            if self.password is not None:
                setup.append(
                    ("AUTH", self.username, self.password)
                    if self.username
                    else ("AUTH", self.password)
                )
            if self.db:
                setup.append(("SELECT", self.db))
            for cmd in setup:
                fut: asyncio.Future[Any] = loop.create_future()
                self._waiters.append(fut)
                writer.write(encode(cmd))
                async with asyncio.timeout(self.connect_timeout_s):
                    reply = await fut
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"quota store refused {cmd[0]}: {reply}")
        except BaseException as exc:
            self.reset(ConnectionError(f"quota store connect failed: {type(exc).__name__}"))
            self._connecting.set_result(None)
            self._connecting = None
            raise
        self._connecting.set_result(None)
        self._connecting = None

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        waiters = self._waiters
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                parser.feed(data)
                while True:
                    reply = parser.gets()
                    if reply is False:
                        break
                    if not waiters:
                        raise ConnectionError("unsolicited reply")
                    fut = waiters.popleft()
                    if not fut.done():
                        fut.set_result(reply)
        except (OSError, hiredis.ProtocolError, ConnectionError):
            pass
        if self._writer is writer:
            self.reset(ConnectionError("quota store connection lost"))

    def reset(self, exc: BaseException) -> None:
        """Close the connection and fail every outstanding call."""
        writer, self._writer = self._writer, None
        task, self._reader_task = self._reader_task, None
        if writer is not None:
            writer.close()
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._out.clear()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: callers that left must not log "never retrieved"

    async def close(self) -> None:
        self.reset(ConnectionError("quota store closed"))
