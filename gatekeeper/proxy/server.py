"""The proxy listener's HTTP/1.1 server, on aiohttp's low-level server (``web.Server``).

aiohttp parses (llhttp in strict mode: CL+TE, duplicate Content-Length, obs-fold, bare CR/LF,
NUL, space before the colon, a missing Host are refused), keeps requests of a connection in
order (pipelining, with its own queue limit and read pauses), streams bodies through a
flow-controlled ``StreamReader``, frames responses (length, chunked, close-delimited for
HTTP/1.0, none for HEAD/204/304), checks response heads for CR/LF, idles kept-alive
connections out after ``limits.keepalive_timeout_s`` and drains at shutdown. Around it, this
module adds only what a gate needs:

* **Header deadline.** ``limits.header_timeout_s`` runs from a connection's opening and from
  the first byte of a further request on a kept-alive one; a request head not complete by then
  (slowloris), or a new connection that sends nothing, is closed. No deadline runs while a
  request is being handled (the body has its own, ``limits.body_timeout_s``; the upstream its
  own). One lazily re-armed timer per connection keeps it (``deadline.LazyDeadline``).
* **Malformed HTTP** is answered with problem+json (400 ``bad-http``, or 431
  ``header-too-large`` for a line, field or header count over the limit) with a fresh decision
  id, one log line and a ``gatekeeper_denials_total{route="-"}`` count, and the connection is
  closed: after a framing error the rest of the stream cannot be trusted. Such requests never
  reach the decision pipeline (there is no request to decide on), so there is no audit record.
* **Responses** go out through a ``Responder`` (one per request): a whole response or a streamed
  one, and the refusal of a head that would carry CR or LF (``UnsafeHeader``).
* **Upgrades other than WebSocket** (``h2c``, ...): aiohttp's parser stops reading the bytes
  that follow such a request in the same packet; the answer to it therefore closes the
  connection, so a request pipelined behind it is refused (never silently lost on an open one).
* **Bodies are not decompressed** (``auto_decompress=False``): the measured routes refuse
  encoded bodies rather than measure one thing and forward another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from itertools import chain
from typing import Any

from aiohttp import web
from aiohttp.http import HttpProcessingError
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from multidict import CIMultiDict

from .. import metrics
from ..context import R_BAD_HTTP, R_HEADER_TOO_LARGE, R_INTERNAL_ERROR
from .deadline import LazyDeadline
from .headers import has_line_break
from .ids import new_decision_id
from .problem import problem_reply

log = logging.getLogger("gatekeeper.proxy")

READ_LIMIT = 2**16  # payload StreamReader high-water mark (aiohttp's default read_bufsize)
MAX_HEADERS = 128  # header fields per request (aiohttp's default)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
SERVER_NAME = "gatekeeper"  # instead of aiohttp's default, which names its version

Handler = Callable[["GateRequest", "Responder"], Awaitable[None]]
GateRequest = web.BaseRequest
RequestPayloadError = web.RequestPayloadError


class UnsafeHeader(ValueError):
    """A status reason or header would put CR or LF into the response head."""


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
        return 500, R_INTERNAL_ERROR, "the gate failed to answer"
    return status, R_BAD_HTTP, "malformed HTTP request"


def send_continue(request: GateRequest) -> None:
    """``100 Continue`` once, when the client asked for it and the body is still to come."""
    if request.version < (1, 1) or request.content.is_eof():
        return
    if request.headers.get("Expect", "").lower() != "100-continue":
        return
    conn = request.protocol
    if isinstance(conn, GateConnection) and not conn.continued and request.transport:
        conn.continued = True
        request.transport.write(_CONTINUE)


def is_websocket(request: GateRequest) -> bool:
    """A WebSocket handshake (the one upgrade the gate tunnels)."""
    headers = request.headers
    if request.method != "GET" or headers.get("Upgrade", "").strip().lower() != "websocket":
        return False
    tokens = {t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",")}
    return "upgrade" in tokens


# ------------------------------------------------------------------------------ the response


class Responder:
    """Writes the one response to a request: whole, or streamed (``start``/``write``/``end``)."""

    __slots__ = ("close_after", "conn", "request", "response")

    def __init__(
        self, request: GateRequest, *, close_after: bool, conn: GateConnection | None = None
    ) -> None:
        self.request = request
        self.conn = conn  # the request's connection (its ``GateServer`` may be stopping)
        self.response: web.StreamResponse | None = None
        self.close_after = close_after

    @property
    def started(self) -> bool:
        return self.response is not None

    def _check(self, reason: str | None, headers: Sequence[tuple[str, str]]) -> None:
        if self.response is not None:
            raise RuntimeError("response already started")
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client connection lost")
        # SECURITY: response splitting. No line may hold a CR or LF of its own: the reason, the
        # names and the values, checked joined (one scan each for CR and LF, no copy per pair).
        if has_line_break("".join(chain.from_iterable(headers))) or (
            reason is not None and has_line_break(reason)
        ):
            raise UnsafeHeader("CR or LF in the status reason or a response header")

    def _adopt(self, response: web.StreamResponse) -> web.StreamResponse:
        conn = self.conn
        # A graceful stop began while the request was in hand: its answer says "close".
        if self.close_after or (conn is not None and conn.gate.stopping):
            response.force_close()
        self.response = response
        return response

    async def send(
        self,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        reason: str | None = None,
    ) -> None:
        """A whole response, head and body in one write."""
        self._check(reason, headers)
        # The pairs straight to aiohttp: it builds the one multidict the response keeps.
        response = web.Response(status=status, reason=reason, body=body, headers=headers)
        response.headers.setdefault("Server", SERVER_NAME)
        await self._adopt(response).prepare(self.request)
        await response.write_eof()

    async def start(
        self,
        status: int,
        headers: Sequence[tuple[str, str]],
        length: int | None,
        reason: str | None = None,
    ) -> None:
        """Begin a streamed response; ``length`` None means chunked (close-delimited on 1.0)."""
        self._check(reason, headers)
        response = self._adopt(web.StreamResponse(status=status, reason=reason, headers=headers))
        response.headers.setdefault("Server", SERVER_NAME)
        if length is not None:
            response.content_length = length
        await response.prepare(self.request)

    def abort(self) -> None:
        """Cut the connection mid-answer: the client sees a truncated answer, never a whole one."""
        self.close_after = True
        if self.request.transport is not None:
            self.request.transport.close()

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        if data:
            await self.response.write(data)

    async def end(self) -> None:
        assert self.response is not None
        await self.response.write_eof()


# ---------------------------------------------------------------------------- the connection


class GateConnection(web.RequestHandler):
    """aiohttp's connection protocol with the header deadline and problem+json refusals."""

    def __init__(self, server: GateServer, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self.gate = server
        self.busy = False  # a request of this connection is being handled
        self.pending = False  # bytes of a further request arrived while busy
        self.armed = False  # the header deadline runs
        self.continued = False
        self.current: GateRequest | None = None
        self._deadline = LazyDeadline(server.loop, server.deadline_tick_s, self._expired)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._deadline.close()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data:
            if not self.busy:
                if not self.armed:
                    # The first byte of the next request: its head must now complete in time.
                    self._arm()
            elif self.current is not None and self.current.content.is_eof():
                self.pending = True  # past the body in hand: the next request's bytes
        web.RequestHandler.data_received(self, data)  # super()'s, without building a super

    def begin(self, request: GateRequest) -> None:
        """A complete head arrived and its handling starts: the header deadline is met."""
        self.busy, self.pending, self.continued = True, False, False
        self.current = request
        self.armed = False
        self._deadline.when = None  # LazyDeadline.clear(), without the call

    def end(self) -> None:
        self.busy = False
        self.current = None
        if self.pending:
            self._arm()

    def _arm(self) -> None:
        self.armed = True
        self._deadline.set(self.gate.header_timeout_s)

    def _expired(self) -> None:
        self.armed = False
        if not self.busy:
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """problem+json for what aiohttp refuses (malformed HTTP), never its text page."""
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started; no second one")
        status, reason, detail = classify(exc, status)
        decision_id = new_decision_id()
        # SECURITY: one line, never a traceback: malformed input must not be able to flood logs.
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.INFO
        if status >= 500:
            level = logging.ERROR
        log.log(
            level,
            "refused malformed request from %s: %d %s (%s) decision %s",
            request.remote or "?",
            status,
            reason,
            detail,
            decision_id,
        )
        metrics.DENIALS.labels("-", reason).inc()
        reply = problem_reply(status=status, reason=reason, detail=detail, decision_id=decision_id)
        response = web.Response(status=reply.status, body=reply.body)
        response.headers.extend(CIMultiDict(reply.headers))
        response.headers["Server"] = SERVER_NAME
        # SECURITY: after a framing error the rest of the stream cannot be trusted: close.
        response.force_close()
        return response


class GateServer(web.Server):
    """``web.Server`` whose connections are ``GateConnection``; calls ``handler`` per request."""

    def __init__(
        self,
        handler: Handler,
        *,
        header_timeout_s: float,
        keepalive_timeout_s: float,
        max_line_size: int,
        max_field_size: int,
    ) -> None:
        super().__init__(self._serve, handler_cancellation=False)
        self.handler = handler
        self.loop = asyncio.get_running_loop()
        self.header_timeout_s = header_timeout_s
        # Connection deadlines re-arm their timer at most this far ahead (deadline.py).
        self.deadline_tick_s = min(header_timeout_s, keepalive_timeout_s)
        self.stopping = False
        self.settings: dict[str, Any] = {
            "keepalive_timeout": keepalive_timeout_s,
            "max_line_size": max_line_size,
            "max_field_size": max_field_size,
            "max_headers": MAX_HEADERS,
            "read_bufsize": READ_LIMIT,
            "auto_decompress": False,
            "access_log": None,
            # A body nobody read closes the connection at once (its bytes would be taken for the
            # next request), rather than being read and dropped for a while.
            "lingering_time": 0,
        }

    def __call__(self) -> GateConnection:
        return GateConnection(self, loop=self.loop, **self.settings)

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        conn = request.protocol
        assert isinstance(conn, GateConnection)
        conn.begin(request)
        # A non-WebSocket upgrade ends the connection (see the module docstring).
        close_after = "Upgrade" in request.headers and not is_websocket(request)
        responder = Responder(request, close_after=close_after, conn=conn)
        try:
            await self.handler(request, responder)
        except ConnectionError:
            pass  # the client is gone; the handler has recorded what it could
        except Exception:
            log.exception("unhandled error answering a request")
            if not responder.started:
                responder.close_after = True
                reply = problem_reply(
                    status=500,
                    reason=R_INTERNAL_ERROR,
                    detail="the gate failed to answer",
                    decision_id=new_decision_id(),
                )
                with contextlib.suppress(ConnectionError):
                    await responder.send(reply.status, reply.headers, reply.body)
        finally:
            conn.end()
        if responder.response is None:
            # Nothing was sent (the client left first): aiohttp closes the connection.
            gone = web.Response(status=500)
            gone.force_close()
            return gone
        return responder.response

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop taking requests, wait up to ``timeout`` for those in hand, then close all."""
        self.stopping = True  # an answer not yet started says "Connection: close"
        await super().shutdown(timeout)
