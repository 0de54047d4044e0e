"""The proxy listener's HTTP/1.1 server: one asyncio protocol per connection, no web framework.

Why not aiohttp's ``web.Server``: per request it builds a ``BaseRequest``, a ``StreamResponse``
with its own header dict, date and keep-alive bookkeeping, and an access-log hook; measured on
this gate's request (bench/README.md) that framework layer cost ~17 µs of CPU per request over
the parser itself, a tenth of the gate's budget. This module keeps the part that matters for
safety, aiohttp's C HTTP parser (llhttp in strict mode, the same limits and the same refusals of
smuggling shapes: CL+TE, duplicate Content-Length, obs-fold, bare CR/LF, NUL, space before the
colon), and its flow-controlled payload ``StreamReader``; around them it does only what a gate
needs:

* **Requests in order.** Pipelined requests queue and are answered one after another; reading
  pauses while ``MAX_QUEUED`` wait. A request's body streams through its ``StreamReader``
  (reading pauses at the reader's high-water mark), so a 200 MB upload never sits in memory.
* **Header deadline.** ``limits.header_timeout_s`` is armed when a connection opens and when the
  first byte of a further request arrives on a kept-alive one; a request head not complete by
  then (slowloris), or a new connection that sends nothing, is closed. Between requests a
  kept-alive connection may idle for ``limits.keepalive_timeout_s`` (75 s, as nginx): a client
  pool whose idle connections outlive the server's is the one that races the close, and a
  submission is a POST no client retries by itself. No deadline runs while a request is being
  handled (the body has its own, ``limits.body_timeout_s``, and the upstream its own). These
  deadlines move several times per request; one lazily re-armed timer per connection keeps them
  (``deadline.LazyDeadline``) rather than a timer per move.
* **Malformed HTTP** gets problem+json (400, or 431 for a line, field or header count over the
  limit) with a fresh decision id, one INFO log line, a ``gatekeeper_denials_total{route="-"}``
  count, and the connection is closed: after a framing error the rest of the stream cannot be
  trusted. Such requests never reach the decision pipeline, so there is no audit record.
* **Responses** are written by a ``Responder``: a whole response (head and body in one write), or
  a streamed one (``Content-Length`` when known, else chunked, or close-delimited for HTTP/1.0),
  with write back-pressure. The head is checked for CR/LF injection (an upstream header value
  must never split the response).
* **WebSocket upgrades** (the parser switches only for ``Upgrade: websocket``): the bytes after
  the request head are held until the handler decides; an allowed upgrade becomes a byte tunnel
  to the upstream (``GateRequest.tunnel``), a refused one is answered and the connection closed.
* **Bodies are not decompressed** (``Content-Encoding`` is passed through untouched): the
  measured routes refuse encoded bodies (400 ``content-encoding``: CONTRACT §3 answers a submission
  body the gate cannot measure with 400) rather than measure one thing and forward another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus

from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDictProxy

from .. import metrics
from .deadline import LazyDeadline
from .headers import has_line_break
from .ids import new_decision_id
from .problem import problem_reply

log = logging.getLogger("gatekeeper.proxy")

R_BAD_HTTP = "bad-http"
R_HEADER_TOO_LARGE = "header-too-large"
READ_LIMIT = 2**16  # payload StreamReader high-water mark (aiohttp's default read_bufsize)
MAX_QUEUED = 16  # pipelined requests held before reading pauses
MAX_HEADERS = 128  # header fields per request (aiohttp's default)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

Handler = Callable[["GateRequest", "Responder"], Awaitable[None]]


class RequestPayloadError(Exception):
    """The request body broke off or its chunked framing was invalid."""


# ------------------------------------------------------------------------------------ errors


def _first_line(text: str, limit: int = 160) -> str:
    """The parser's message without the echoed request bytes, printable and bounded."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = line.removeprefix("400, message:").strip().rstrip(":")
    return "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in line[:limit])


