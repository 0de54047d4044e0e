"""A lean HTTP/1.1 upstream client for the common forward (plain ``http://``, no upgrade).

aiohttp's client spends ~20% of the gate's CPU per request on layers a proxy does not need
(URL objects, payload registry, per-request timers, trace hooks, cookie handling). This client
keeps a keep-alive pool of asyncio streams per upstream address, writes the request head and the
(already buffered) body in one ``write``, and parses the response head itself. It handles
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

HEAD_LIMIT = 64 * 1024  # bytes of response status line + headers (aiohttp: 8190 per line)
_NO_BODY_STATUS = frozenset({204, 304})
# aiohttp's client sends "Content-Length: 0" for a body-less request outside these methods.
_GET_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class BadUpstream(Exception):
    """The upstream's response could not be parsed (answered as 502)."""


class Unsendable(Exception):
    """The request cannot be written by the lean client (the caller uses aiohttp's)."""


@dataclass(slots=True)
class Conn:
    """One pooled keep-alive connection."""

    key: tuple[str, int]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0
    # The read deadline of the exchange in progress (pooled connections; see ``send``).
    deadline: LazyDeadline | None = None
    expired: bool = False  # the deadline passed: the connection was aborted

    def close(self) -> None:
        self.writer.close()
        if self.deadline is not None:
            self.deadline.close()

    def expire(self) -> None:
        self.expired = True
        self.writer.transport.abort()  # wakes the waiting read with an error


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
    parts = [f"{method} {target} HTTP/1.1\r\n"]
    parts += [f"{k}: {v}\r\n" for k, v in headers]
    if body_len is not None:
        parts.append(f"Content-Length: {body_len}\r\n")
    elif method not in _GET_METHODS:
        parts.append("Content-Length: 0\r\n")
    parts.append("\r\n")
    text = "".join(parts)
    # SECURITY: header injection. Every CR and LF must be one of the line ends written above.
    lines = len(parts)
    if text.count("\r") != lines or text.count("\n") != lines:
        raise Unsendable("CR or LF in the request line or a header")
    try:
        return text.encode("utf-8")
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

    async def acquire(self, host: str, port: int) -> Conn:
        idle = self._idle.get((host, port))
        if idle:
            now = asyncio.get_running_loop().time()
            while idle:
                conn = idle.pop()
                reader = conn.reader
                # The upstream closed it (EOF seen), sent something unasked, or it sat too long.
                if (
                    now - conn.idle_since > self.keepalive_s
                    or reader.at_eof()
                    or reader._buffer  # type: ignore[attr-defined]
                    or conn.writer.is_closing()
                ):
                    conn.close()
                    continue
                return conn
        async with asyncio.timeout(self.connect_timeout_s):
            reader, writer = await asyncio.open_connection(host, port, limit=HEAD_LIMIT)
        conn = Conn((host, port), reader, writer)
        conn.deadline = LazyDeadline(asyncio.get_running_loop(), self.read_timeout_s, conn.expire)
        return conn

    def release(self, resp: Response) -> None:
        """Back to the pool when the body was read to its end and both sides keep it alive."""
        conn = resp.conn
        if self._closed or not (resp.done and resp.keep_alive) or conn.writer.is_closing():
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
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
    conn = await pool.acquire(host, port)
    deadline = conn.deadline
    assert deadline is not None  # every pooled connection has one
    try:
        deadline.set(pool.read_timeout_s)
        conn.writer.write(head + body if body else head)
        await conn.writer.drain()
        while True:
            resp = _parse_head(await _read_head(conn.reader), conn, method)
            if resp is None:
                continue
            if resp.length is not None and resp.length <= small and not resp.no_body:
                try:
                    resp.body = await conn.reader.readexactly(resp.length)
                except asyncio.IncompleteReadError:
                    raise BadUpstream("response body cut short") from None
                resp.done = True
            deadline.clear()
            return resp
    except BaseException as exc:
        conn.close()
        if conn.expired and not isinstance(exc, asyncio.CancelledError):
            raise TimeoutError(f"no response within {pool.read_timeout_s:g}s") from None
        raise


async def open_upgrade(
    host: str,
    port: int,
    head: bytes,
    *,
    ssl: Any,
    connect_timeout_s: float,
    read_timeout_s: float,
) -> Response:
    """Send an upgrade request on a fresh (never pooled) connection and read the response head.

    A ``101`` comes back with ``no_body`` set and the connection left open for the tunnel; any
    other status is an ordinary response whose body ``iter_body`` reads. Errors as ``send``.
    """
    async with asyncio.timeout(connect_timeout_s):
        reader, writer = await asyncio.open_connection(host, port, limit=HEAD_LIMIT, ssl=ssl)
    conn = Conn((host, port), reader, writer)
    try:
        writer.write(head)
        async with asyncio.timeout(read_timeout_s):
            while True:
                resp = _parse_head(await _read_head(reader), conn, "GET", allow_switch=True)
                if resp is not None:
                    resp.keep_alive = False
                    return resp
    except BaseException:
        conn.close()
        raise


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ConnectionResetError("upstream closed the connection") from None
        raise BadUpstream("response head cut short") from None
    except asyncio.LimitOverrunError:
        raise BadUpstream("response head too large") from None


def _parse_head(
    raw: bytes, conn: Conn, method: str, *, allow_switch: bool = False
) -> Response | None:
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
    switch = status == 101 and allow_switch
    if 100 <= status < 200 and not switch:
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
    if method == "HEAD" or status in _NO_BODY_STATUS or switch:
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


async def iter_body(resp: Response, chunk: int, timeout: float) -> AsyncIterator[bytes]:
    """The body in pieces of at most ``chunk`` bytes; each read has its own ``timeout``."""
    reader = resp.conn.reader
    if resp.no_body:
        resp.done = True
        return
    if resp.length is not None:
        left = resp.length
        while left:
            async with asyncio.timeout(timeout):
                data = await reader.read(min(chunk, left))
            if not data:
                raise BadUpstream("response body cut short")
            left -= len(data)
            yield data
    elif resp.chunked:
        while True:
            async with asyncio.timeout(timeout):
                try:
                    line = await reader.readuntil(b"\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    raise BadUpstream("bad chunk size line") from None
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
                        try:
                            trailer = await reader.readuntil(b"\r\n")
                        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                            raise BadUpstream("bad chunked trailer") from None
                    if trailer == b"\r\n":
                        break
                break
            while size:
                async with asyncio.timeout(timeout):
                    data = await reader.read(min(chunk, size))
                if not data:
                    raise BadUpstream("response body cut short")
                size -= len(data)
                yield data
            async with asyncio.timeout(timeout):
                try:
                    end = await reader.readexactly(2)
                except asyncio.IncompleteReadError:
                    raise BadUpstream("chunk not terminated") from None
            if end != b"\r\n":
                raise BadUpstream("chunk not terminated")
    else:
        while True:
            async with asyncio.timeout(timeout):
                data = await reader.read(chunk)
            if not data:
                break
            yield data
    resp.done = True
