"""A lean HTTP/1.1 upstream client for the common forward (plain ``http://``, no upgrade).

aiohttp's client costs the gate a large share of its CPU per request on layers a proxy does not
need (URL objects, payload registry, per-request timers, trace hooks, cookie handling): in a
whole-request A/B (``bench/ab.py``) the gate forwarding through it answered markedly fewer
requests per second than through this client, so this client stays, with protocol tests of its
own (``tests/proxy/test_lean_*.py``, and byte for byte through the gate in
``tests/e2e/test_server.py``). This client keeps a keep-alive pool of connections per upstream
address (``Conn``: an asyncio protocol that buffers for its one reader, no streams), writes the
request head and the (already buffered) body in one ``write``, and parses the response head
itself. It handles
``Content-Length``, ``chunked`` and read-until-close bodies and 1xx interim responses; anything
it does not take (WebSockets, streamed request bodies, ``https``) stays on aiohttp's client.
Each pooled connection keeps its read deadline in one ``LazyDeadline`` (no timer per exchange).

Strictness matches aiohttp's parser where it matters for safety: a response with both
``Transfer-Encoding`` and ``Content-Length``, a non-chunked transfer coding, a malformed
length, an obsolete line fold or a header name with whitespace is refused (502), never guessed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from .deadline import LazyDeadline
from .headers import has_line_break

HEAD_LIMIT = 64 * 1024  # bytes of response status line + headers (aiohttp: 8190 per line)
_NO_BODY_STATUS = frozenset({204, 304})
# aiohttp's client sends "Content-Length: 0" for a body-less request outside these methods.
_GET_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_HEAD_END = b"\r\n\r\n"


class BadUpstream(Exception):
    """The upstream's response could not be parsed (answered as 502)."""


class Unsendable(Exception):
    """The request cannot be written by the lean client (the caller uses aiohttp's)."""


