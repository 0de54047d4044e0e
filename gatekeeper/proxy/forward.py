"""Forwarding to the upstream: pooled connections, streamed bodies both ways, WebSocket tunnels.

Bodies are never buffered whole: the request body is either the bounded bytes the compute adapter
already read, or streamed from the client in chunks; the response is streamed back in chunks, except
small responses with a known length, which go out in one write (fewer syscalls, same bytes).

Requests go upstream on aiohttp's client (one pooled ``ClientSession``); the answer goes back
through ``_relay``. A WebSocket upgrade is a byte tunnel once the upstream
has answered ``101``: the gate decided on the upgrade request, and frames are not its business.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from ..errors import DependencyError
from . import lean
from .headers import downstream_response_headers, upstream_request_headers
from .problem import DECISION_HEADER
from .server import GateRequest, Responder, UnsafeHeader

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
        if self._session is not None:
            await self._session.close()


# A 101 keeps its hop-by-hop headers (Connection, Upgrade: the switch itself) but not these.
_SWITCH_DROP = frozenset({"content-length", "transfer-encoding", DECISION_HEADER.lower()})
UPSTREAM_ERRORS = (TimeoutError, OSError, lean.BadUpstream, aiohttp.ClientError)


def upstream_failure(exc: BaseException, what: str) -> DependencyError:
    """The one answer to an upstream that failed before its answer started: a timeout is 504
    ``upstream-timeout``, anything else 502 ``upstream-unreachable``."""
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError is one too
        return DependencyError("upstream-timeout", "upstream timed out", status=504)
    return DependencyError(
        "upstream-unreachable", f"upstream {what}: {type(exc).__name__}", status=502
    )


async def _stream_request_body(request: GateRequest) -> AsyncIterator[bytes]:
    request.send_continue()
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


async def _relay(
    responder: Responder,
    status: int,
    reason: str,
    headers: Iterable[tuple[str, str]],
    *,
    length: int | None,
    body: bytes | None,
    chunks: AsyncIterator[bytes] | None,
) -> None:
    """The upstream's answer to the client: ``body`` in one write, else streamed from ``chunks``.

    SECURITY: only failures writing to the client become ``ClientGone`` (the charge is kept);
    a failing upstream body after the answer started is ``UpstreamBroke`` (the connection is cut,
    so the client sees a truncated answer, never a complete-looking one).
    """
    try:
        if body is not None:
            responder.send(status, headers, body, reason)
            return
        await responder.start(status, headers, length, reason)
    except ConnectionError as exc:
        raise ClientGone(status) from exc
    except UnsafeHeader:
        # SECURITY: a CR or LF in an upstream header would split the answer to the client.
        raise DependencyError(
            "upstream-unreachable", "upstream answer has CR or LF in a header", status=502
        ) from None
    if chunks is not None:
        while True:
            try:
                chunk = await anext(chunks, None)
            except UPSTREAM_ERRORS as exc:
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


def _answer_headers(pairs: list[tuple[str, str]], decision_id: str) -> list[tuple[str, str]]:
    pairs.append((DECISION_HEADER, decision_id))  # the filter dropped any upstream one
    return pairs


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
    """
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
    try:
        out = _answer_headers(downstream_response_headers(upstream.headers), decision_id)
        length = upstream.content_length
        status, reason = upstream.status, upstream.reason or ""
        if request.method == "HEAD" or status in (204, 304):
            await _relay(responder, status, reason, out, length=length, body=None, chunks=None)
        elif length is not None and length <= SMALL_RESPONSE:
            try:
                payload = await upstream.read()
            except UPSTREAM_ERRORS as exc:
                raise upstream_failure(exc, "failed") from None
            await _relay(responder, status, reason, out, length=length, body=payload, chunks=None)
        else:
            chunks = upstream.content.iter_chunked(CHUNK).__aiter__()
            await _relay(responder, status, reason, out, length=length, body=None, chunks=chunks)
        return status
    finally:
        upstream.release()


async def forward_websocket(
    upstreams: Upstreams,
    request: GateRequest,
    responder: Responder,
    *,
    url: str,
    headers: list[tuple[str, str]],
    decision_id: str,
) -> int:
    """Tunnel an accepted WebSocket upgrade: the upstream answers the handshake, then bytes flow.

    The upstream sees the client's handshake (``Upgrade``, ``Sec-WebSocket-*``) with the gate's
    headers; its ``101`` goes back with the decision id, then each side's bytes are copied to the
    other until either closes. Any other answer is a 502: no tunnel opens.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host, port = parts.hostname or "", parts.port or (443 if secure else 80)
    target = url[len(f"{parts.scheme}://{parts.netloc}") :] or "/"
    headers.append(("Connection", "Upgrade"))
    headers.append(("Upgrade", request.headers.get("Upgrade", "websocket")))
    try:
        head = lean.encode_head("GET", target, headers, None)
        upstream = await lean.open_upgrade(
            host,
            port,
            head,
            ssl=ssl.create_default_context() if secure else None,
            connect_timeout_s=upstreams.connect_timeout_s,
            read_timeout_s=upstreams.read_timeout_s,
        )
    except (*UPSTREAM_ERRORS, lean.Unsendable) as exc:
        raise upstream_failure(exc, "unreachable") from None
    conn = upstream.conn
    try:
        if upstream.status != 101:
            # SECURITY: no tunnel without the upstream's 101; the client's next bytes are then
            # parsed and decided as requests of their own (WebSocket smuggling).
            raise DependencyError(
                "upstream-unreachable",
                f"upstream answered {upstream.status} to the WebSocket handshake",
                status=502,
            )
        out = [(k, v) for k, v in upstream.headers if k.lower() not in _SWITCH_DROP]
        out.append((DECISION_HEADER, decision_id))
        try:
            responder.send(101, out, b"", upstream.reason)
        except ConnectionError as exc:
            raise ClientGone(101) from exc
        await _pump(request, conn)
        return 101
    finally:
        conn.close()


async def _pump(request: GateRequest, conn: lean.Conn) -> None:
    """Copy bytes both ways until either side closes (with back-pressure both ways)."""
    tunnel = request.tunnel()
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []

    async def resume_after_drain() -> None:
        try:
            await conn.drain()
        except ConnectionError:
            return
        finally:
            draining.clear()
        tunnel.resume_client()

    def to_upstream(data: bytes) -> None:
        if conn.is_closing():
            return
        conn.write(data)
        if conn.write_buffer_size() > CHUNK and not draining:
            tunnel.pause_client()
            draining.append(loop.create_task(resume_after_drain()))

    tunnel.attach(to_upstream)

    async def to_client() -> None:
        while True:
            data = await conn.read(CHUNK)
            if not data:
                return
            tunnel.write(data)
            await tunnel.drain()

    copier = loop.create_task(to_client())
    try:
        await asyncio.wait((copier, tunnel.closed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        copier.cancel()
        for task in draining:
            task.cancel()
        await asyncio.gather(copier, *draining, return_exceptions=True)
        tunnel.close()
