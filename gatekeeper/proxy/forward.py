"""Forwarding to the upstream: pooled connections, streamed bodies both ways, WebSocket tunnels.

Bodies are never buffered whole: the request body is either the bounded bytes the compute adapter
already read, or streamed from the client in chunks; the response is streamed back in chunks, except
small responses with a known length, which go out in one write (fewer syscalls, same bytes).

Two upstream clients: the lean one (``lean.py``: plain ``http://``, a body already in hand) for the
common case, aiohttp's (one pooled ``ClientSession``) for the rest (``https://`` upstreams,
streamed request bodies, WebSockets). Each hands its answer over as an ``_Answer`` that ``_relay``
sends back, and an upstream that fails before its answer starts is mapped once
(``upstream_failure``). A WebSocket
upgrade is relayed message by message once the upstream has answered ``101``: the gate decided on
the upgrade request; messages are not its business.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from yarl import URL

from ..context import R_UPSTREAM_TIMEOUT, R_UPSTREAM_UNREACHABLE
from ..errors import DependencyError
from . import lean
from .headers import downstream_header_pairs, downstream_response_headers, upstream_request_headers
from .problem import DECISION_HEADER
from .server import SERVER_NAME, GateRequest, Responder, UnsafeHeader, send_continue

CHUNK = 64 * 1024
SMALL_RESPONSE = 64 * 1024


class ClientGone(ConnectionResetError):
    """The client hung up while the upstream's answer streamed back.

    Carries the upstream's status: the upstream accepted (and did) the work, so the quota stays
    charged. A ``ConnectionResetError``: the connection is closed like any lost client.
    """

    def __init__(self, status: int) -> None:
        super().__init__(f"client disconnected during a {status} response")
        self.status = status


class UpstreamBroke(Exception):
    """The upstream's body failed after its answer had started going to the client."""


class Upstreams:
    """One pooled client session for all routes' upstreams."""

    def __init__(self, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self.pool = lean.LeanPool(
            connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s
        )
        self._authorities: dict[str, tuple[str, int] | None] = {}

    def lean_target(self, url: str) -> tuple[str, int, str] | None:
        """(host, port, target) when the lean client can take ``url`` (plain http), else None."""
        if not url.startswith("http://"):
            return None
        slash = url.find("/", 7)
        authority, target = (url[7:], "/") if slash < 0 else (url[7:slash], url[slash:])
        hp = self._authorities.get(authority, False)
        if hp is False:
            hp = None
            try:
                parts = urlsplit("http://" + authority)
                if parts.hostname and not parts.username and not parts.password:
                    hp = (parts.hostname, parts.port or 80)
            except ValueError:
                pass
            if len(self._authorities) < 1024:  # route upstreams: a bounded set
                self._authorities[authority] = hp
        return None if hp is None else (hp[0], hp[1], target)  # type: ignore[index]

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=0, keepalive_timeout=30, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self.connect_timeout_s,
                    sock_read=self.read_timeout_s,
                ),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def close(self) -> None:
        self.pool.close()
        if self._session is not None:
            await self._session.close()


UPSTREAM_ERRORS = (TimeoutError, OSError, lean.BadUpstream, aiohttp.ClientError)


def upstream_failure(exc: BaseException, what: str) -> DependencyError:
    """The one answer to an upstream that failed before its answer started: a timeout is 504
    ``upstream-timeout``, anything else 502 ``upstream-unreachable``."""
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError is one too
        return DependencyError(R_UPSTREAM_TIMEOUT, "upstream timed out", status=504)
    return DependencyError(
        R_UPSTREAM_UNREACHABLE, f"upstream {what}: {type(exc).__name__}", status=502
    )


async def _stream_request_body(request: GateRequest) -> AsyncIterator[bytes]:
    send_continue(request)
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


def gate_headers(
    request: GateRequest,
    *,
    decision_id: str,
    tenant: str | None,
    entity: str | None,
    client_chain: str,
    upstream_host: str,
    keep_upgrade: bool = False,
) -> list[tuple[str, str]]:
    headers = upstream_request_headers(request.headers, keep_upgrade=keep_upgrade)
    # The filter above dropped every header set here, so appending cannot duplicate one.
    headers.append(("Host", upstream_host))
    headers.append((DECISION_HEADER, decision_id))
    if tenant:
        headers.append(("X-Gatekeeper-Tenant", tenant))
    if entity:
        headers.append(("X-Gatekeeper-Entity", entity))
    headers.append(("X-Forwarded-For", client_chain))
    headers.append(("X-Forwarded-Proto", request.scheme))
    return headers


