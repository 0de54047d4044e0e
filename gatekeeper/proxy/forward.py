"""Forwarding to the upstream: pooled connections, streamed bodies both ways, WebSockets.

Bodies are never buffered whole: the request body is either the bounded bytes the compute adapter
already read, or streamed from the client in chunks; the response is streamed back in chunks, except
small responses with a known length, which go out in one write (fewer syscalls, same bytes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ..errors import DependencyError
from . import lean
from .headers import downstream_response_headers, upstream_request_headers
from .problem import DECISION_HEADER

CHUNK = 64 * 1024
SMALL_RESPONSE = 64 * 1024


class ClientGone(ConnectionResetError):
    """The client hung up while the upstream's answer streamed back.

    Carries the upstream's status: the upstream accepted (and did) the work, so the quota stays
    charged. A ``ConnectionResetError``, so aiohttp still treats it as a premature disconnect.
    """

    def __init__(self, status: int) -> None:
        super().__init__(f"client disconnected during a {status} response")
        self.status = status


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


async def _stream_request_body(request: web.BaseRequest) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


def gate_headers(
    request: web.BaseRequest,
    *,
    decision_id: str,
    tenant: str | None,
    entity: str | None,
    client_chain: str,
    upstream_host: str,
    keep_upgrade: bool = False,
) -> CIMultiDict[str]:
    headers = upstream_request_headers(request.headers, keep_upgrade=keep_upgrade)
    headers["Host"] = upstream_host
    headers[DECISION_HEADER] = decision_id
    if tenant:
        headers["X-Gatekeeper-Tenant"] = tenant
    if entity:
        headers["X-Gatekeeper-Entity"] = entity
    headers["X-Forwarded-For"] = client_chain
    headers["X-Forwarded-Proto"] = request.scheme
    return headers


async def forward_http(
    upstreams: Upstreams,
    request: web.BaseRequest,
    *,
    url: str,
    headers: CIMultiDict[str],
    body: bytes | None,
    decision_id: str,
) -> tuple[web.StreamResponse, int]:
    """Send the request upstream and stream the answer back; returns (response, upstream status).

    Raises ``DependencyError`` with status 502 (unreachable) or 504 (timed out) when no response
    has started; failures after the response started abort the client connection instead.
    """
    if body is not None or not request.body_exists:
        target = upstreams.lean_target(url)
        if target is not None and request.method != "CONNECT":
            try:
                head = lean.encode_head(
                    request.method, target[2], headers, None if body is None else len(body)
                )
            except lean.Unsendable:
                pass  # aiohttp's client refuses it the way it always did
            else:
                return await _forward_lean(
                    upstreams, request, target[0], target[1], head, body, decision_id
                )
    data: bytes | AsyncIterator[bytes] | None
    if body is not None:
        data = body
    elif request.body_exists:
        data = _stream_request_body(request)
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
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
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise DependencyError(
            "upstream-timeout", f"upstream timed out: {exc}", status=504
        ) from None
    except aiohttp.ClientError as exc:
        raise DependencyError(
            "upstream-unreachable", f"upstream unreachable: {type(exc).__name__}", status=502
        ) from None
    try:
        out_headers = downstream_response_headers(upstream.headers)
        out_headers[DECISION_HEADER] = decision_id
        length = upstream.content_length
        if length is not None and length <= SMALL_RESPONSE and request.method != "HEAD":
            try:
                payload = await upstream.read()
            except (TimeoutError, aiohttp.ServerTimeoutError):
                raise DependencyError(
                    "upstream-timeout", "upstream timed out", status=504
                ) from None
            except aiohttp.ClientError as exc:
                raise DependencyError(
                    "upstream-unreachable", f"upstream failed: {type(exc).__name__}", status=502
                ) from None
            resp = web.Response(
                status=upstream.status, reason=upstream.reason, body=payload, headers=out_headers
            )
            return resp, upstream.status
        stream = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=out_headers
        )
        if length is not None:
            stream.content_length = length
        # SECURITY: only the client side is wrapped: a client that hangs up mid-body must not
        # turn an answered submission into "upstream failed" and get its quota refunded.
        try:
            await stream.prepare(request)
        except ConnectionError as exc:  # reset, or aiohttp's plain 'Connection lost'
            raise ClientGone(upstream.status) from exc
        async for chunk in upstream.content.iter_chunked(CHUNK):
            try:
                await stream.write(chunk)
            except ConnectionError as exc:  # reset, or aiohttp's plain 'Connection lost'
                raise ClientGone(upstream.status) from exc
        try:
            await stream.write_eof()
        except ConnectionError as exc:  # reset, or aiohttp's plain 'Connection lost'
            raise ClientGone(upstream.status) from exc
        return stream, upstream.status
    finally:
        upstream.release()


async def _forward_lean(
    upstreams: Upstreams,
    request: web.BaseRequest,
    host: str,
    port: int,
    head: bytes,
    body: bytes | None,
    decision_id: str,
) -> tuple[web.StreamResponse, int]:
    """``forward_http`` through the lean client (same answers, same errors)."""
    pool = upstreams.pool
    timeout = upstreams.read_timeout_s
    try:
        upstream = await lean.send(
            pool, host, port, head, body, method=request.method, small=SMALL_RESPONSE
        )
    except TimeoutError as exc:
        raise DependencyError(
            "upstream-timeout", f"upstream timed out: {exc}", status=504
        ) from None
    except (OSError, lean.BadUpstream) as exc:
        raise DependencyError(
            "upstream-unreachable", f"upstream unreachable: {type(exc).__name__}", status=502
        ) from None
    try:
        out_headers = downstream_response_headers(upstream.headers)  # type: ignore[arg-type]
        out_headers[DECISION_HEADER] = decision_id
        length = upstream.length
        if upstream.body is not None:
            resp = web.Response(
                status=upstream.status,
                reason=upstream.reason,
                body=upstream.body,
                headers=out_headers,
            )
            return resp, upstream.status
        stream = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=out_headers
        )
        if length is not None:
            stream.content_length = length
        # SECURITY: only the client side is wrapped (see forward_http).
        try:
            await stream.prepare(request)
        except ConnectionError as exc:  # reset, or aiohttp's plain 'Connection lost'
            raise ClientGone(upstream.status) from exc
        try:
            async for chunk in lean.iter_body(upstream, CHUNK, timeout):
                try:
                    await stream.write(chunk)
                except ConnectionError as exc:  # reset, or aiohttp's plain 'Connection lost'
                    raise ClientGone(upstream.status) from exc
        except (TimeoutError, OSError, lean.BadUpstream) as exc:
            if isinstance(exc, ClientGone):
                raise
            # As aiohttp's client: a body that breaks after the answer started aborts it.
            raise aiohttp.ClientPayloadError(f"upstream body failed: {type(exc).__name__}") from exc
        try:
            await stream.write_eof()
        except ConnectionError as exc:  # reset, or aiohttp's plain 'Connection lost'
            raise ClientGone(upstream.status) from exc
        return stream, upstream.status
    finally:
        pool.release(upstream)


async def forward_websocket(
    upstreams: Upstreams,
    request: web.BaseRequest,
    *,
    url: str,
    headers: CIMultiDict[str],
    decision_id: str,
) -> tuple[web.StreamResponse, int]:
    """Proxy a WebSocket: connect upstream first, then accept the client and pump both ways."""
    protocols = tuple(
        p.strip()
        for v in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in v.split(",")
    )
    ws_headers = CIMultiDict(
        (k, v) for k, v in headers.items() if not k.lower().startswith("sec-websocket-")
    )
    ws_url = "ws" + url[4:] if url.startswith("http") else url
    try:
        up = await upstreams.session.ws_connect(
            URL(ws_url, encoded=True), headers=ws_headers, protocols=protocols, autoping=False
        )
    except TimeoutError as exc:
        raise DependencyError(
            "upstream-timeout", f"upstream timed out: {exc}", status=504
        ) from None
    except aiohttp.ClientError as exc:
        raise DependencyError(
            "upstream-unreachable", f"upstream unreachable: {type(exc).__name__}", status=502
        ) from None
    down = web.WebSocketResponse(
        protocols=(up.protocol,) if up.protocol else (), autoping=False, max_msg_size=0
    )
    down.headers[DECISION_HEADER] = decision_id
    await down.prepare(request)

    async def pump(
        src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, dst: object
    ) -> None:
        async for msg in src:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await dst.send_str(msg.data)  # type: ignore[attr-defined]
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await dst.send_bytes(msg.data)  # type: ignore[attr-defined]
            elif msg.type == aiohttp.WSMsgType.PING:
                await dst.ping(msg.data)  # type: ignore[attr-defined]
            elif msg.type == aiohttp.WSMsgType.PONG:
                await dst.pong(msg.data)  # type: ignore[attr-defined]
            else:
                break
        await dst.close()  # type: ignore[attr-defined]

    tasks = [asyncio.ensure_future(pump(down, up)), asyncio.ensure_future(pump(up, down))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await up.close()
        await down.close()
    return down, 101
