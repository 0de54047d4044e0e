"""The lean client's connection (``lean.Conn``) against real upstream sockets.

Each upstream here is a real asyncio server on a loopback port that writes exactly the bytes a test
needs: a body cut by a reset, a body far larger than the read buffer, a head over the limit, a
kept-alive connection the upstream closes while it idles in the pool.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gatekeeper.proxy import lean
from tests.support import await_until

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _server(serve: Serve) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer sees a TCP reset, not a clean end of stream."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _get(port: int, path: str = "/") -> bytes:
    return lean.encode_head("GET", path, [("Host", f"127.0.0.1:{port}")], None)


@pytest.fixture
async def pool() -> AsyncIterator[lean.LeanPool]:
    p = lean.LeanPool(connect_timeout_s=2, read_timeout_s=5)
    try:
        yield p
    finally:
        p.close()


async def _body(resp: lean.Response) -> bytes:
    return b"".join([chunk async for chunk in lean.iter_body(resp, 65536, 5)])


async def test_reset_during_a_close_delimited_body_is_an_error_not_its_end(
    pool: lean.LeanPool,
) -> None:
    """A body that ends at the close must not look complete when the connection was reset."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.05)
        _reset(writer)

    server, port = await _server(serve)
    try:
        resp = await lean.send(pool, "127.0.0.1", port, _get(port), None, method="GET")
        assert resp.until_close
        await asyncio.sleep(0.3)  # the reset is in before the body is read
        with pytest.raises(ConnectionResetError):
            await _body(resp)
        assert not resp.done
    finally:
        server.close()


async def test_clean_close_ends_a_close_delimited_body(pool: lean.LeanPool) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    server, port = await _server(serve)
    try:
        resp = await lean.send(pool, "127.0.0.1", port, _get(port), None, method="GET")
        assert await _body(resp) == b"all of it"
        assert resp.done and not resp.keep_alive
    finally:
        server.close()


async def test_a_large_body_streams_intact_with_a_bounded_buffer(pool: lean.LeanPool) -> None:
    """8 MB behind a slow reader: reading pauses, nothing is lost, the buffer stays bounded."""
    body = bytes(range(256)) * (8 * 4096)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 1 << 20):
            writer.write(body[i : i + (1 << 20)])
            await writer.drain()

    server, port = await _server(serve)
    try:
        resp = await lean.send(
            pool, "127.0.0.1", port, _get(port), None, method="GET", small=64 * 1024
        )
        assert resp.body is None and resp.length == len(body)
        got: list[bytes] = []
        largest = 0
        async for chunk in lean.iter_body(resp, 65536, 5):
            got.append(chunk)
            largest = max(largest, len(resp.conn.buf))
            await asyncio.sleep(0)  # a slow client: the upstream outruns us
        assert b"".join(got) == body
        assert resp.done
        # Paused above 2 x HEAD_LIMIT; one socket read may land on top of that.
        assert largest <= 2 * lean.HEAD_LIMIT + 1024 * 1024
    finally:
        server.close()


async def test_a_head_over_the_limit_is_refused_and_the_connection_closed(
    pool: lean.LeanPool,
) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        writer.write(b"X-Big: " + b"a" * (lean.HEAD_LIMIT + 10) + b"\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    server, port = await _server(serve)
    try:
        with pytest.raises(lean.BadUpstream, match="too large"):
            await lean.send(pool, "127.0.0.1", port, _get(port), None, method="GET")
        assert not pool._idle.get(("127.0.0.1", port))
    finally:
        server.close()


async def test_a_connection_the_upstream_closed_while_idle_is_not_reused(
    pool: lean.LeanPool,
) -> None:
    """The upstream ends a kept-alive connection between requests: the next request opens a
    new one instead of writing into the dead one (and answering 502)."""
    opened: list[int] = []
    closed: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # an idle timeout on the upstream's side
        await writer.wait_closed()
        closed.append(1)

    server, port = await _server(serve)
    try:
        for i in range(2):
            resp = await lean.send(
                pool, "127.0.0.1", port, _get(port), None, method="GET", small=16
            )
            assert (resp.status, resp.body) == (200, b"ok")
            pool.release(resp)
            # The upstream's close arrives while it idles: the socket is closed, and the loop
            # reads the end of the stream before it runs a timer due after that.
            await await_until(lambda: len(closed) > i)  # noqa: B023 - awaited in this iteration
            await asyncio.sleep(0.05)
        assert len(opened) == 2
    finally:
        server.close()


async def test_1xx_interim_answers_are_skipped_even_when_split_across_reads(
    pool: lean.LeanPool,
) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for piece in (b"HTTP/1.1 100 Con", b"tinue\r\n\r\nHTTP/1.1 201 Cre", b"ated\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"Content-Length: 3\r\n\r\nnew")
        await writer.drain()
        await asyncio.sleep(1)

    server, port = await _server(serve)
    try:
        resp = await lean.send(pool, "127.0.0.1", port, _get(port), None, method="GET", small=16)
        assert (resp.status, resp.reason, resp.body) == (201, "Created", b"new")
    finally:
        server.close()