def classify(exc: BaseException | None, status: int) -> tuple[int, str, str]:
    """(status, reason, detail) for an error the HTTP parser raised."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "the limit"
        return 431, R_HEADER_TOO_LARGE, f"request line or header field longer than {limit} bytes"
    if isinstance(exc, HttpProcessingError):
        message = exc.message if isinstance(exc.message, str) else str(exc)
        if "Too many headers" in message:
            return 431, R_HEADER_TOO_LARGE, "too many header fields"
        return 400, R_BAD_HTTP, _first_line(message) or "malformed HTTP request"
    if status >= 500:
        return 500, "internal-error", "the gate failed to answer"
    return status, R_BAD_HTTP, "malformed HTTP request"


# ------------------------------------------------------------------------------- the request


class GateRequest:
    """One parsed client request: the head, and the body as a flow-controlled stream."""

    __slots__ = (
        "_conn",
        "_continued",
        "_length",
        "content",
        "headers",
        "method",
        "peer_ip",
        "raw_path",
        "scheme",
        "upgrade",
        "version",
    )

    def __init__(self, msg: RawRequestMessage, payload: StreamReader, conn: GateProtocol) -> None:
        self.method: str = msg.method
        self.raw_path: str = msg.path
        self.version = msg.version
        self.headers: CIMultiDictProxy[str] = msg.headers
        self.content = payload
        self.peer_ip = conn.peer_ip
        self.scheme = conn.scheme
        self.upgrade = conn.upgraded_message is msg
        self._conn = conn
        self._continued = False
        self._length: int | None = -1  # -1: not looked up yet

    @property
    def content_length(self) -> int | None:
        length = self._length
        if length == -1:
            # Read several times per request; the header lookup is case-insensitive, so once.
            value = self.headers.get("Content-Length")
            # The parser has already refused a malformed or repeated Content-Length.
            length = self._length = int(value) if value is not None else None
        return length

    @property
    def body_exists(self) -> bool:
        return self.content is not EMPTY_PAYLOAD

    def send_continue(self) -> None:
        """``100 Continue`` once, when the client asked for it and the body is still to come."""
        if self._continued or self.version < (1, 1) or self.content.is_eof():
            return
        self._continued = True
        if self.headers.get("Expect", "").lower() == "100-continue":
            self._conn.write_raw(_CONTINUE)

    def tunnel(self) -> Tunnel:
        """Take over the connection as a byte tunnel (an accepted WebSocket upgrade)."""
        return self._conn.start_tunnel()


class Tunnel:
    """Both directions of an upgraded connection, as raw bytes."""

    def __init__(self, conn: GateProtocol) -> None:
        self._conn = conn
        self.sink: Callable[[bytes], None] | None = None
        self.closed: asyncio.Future[None] = conn.loop.create_future()

    def attach(self, sink: Callable[[bytes], None]) -> None:
        """Deliver the client's bytes to ``sink`` from now on, first those held since the switch."""
        self.sink = sink
        held = self._conn.take_held()
        if held:
            sink(held)

    def write(self, data: bytes) -> None:
        if self._conn.transport is not None:
            self._conn.transport.write(data)

    async def drain(self) -> None:
        if self._conn.writing_paused:
            await self._conn._drain_helper()

    def pause_client(self) -> None:
        self._conn._pause_reading_for_buffer()

    def resume_client(self) -> None:
        self._conn._resume_reading_for_buffer()

    def close(self) -> None:
        if self._conn.transport is not None:
            self._conn.transport.close()


# ------------------------------------------------------------------------------ the response


_date_cache: tuple[int, bytes] = (0, b"")


def _date() -> bytes:
    """The ``Date`` header line, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n")
    return _date_cache[1]


class UnsafeHeader(ValueError):
    """A status reason or header would put CR or LF into the response head."""


_NO_BODY = frozenset({204, 304})


def encode_head(
    status: int,
    reason: str,
    headers: Iterable[tuple[str, str]],
    framing: bytes,
    connection: bytes,
) -> bytes:
    """Status line, headers, ``Date``, framing (length or chunked) and a ``Connection`` line."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    # SECURITY: response splitting. No line may hold a CR or LF of its own.
    if has_line_break("".join(lines)):
        raise UnsafeHeader("CR or LF in the status reason or a response header")
    lines.append("")
    text = "\r\n".join(lines)
    return text.encode("utf-8", "surrogateescape") + _date() + framing + connection + b"\r\n"


