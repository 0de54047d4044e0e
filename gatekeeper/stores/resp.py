"""A minimal pipelined RESP connection for the quota store's hot call (``EVALSHA``).

redis-py spends ~400 Python calls per command on the way in and out; a consume per request makes
that ~10% of the gate's CPU. This connection writes every command queued in one event-loop turn
with one ``write`` and parses replies with hiredis' C reader, matching them to callers in order
(RESP answers in order on one connection), so concurrent requests pipeline by themselves.

Failure: a lost connection, an overdue reply, a cancelled caller or a protocol error closes the
connection and fails every outstanding call (``TimeoutError`` for the overdue ones,
``ConnectionError`` for the rest); the next call reconnects. Nothing is ever resent (a script whose
reply was lost may have run), as in the store's module docstring. Only plain TCP (``redis://``)
uses it; TLS, unix sockets and clusters stay on redis-py.

Timeouts: one watchdog timer per connection instead of one ``asyncio.timeout`` per call. Replies
come in order, so the oldest outstanding call is always the first to become overdue; the watchdog
fires at the oldest call's deadline (``timeout_s`` after it was queued) and either resets the
connection or, if that call has been answered meanwhile, re-arms for the new oldest one. Every call
thus fails within ``timeout_s`` of being queued, as a per-call timer would make it, at the cost of
about one timer per ``timeout_s`` instead of one per call.
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
        timeout_s: float | None = None,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.connect_timeout_s = connect_timeout_s
        # A reply later than this (after its command was queued) resets the connection.
        self.timeout_s = connect_timeout_s if timeout_s is None else timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        # Outstanding calls in send order, each with its deadline (loop time): replies pop them.
        self._waiters: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._connecting: asyncio.Future[None] | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def call(self, args: tuple[Any, ...]) -> Any:
        """Send one command; its reply (hiredis.ReplyError instances are returned, not raised)."""
        return await self.send(encode(args))

    async def send(self, command: bytes) -> Any:
        """Send one RESP-encoded command (see ``encode``); its reply, as ``call``.

        Fails with ``TimeoutError`` if no reply came within ``timeout_s`` (connecting first, if
        needed, is bounded by ``connect_timeout_s`` on top).
        """
        if self._writer is None:
            await self._connect()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self.timeout_s
        self._waiters.append((fut, deadline))
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._watch)
        self._out.append(command)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        try:
            return await fut
        except asyncio.CancelledError:
            # A caller that gave up (an outer timeout, a cancelled request) leaves the stream in
            # an unknown state. Start over rather than risk pairing replies with the wrong caller.
            self.reset(ConnectionError("quota store call abandoned"))
            raise

    def _watch(self) -> None:
        """The watchdog: reset if the oldest outstanding call is overdue, else re-arm for it."""
        self._watchdog = None
        if not self._waiters:
            return  # idle; the next call arms a new timer
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = self._waiters[0][1]
        if deadline <= now:
            self.reset(ConnectionError("quota store call abandoned"), overdue_at=now)
        else:
            self._watchdog = loop.call_at(deadline, self._watch)

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
            # Written together, before the first await: a concurrent caller's command (queued once
            # `_writer` is set) must not reach the server between AUTH and SELECT.
            futs: list[asyncio.Future[Any]] = [loop.create_future() for _ in setup]
            for fut in futs:
                self._waiters.append((fut, loop.time() + self.connect_timeout_s))
            if setup:
                writer.write(b"".join(encode(cmd) for cmd in setup))
            for cmd, fut in zip(setup, futs, strict=True):
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
                    fut = waiters.popleft()[0]
                    if not fut.done():
                        fut.set_result(reply)
        except (OSError, hiredis.ProtocolError, ConnectionError):
            pass
        if self._writer is writer:
            self.reset(ConnectionError("quota store connection lost"))

    def reset(self, exc: BaseException, *, overdue_at: float | None = None) -> None:
        """Close the connection and fail every outstanding call.

        With ``overdue_at`` (the watchdog's loop time), calls whose deadline has passed get a
        ``TimeoutError`` and the others ``exc``.
        """
        writer, self._writer = self._writer, None
        task, self._reader_task = self._reader_task, None
        if writer is not None:
            writer.close()
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._out.clear()
        while self._waiters:
            fut, deadline = self._waiters.popleft()
            if not fut.done():
                overdue = overdue_at is not None and deadline <= overdue_at
                fut.set_exception(TimeoutError() if overdue else exc)
                fut.exception()  # retrieved: callers that left must not log "never retrieved"

    async def close(self) -> None:
        self.reset(ConnectionError("quota store closed"))