class _Answer:
    """An upstream's answer as either client hands it over (its body whole, or ``chunks`` to
    stream), and how to give the connection back once it is relayed."""

    __slots__ = ("body", "chunks", "headers", "length", "reason", "release", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        length: int | None,
        body: bytes | None,
        chunks: AsyncIterator[bytes] | None,
        release: Callable[[], object],
    ) -> None:
        self.status, self.reason, self.headers, self.length = status, reason, headers, length
        self.body, self.chunks, self.release = body, chunks, release


async def _relay(responder: Responder, answer: _Answer, decision_id: str) -> None:
    """The upstream's answer to the client: ``body`` in one write, else streamed from ``chunks``.

    SECURITY: only failures writing to the client become ``ClientGone`` (the charge is kept);
    a failing upstream body after the answer started is ``UpstreamBroke`` (the connection is cut,
    so the client sees a truncated answer, never a complete-looking one).
    """
    status, chunks = answer.status, answer.chunks
    headers = answer.headers
    headers.append((DECISION_HEADER, decision_id))  # the filter dropped any upstream one
    try:
        if answer.body is not None:
            await responder.send(status, headers, answer.body, answer.reason)
            return
        await responder.start(status, headers, answer.length, answer.reason)
    except (ConnectionError, UnsafeHeader) as exc:
        raise _not_started(exc, status) from exc
    if chunks is not None:
        while True:
            try:
                chunk = await anext(chunks, None)
            except UPSTREAM_ERRORS as exc:
                responder.abort()
                raise UpstreamBroke(f"upstream body failed: {type(exc).__name__}") from exc
            if chunk is None:
                break
            try:
                await responder.write(chunk)
            except ConnectionError as exc:
                raise ClientGone(status) from exc
    try:
        await responder.end()
    except ConnectionError as exc:
        raise ClientGone(status) from exc


def _not_started(exc: ConnectionError | UnsafeHeader, status: int) -> Exception:
    """What a failure to start the answer to the client is: ``ClientGone`` when the client left,
    a 502 when the upstream's head cannot be written."""
    if isinstance(exc, ConnectionError):
        return ClientGone(status)
    # SECURITY: a CR or LF in an upstream header would split the answer to the client.
    return DependencyError(
        R_UPSTREAM_UNREACHABLE, "upstream answer has CR or LF in a header", status=502
    )


async def forward_http(
    upstreams: Upstreams,
    request: GateRequest,
    responder: Responder,
    *,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    decision_id: str,
) -> int:
    """Send the request upstream and stream the answer back; returns the upstream status.

    Raises ``DependencyError`` with status 502 (unreachable) or 504 (timed out) when no response
    has started, ``ClientGone`` when the client left while the answer was being written, and
    ``UpstreamBroke`` when the upstream failed after the answer started.

    The lean client takes the request when it can; whatever it cannot take goes through
    aiohttp's (``_session_answer``). Either answer goes back the same way.
    """
    lean_request = _lean_request(upstreams, request, url, headers, body)
    if lean_request is None:
        answer = await _session_answer(upstreams, request, url, headers, body)
    else:
        answer = await _lean_answer(upstreams, request.method, lean_request, body)
    try:
        await _relay(responder, answer, decision_id)
        return answer.status
    finally:
        answer.release()


def _lean_request(
    upstreams: Upstreams,
    request: GateRequest,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
) -> tuple[str, int, bytes] | None:
    """(host, port, request head) when the lean client takes the request, else None."""
    if body is None and request.body_exists:
        return None  # a body to stream: aiohttp's client
    target = upstreams.lean_target(url)
    if target is None:
        return None
    try:
        head = lean.encode_head(
            request.method, target[2], headers, None if body is None else len(body)
        )
    except lean.Unsendable:
        return None  # aiohttp's client refuses it the way it always did
    return target[0], target[1], head


async def _lean_answer(
    upstreams: Upstreams, method: str, lean_request: tuple[str, int, bytes], body: bytes | None
) -> _Answer:
    """The lean client's exchange: its answer whole when it came with the head, else streamed."""
    host, port, head = lean_request
    pool = upstreams.pool
    try:
        upstream = await lean.send(
            pool, host, port, head, body, method=method, small=SMALL_RESPONSE
        )
    except UPSTREAM_ERRORS as exc:
        raise upstream_failure(exc, "unreachable") from None
    try:
        pairs = downstream_header_pairs(upstream.headers, upstream.connection)
    except BaseException:
        pool.release(upstream)
        raise
    chunks = None
    if upstream.no_body:
        upstream.done = True
    elif upstream.body is None:
        chunks = lean.iter_body(upstream, CHUNK, upstreams.read_timeout_s)
    return _Answer(
        upstream.status,
        upstream.reason,
        pairs,
        upstream.length,
        upstream.body,
        chunks,
        partial(pool.release, upstream),
    )