class Responder:
    """Writes one response on the request's connection (see the module docstring)."""

    __slots__ = ("_conn", "_head_only", "_mode", "finished", "keep_alive", "started")

    def __init__(self, conn: GateProtocol, *, head_only: bool, keep_alive: bool) -> None:
        self._conn = conn
        self._head_only = head_only
        self.keep_alive = keep_alive
        self.started = False
        self.finished = False
        self._mode = ""  # "length" | "chunked" | "close" | "none" (204/304)

    def send(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        reason: str | None = None,
    ) -> None:
        """A whole response, head and body in one write."""
        if status in _NO_BODY or status < 200:  # 1xx (a 101 switch), 204, 304: no framing
            framing, body = b"", b""
        else:
            framing = b"Content-Length: %d\r\n" % len(body)
        head = encode_head(status, _reason(status, reason), headers, framing, self._connection())
        self._begin()
        self._conn.write_raw(head if self._head_only or not body else head + body)
        self.finished = True

    async def start(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        length: int | None,
        reason: str | None = None,
    ) -> None:
        """Begin a streamed response; ``length`` None means chunked (close-delimited on 1.0)."""
        if status in _NO_BODY or status < 200:
            self._mode, framing = "none", b""
        elif length is not None:
            self._mode, framing = "length", b"Content-Length: %d\r\n" % length
        elif self._head_only:
            self._mode, framing = "length", b""
        elif self._conn.http10:
            self._mode, framing = "close", b""
            self.keep_alive = False
        else:
            self._mode, framing = "chunked", b"Transfer-Encoding: chunked\r\n"
        head = encode_head(status, _reason(status, reason), headers, framing, self._connection())
        self._begin()
        self._conn.write_raw(head)
        await self._conn.drain()

    def _connection(self) -> bytes:
        if not self.keep_alive:
            return b"Connection: close\r\n"
        return b"Connection: keep-alive\r\n" if self._conn.http10 else b""

    async def write(self, data: bytes) -> None:
        if self._head_only or not data or self._mode == "none":
            return
        if self._mode == "chunked":
            self._conn.write_raw(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self._conn.write_raw(data)
        await self._conn.drain()

    async def end(self) -> None:
        if self._mode == "chunked" and not self._head_only:
            self._conn.write_raw(b"0\r\n\r\n")
        self.finished = True
        await self._conn.drain()

    def _begin(self) -> None:
        if self.started:
            raise RuntimeError("response already started")
        if self._conn.transport is None or self._conn.transport.is_closing():
            raise ConnectionResetError("client connection lost")
        self.started = True


def _reason(status: int, reason: str | None) -> str:
    if reason:
        return reason
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# ---------------------------------------------------------------------------- the connection


class GateProtocol(BaseProtocol):
    """One client connection (see the module docstring)."""

    def __init__(self, server: GateServer) -> None:
        loop = server.loop
        parser = HttpRequestParser(
            self,
            loop,
            READ_LIMIT,
            max_line_size=server.max_line_size,
            max_field_size=server.max_field_size,
            max_headers=MAX_HEADERS,
            payload_exception=RequestPayloadError,
            auto_decompress=False,
        )
        super().__init__(loop, parser)
        self.loop = loop
        self.server = server
        self.peer_ip = ""
        self.scheme = "http"
        self.http10 = False
        self.upgraded_message: RawRequestMessage | None = None
        self._queue: deque[tuple[RawRequestMessage, StreamReader] | HttpProcessingError] = deque()
        self._current: GateRequest | None = None
        self._responder: Responder | None = None
        self._task: asyncio.Task[None] | None = None
        self._deadline = LazyDeadline(loop, server.deadline_tick_s, self._header_deadline)
        self._idle = False  # the deadline is the keep-alive idle one (no request byte yet)
        self._held = bytearray()  # bytes after an upgrade request, until the handler decides
        self._tunnel: Tunnel | None = None
        self._stopping = False  # no further requests: answer what is queued, then close

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, tuple) and peer else ""
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self.server.connections.add(self)
        self._arm_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server.connections.discard(self)
        super().connection_lost(exc)
        self._idle = False
        self._deadline.close()
        lost = exc if exc is not None else ConnectionResetError("Connection lost")
        if self._current is not None:
            self._current.content.set_exception(lost)
        while self._queue:
            item = self._queue.popleft()
            if not isinstance(item, HttpProcessingError):
                item[1].set_exception(lost)
        if self._tunnel is not None and not self._tunnel.closed.done():
            self._tunnel.closed.set_result(None)
        self._parser = None

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            if self._tunnel.sink is not None and data:
                self._tunnel.sink(data)
            else:
                self._held += data
                if len(self._held) > READ_LIMIT:
                    self._pause_reading_for_buffer()
            return
        if self._stopping or self._parser is None:
            return
        if self._idle:
            # The first byte of the next request: its head must now complete in time.
            self._arm_header_deadline()
        if self.upgraded_message is not None:
            # Held until the handler accepts (tunnel) or refuses (close) the upgrade.
            self._held += data
            if len(self._held) > READ_LIMIT:
                self._pause_reading_for_buffer()
            return
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            self._queue.append(exc)
            self._stopping = True
            self._dispatch()
            return
        if not messages:
            return
        self._clear_deadline()  # a complete head arrived: the header deadline is met
        for item in messages:
            self._queue.append(item)
        if upgraded:
            self.upgraded_message = messages[-1][0]
            self._held += tail
        if len(self._queue) >= MAX_QUEUED:
            self._pause_reading_for_buffer()
        self._dispatch()

    def eof_received(self) -> bool | None:
        return None  # close the transport (half-closed clients get nothing more)

    def resume_reading(self, resume_parser: bool = True) -> None:
        # aiohttp's payload StreamReader calls this whenever its buffer runs low and again at
        # the body's end, paused or not; the base class then feeds the parser an empty chunk
        # (a second data_received per request) and wakes the transport twice. Only a pause
        # (pause_reading: parser and transport) has anything to resume.
        if self._reading_paused:
            super().resume_reading(resume_parser)

    # -- writing
    def write_raw(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client connection lost")
        transport.write(data)

    async def drain(self) -> None:
        if self.writing_paused:
            await self._drain_helper()

    # -- request dispatch
    def _dispatch(self) -> None:
        if self._task is None and self._queue:
            self._task = self.loop.create_task(self._serve())

    async def _serve(self) -> None:
        try:
            while self._queue and self.transport is not None:
                item = self._queue.popleft()
                if (
                    self._buffer_paused
                    and self.upgraded_message is None
                    and len(self._queue) < MAX_QUEUED // 2
                ):
                    self._resume_reading_for_buffer()
                if isinstance(item, HttpProcessingError):
                    self._answer_malformed(item)
                    return
                if not await self._one(*item):
                    return
        finally:
            self._task = None
        if self.transport is not None and not self._queue:
            self._arm_idle()

    async def _one(self, msg: RawRequestMessage, payload: StreamReader) -> bool:
        """Handle one request; False when the connection is to be closed afterwards."""
        request = GateRequest(msg, payload, self)
        self.http10 = msg.version < (1, 1)
        keep_alive = not msg.should_close and not self._stopping
        responder = Responder(self, head_only=msg.method == "HEAD", keep_alive=keep_alive)
        self._current, self._responder = request, responder
        self.server.active += 1
        try:
            await self.server.handler(request, responder)
        except ConnectionError:
            pass  # the client is gone; the handler has recorded what it could
        except Exception:
            log.exception("unhandled error answering a request")
            if not responder.started and self.transport is not None:
                self._send_problem(responder, 500, "internal-error", "the gate failed to answer")
        finally:
            self.server.active -= 1
            self._current = self._responder = None
        transport = self.transport
        if transport is None:
            return False
        if self._tunnel is not None:
            return False  # the tunnel closed the connection when it ended
        if self.upgraded_message is not None and responder.finished and responder.keep_alive:
            # A declined upgrade: what the client sent after it is parsed as further requests.
            self.upgraded_message = None
            if self._parser is not None:
                self._parser.set_upgraded(False)
            held = self.take_held()
            if held:
                self.data_received(held)
        if not responder.finished or not responder.keep_alive or not payload.is_eof():
            # A half-written answer, a closing request, or a body nobody read (its bytes would
            # be taken for the next request): close rather than guess where the next one starts.
            transport.close()
            return False
        return True

    def start_tunnel(self) -> Tunnel:
        self._tunnel = Tunnel(self)
        return self._tunnel

    def take_held(self) -> bytes:
        held = bytes(self._held)
        self._held.clear()
        if self._buffer_paused:
            self._resume_reading_for_buffer()
        return held

    def _answer_malformed(self, exc: HttpProcessingError) -> None:
        status, reason, detail = classify(exc, 400)
        decision_id = new_decision_id()
        # SECURITY: one line, never a traceback: malformed input must not be able to flood logs.
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.INFO
        log.log(
            level,
            "refused malformed request from %s: %d %s (%s) decision %s",
            self.peer_ip or "?",
            status,
            reason,
            detail,
            decision_id,
        )
        metrics.DENIALS.labels("-", reason).inc()
        responder = Responder(self, head_only=False, keep_alive=False)
        self._send_problem(responder, status, reason, detail, decision_id)
        # SECURITY: after a framing error the rest of the stream cannot be trusted: close.
        if self.transport is not None:
            self.transport.close()

    def _send_problem(
        self,
        responder: Responder,
        status: int,
        reason: str,
        detail: str,
        decision_id: str | None = None,
    ) -> None:
        responder.keep_alive = False
        reply = problem_reply(
            status=status,
            reason=reason,
            detail=detail,
            decision_id=decision_id or new_decision_id(),
        )
        with contextlib.suppress(ConnectionError):
            responder.send(reply.status, reply.headers, reply.body)

    # -- deadlines and shutdown
    def _arm_header_deadline(self) -> None:
        self._idle = False
        self._deadline.set(self.server.header_timeout_s)

    def _arm_idle(self) -> None:
        """Between requests: the keep-alive timeout, until the next request's first byte."""
        self._deadline.set(self.server.keepalive_timeout_s)
        self._idle = True

    def _clear_deadline(self) -> None:
        self._idle = False
        self._deadline.clear()

    def _header_deadline(self) -> None:
        self._idle = False
        if self._task is None and not self._queue and self.transport is not None:
            self.transport.close()

    def stop(self) -> None:
        """Graceful stop: finish the request in hand, take no further ones."""
        self._stopping = True
        if self._responder is not None and not self._responder.started:
            self._responder.keep_alive = False  # the answer in hand says "Connection: close"
        if self._task is None and self.transport is not None:
            self.transport.close()


class GateServer:
    """Factory of ``GateProtocol`` connections, and the set of them for a graceful stop."""

    def __init__(
        self,
        handler: Handler,
        *,
        header_timeout_s: float,
        keepalive_timeout_s: float,
        max_line_size: int,
        max_field_size: int,
    ) -> None:
        self.handler = handler
        self.header_timeout_s = header_timeout_s
        self.keepalive_timeout_s = keepalive_timeout_s
        # Connection deadlines re-arm their timer at most this far ahead (deadline.py).
        self.deadline_tick_s = min(header_timeout_s, keepalive_timeout_s)
        self.max_line_size = max_line_size
        self.max_field_size = max_field_size
        self.loop = asyncio.get_running_loop()
        self.connections: set[GateProtocol] = set()
        self.active = 0

    def __call__(self) -> GateProtocol:
        return GateProtocol(self)

    async def shutdown(self, timeout: float) -> None:
        """Stop taking requests, wait up to ``timeout`` for those in hand, then close all."""
        for conn in list(self.connections):
            conn.stop()
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