class Conn(asyncio.Protocol):
    """One upstream connection: the protocol itself buffers what arrives and wakes one reader.

    asyncio's streams cost a ``StreamReaderProtocol``, a ``StreamReader`` and a ``StreamWriter``
    per connection and a dozen Python calls per exchange (``feed_data``, ``readuntil``'s wait
    loop, ``readexactly``, ``drain``); here ``data_received`` appends to one buffer and resolves
    the waiting read's future, and a read that finds its bytes already buffered does not wait.
    Reading pauses while more than ``2 * HEAD_LIMIT`` bytes sit unread (as ``StreamReader``).
    """

    def __init__(self, key: tuple[str, int], loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.error: BaseException | None = None  # why the connection was lost, if not a clean EOF
        self._waiter: asyncio.Future[None] | None = None
        self._read_paused = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        # The read deadline of the exchange in progress (pooled connections; see ``send``).
        self.deadline: LazyDeadline | None = None
        self.expired = False  # the deadline passed: the connection was aborted

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > 2 * HEAD_LIMIT and not self._read_paused and self.transport:
            self._read_paused = True
            self.transport.pause_reading()
        _resolve(self._waiter)

    def eof_received(self) -> bool | None:
        self.eof = True
        _resolve(self._waiter)
        return None  # close the transport: an upstream that stopped sending is done with us

    def connection_lost(self, exc: BaseException | None) -> None:
        self.eof = True
        if exc is not None:
            self.error = exc
        _resolve(self._waiter)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("upstream connection lost"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        _resolve(self._drain_waiter)

    # -- writing
    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("upstream connection closed")
        transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        if self.write_paused and not self.eof:
            waiter = self._drain_waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self._drain_waiter = None

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    # -- reading
    def _more(self) -> asyncio.Future[None]:
        """A future that more bytes, EOF or the connection's loss resolves; awaited only before
        EOF, after which the reader raises ``error`` if set (as a stream would). A plain future,
        not a coroutine: a response head waits on one every time."""
        self._resume_reading()  # a reader that needs more must not wait on a paused transport
        waiter = self._waiter = self.loop.create_future()
        return waiter

    def take(self, n: int) -> bytes:
        """The first ``n`` buffered bytes (the caller saw that many are there)."""
        buf = self.buf
        data = bytes(buf[:n])
        del buf[:n]
        if len(buf) <= HEAD_LIMIT:
            self._resume_reading()
        return data

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    async def read_until(self, sep: bytes, what: str) -> bytes:
        """Bytes up to and including ``sep`` (within ``HEAD_LIMIT``).

        ``ConnectionResetError`` at EOF before any byte, ``BadUpstream`` when cut short or over
        the limit.
        """
        start = 0
        while True:
            i = self.buf.find(sep, start)
            if i >= 0:
                end = i + len(sep)
                if end > HEAD_LIMIT:
                    raise BadUpstream(f"{what} too large")
                return self.take(end)
            if len(self.buf) > HEAD_LIMIT:
                raise BadUpstream(f"{what} too large")
            if self.eof:
                if not self.buf:
                    raise ConnectionResetError("upstream closed the connection")
                raise BadUpstream(f"{what} cut short")
            start = max(0, len(self.buf) - len(sep) + 1)
            await self._more()
            if self.error is not None:
                raise self.error

    async def read_exactly(self, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes of ``what``; ``BadUpstream`` when the connection ends first."""
        while len(self.buf) < n:
            if self.eof:
                raise BadUpstream(f"{what} cut short")
            await self._more()
            if self.error is not None:
                raise self.error
        return self.take(n)

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes as soon as any are there; ``b""`` at a clean EOF.

        A connection lost to an error raises it instead: a reset must not pass for the end of a
        body delimited by the close.
        """
        while not self.buf:
            if self.error is not None:
                raise self.error
            if self.eof:
                return b""
            await self._more()
            if self.error is not None:
                raise self.error
        return self.take(n)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.deadline is not None:
            self.deadline.close()

    def expire(self) -> None:
        self.expired = True
        if self.transport is not None:
            self.transport.abort()  # wakes the waiting read with an error


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    """Wake whoever awaits ``waiter`` (a read or a drain), if anyone still does."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


@dataclass(slots=True)
class Response:
    """A response head, with the connection its body is read from."""

    status: int
    reason: str
    headers: list[tuple[str, str]]  # as received, in order
    length: int | None  # Content-Length, or None when chunked / until close / no body
    chunked: bool
    until_close: bool
    keep_alive: bool
    conn: Conn
    no_body: bool = False
    connection: str = ""  # the Connection header's values, comma-joined, lower case
    done: bool = field(default=False)
    body: bytes | None = None  # read with the head when its length is known and small


def encode_head(
    method: str, target: str, headers: Iterable[tuple[str, str]], body_len: int | None
) -> bytes:
    """The request head; ``Unsendable`` when a name or value holds CR/LF (aiohttp refuses too)."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body_len is not None:
        lines.append(f"Content-Length: {body_len}")
    elif method not in _GET_METHODS:
        lines.append("Content-Length: 0")
    # SECURITY: header injection. No line may hold a CR or LF of its own.
    if has_line_break("".join(lines)):
        raise Unsendable("CR or LF in the request line or a header")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("utf-8")
    except UnicodeEncodeError:
        raise Unsendable("header not encodable") from None


class LeanPool:
    """Keep-alive connections per (host, port); idle ones older than ``keepalive_s`` are closed."""

    def __init__(
        self, *, connect_timeout_s: float, read_timeout_s: float, keepalive_s: float = 30.0
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_s = keepalive_s
        self._idle: dict[tuple[str, int], list[Conn]] = {}
        self._closed = False

    def reuse(self, host: str, port: int) -> Conn | None:
        """An idle connection to ``host:port`` that can take a request, if there is one."""
        idle = self._idle.get((host, port))
        if idle:
            now = idle[-1].loop.time()
            while idle:
                conn = idle.pop()
                # The upstream closed it (EOF seen), sent something unasked, or it sat too long.
                if now - conn.idle_since > self.keepalive_s or conn.eof or conn.buf:
                    conn.close()
                    continue
                return conn
        return None

    async def open(self, host: str, port: int) -> Conn:
        """A new connection to ``host:port``, with its read deadline."""
        conn = await connect(host, port, self.connect_timeout_s)
        conn.deadline = LazyDeadline(conn.loop, self.read_timeout_s, conn.expire)
        return conn

    def release(self, resp: Response) -> None:
        """Back to the pool when the body was read to its end and both sides keep it alive."""
        conn = resp.conn
        if self._closed or not (resp.done and resp.keep_alive) or conn.is_closing():
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)

    def close(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


async def send(
    pool: LeanPool,
    host: str,
    port: int,
    head: bytes,
    body: bytes | None,
    *,
    method: str,
    small: int = 0,
) -> Response:
    """Send one request and read the response head (one deadline for connect + head).

    A body with a known length of at most ``small`` bytes is read under the same deadline
    (``Response.body``).

    Raises ``OSError``/``ConnectionError`` (unreachable), ``TimeoutError`` or ``BadUpstream``;
    the connection is closed on any failure. The deadline is the connection's own
    (``LazyDeadline``: no timer per request); when it passes, the connection is aborted and the
    read that was waiting fails as ``TimeoutError``.
    """
    # An idle connection without a coroutine, else a new one.
    conn = pool.reuse(host, port) or await pool.open(host, port)
    deadline = conn.deadline
    assert deadline is not None  # every pooled connection has one
    try:
        deadline.set(pool.read_timeout_s)
        conn.write(head + body if body else head)
        if conn.write_paused:
            await conn.drain()
        while True:
            resp = _parse_head(await conn.read_until(_HEAD_END, "response head"), conn, method)
            if resp is None:
                continue
            n = resp.length
            if n is not None and n <= small and not resp.no_body:
                # A small body usually came with its head: taken without a wait.
                buffered = len(conn.buf) >= n
                resp.body = (
                    conn.take(n) if buffered else await conn.read_exactly(n, "response body")
                )
                resp.done = True
            deadline.clear()
            return resp
    except BaseException as exc:
        conn.close()
        if conn.expired and not isinstance(exc, asyncio.CancelledError):
            raise TimeoutError(f"no response within {pool.read_timeout_s:g}s") from None
        raise


async def connect(host: str, port: int, timeout: float, *, ssl: Any = None) -> Conn:
    """A new connection to ``host:port`` (TLS when ``ssl`` is a context), within ``timeout``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, conn = await loop.create_connection(
            lambda: Conn((host, port), loop), host, port, ssl=ssl
        )
    return conn


def _parse_head(raw: bytes, conn: Conn, method: str) -> Response | None:
    """The parsed head, or None for a 1xx interim response (skipped)."""
    end = raw.find(b"\r\n")  # the head ends with CRLF CRLF, so end >= 0
    status_line = raw[:end]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
        raise BadUpstream("bad status line")
    http11 = status_line[7:8] == b"1"
    code = status_line[9:12]
    if not code.isdigit() or (len(status_line) > 12 and status_line[12:13] != b" "):
        raise BadUpstream("bad status code")
    status = int(code)
    if status < 100:
        raise BadUpstream("bad status code")
    if 100 <= status < 200:
        if status == 101:
            raise BadUpstream("unexpected protocol switch")
        return None
    reason = status_line[13:].decode("latin-1")
    headers: list[tuple[str, str]] = []
    te: str | None = None
    length: int | None = None
    conn_tokens = ""
    # One decode for the whole block: CR and LF bytes never occur inside a UTF-8 sequence, so
    # this equals decoding line by line (surrogateescape keeps undecodable bytes as they were).
    block = raw[end + 2 : -4].decode("utf-8", "surrogateescape") if end + 4 < len(raw) else ""
    for line in block.split("\r\n") if block else ():
        k, sep, v = line.partition(":")
        if not sep or not k or k[-1] in " \t" or line[0] in " \t":
            raise BadUpstream("malformed header line")
        v = v.strip(" \t")
        if k[0] in "cCtT":  # only three names matter for framing: skip lower() for the rest
            lk = k.lower()
            if lk == "content-length":
                if not v.isdigit() or not v.isascii() or (length is not None and int(v) != length):
                    raise BadUpstream("bad Content-Length")
                length = int(v)
            elif lk == "transfer-encoding":
                if te is not None:
                    raise BadUpstream("repeated Transfer-Encoding")
                te = v.lower()
            elif lk == "connection":
                conn_tokens += "," + v.lower()
        headers.append((k, v))
    keep_alive = http11 and "close" not in {t.strip() for t in conn_tokens.split(",")}
    if method == "HEAD" or status in _NO_BODY_STATUS:
        return Response(
            status, reason, headers, length, False, False, keep_alive, conn, True, conn_tokens
        )
    if te is not None:
        if length is not None or te != "chunked":
            # SECURITY: a length two ways is a smuggling vector; other codings we cannot frame.
            raise BadUpstream("unsupported Transfer-Encoding")
        return Response(
            status, reason, headers, None, True, False, keep_alive, conn, False, conn_tokens
        )
    if length is None:
        return Response(status, reason, headers, None, False, True, False, conn, False, conn_tokens)
    return Response(
        status, reason, headers, length, False, False, keep_alive, conn, False, conn_tokens
    )


async def _piece(conn: Conn, left: int, chunk: int, timeout: float) -> bytes:
    """The next piece, at most ``chunk`` bytes, of the ``left`` bytes the body still owes."""
    async with asyncio.timeout(timeout):
        data = await conn.read(min(chunk, left))
    if not data:
        raise BadUpstream("response body cut short")
    return data


async def iter_body(resp: Response, chunk: int, timeout: float) -> AsyncIterator[bytes]:
    """The body in pieces of at most ``chunk`` bytes; each read has its own ``timeout``."""
    conn = resp.conn
    if resp.no_body:
        resp.done = True
        return
    if resp.length is not None:
        left = resp.length
        while left:
            data = await _piece(conn, left, chunk, timeout)
            left -= len(data)
            yield data
    elif resp.chunked:
        while True:
            async with asyncio.timeout(timeout):
                line = await conn.read_until(b"\r\n", "chunk size line")
            size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
            if not size_text or len(size_text) > 16:
                raise BadUpstream("bad chunk size")
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadUpstream("bad chunk size") from None
            if size_text[:1] in b"+-_" or b"_" in size_text:
                raise BadUpstream("bad chunk size")
            if size == 0:
                # Trailers (dropped, as aiohttp does) up to the empty line.
                while True:
                    async with asyncio.timeout(timeout):
                        trailer = await conn.read_until(b"\r\n", "chunked trailer")
                    if trailer == b"\r\n":
                        break
                break
            while size:
                data = await _piece(conn, size, chunk, timeout)
                size -= len(data)
                yield data
            async with asyncio.timeout(timeout):
                end = await conn.read_exactly(2, "chunk terminator")
            if end != b"\r\n":
                raise BadUpstream("chunk not terminated")
    else:
        while True:
            async with asyncio.timeout(timeout):
                data = await conn.read(chunk)
            if not data:
                break
            yield data
    resp.done = True