async def _session_answer(
    upstreams: Upstreams,
    request: GateRequest,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
) -> _Answer:
    """aiohttp's client's exchange: a small answer of known length read whole, else streamed."""
    data: bytes | AsyncIterator[bytes] | None
    if body is not None:
        data = body
    elif request.body_exists:
        data = _stream_request_body(request)
        if request.content_length is not None:
            headers.append(("Content-Length", str(request.content_length)))
    else:
        data = None
    try:
        upstream = await upstreams.session.request(
            # encoded=True: forward the normalised target byte for byte, no re-quoting.
            request.method,
            URL(url, encoded=True),
            headers=headers,
            data=data,
            allow_redirects=False,
        )
    except UPSTREAM_ERRORS as exc:
        raise upstream_failure(exc, "unreachable") from None
    length = upstream.content_length
    status = upstream.status
    payload: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None
    # Released on any way out but the answer (a failed read, a cancelled request), as the
    # relay's ``finally`` releases it once the answer is handed over.
    try:
        pairs = downstream_response_headers(upstream.headers)
        if request.method == "HEAD" or status in (204, 304):
            pass  # no body, whatever the length says
        elif length is not None and length <= SMALL_RESPONSE:
            try:
                payload = await upstream.read()
            except UPSTREAM_ERRORS as exc:
                raise upstream_failure(exc, "failed") from None
        else:
            chunks = upstream.content.iter_chunked(CHUNK).__aiter__()
    except BaseException:
        upstream.release()
        raise
    return _Answer(status, upstream.reason or "", pairs, length, payload, chunks, upstream.release)


async def forward_websocket(
    upstreams: Upstreams,
    request: GateRequest,
    responder: Responder,
    *,
    url: str,
    headers: list[tuple[str, str]],
    decision_id: str,
) -> int:
    """Relay an accepted WebSocket upgrade: the upstream's handshake first, then messages.

    The upstream sees the gate's headers and the client's subprotocols on a handshake of aiohttp's
    client; only after its ``101`` does the client get its own (with the decision id and the
    subprotocol the upstream chose), and each side's messages are passed to the other until either
    closes. Any other answer of the upstream is a 502: no tunnel opens.
    """
    protocols = tuple(
        p.strip()
        for v in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in v.split(",")
        if p.strip()
    )
    # The handshake's own fields are aiohttp's to write on each side.
    sent = [(k, v) for k, v in headers if not k.lower().startswith("sec-websocket-")]
    try:
        upstream = await upstreams.session.ws_connect(
            URL(url, encoded=True),
            headers=sent,
            protocols=protocols,
            autoping=False,
            autoclose=False,
            compress=0,
            max_msg_size=0,
        )
    except aiohttp.WSServerHandshakeError as exc:
        # SECURITY: no tunnel without the upstream's 101; the client's next bytes are then
        # parsed and decided as requests of their own (WebSocket smuggling).
        raise DependencyError(
            R_UPSTREAM_UNREACHABLE,
            f"upstream answered {exc.status} to the WebSocket handshake",
            status=502,
        ) from None
    except UPSTREAM_ERRORS as exc:
        raise upstream_failure(exc, "unreachable") from None
    try:
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoping=False,
            autoclose=False,
            compress=False,
            max_msg_size=0,
        )
        client.headers[DECISION_HEADER] = decision_id
        client.headers["Server"] = SERVER_NAME
        try:
            await client.prepare(request)
        except ConnectionError as exc:
            raise ClientGone(101) from exc
        responder.response = client
        await _pump(client, upstream)
        return 101
    finally:
        await upstream.close()


async def _pump(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Pass messages both ways until either side closes."""

    async def copy(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for msg in source:
            if sink.closed:
                return
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.PING:
                await sink.ping(msg.data)
            elif msg.type == aiohttp.WSMsgType.PONG:
                await sink.pong(msg.data)
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                reason = msg.extra.encode() if isinstance(msg.extra, str) else b""
                await sink.close(code=msg.data or aiohttp.WSCloseCode.OK, message=reason)
                return
            else:
                return

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(copy(client, upstream)), loop.create_task(copy(upstream, client))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
