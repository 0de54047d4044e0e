"""The Python floor: a bare aiohttp reverse proxy with no gate logic at all.

    .venv/bin/python bench/bare_proxy.py --port 8080 --upstream http://127.0.0.1:8081 [--workers 2]

What a careful naive proxy does and nothing more: uvloop, aiohttp's low-level server (no router,
no access log), one pooled ``ClientSession`` (unlimited keep-alive pool), hop-by-hop headers
dropped, the request body streamed up, a small response with a known length sent in one write and
anything else streamed back. ``--workers N`` forks N processes sharing the port (SO_REUSEPORT),
the same model as gatekeeper's ``workers: N`` (``--cpu-affinity auto`` pins them as its
``worker_cpu_affinity: auto`` does). ``bench/run`` measures gatekeeper against it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_SMALL = 64 * 1024


async def _body(request: web.BaseRequest) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(65536):
        yield chunk


def make_handler(upstream: str, session: aiohttp.ClientSession) -> web.Server:
    base = upstream.rstrip("/")
    host = URL(upstream).raw_authority

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP)
        headers["Host"] = host
        data = None
        if request.body_exists:
            data = _body(request)
            if request.content_length is not None:
                headers["Content-Length"] = str(request.content_length)
        async with session.request(
            request.method,
            URL(base + request.raw_path, encoded=True),
            headers=headers,
            data=data,
            allow_redirects=False,
        ) as up:
            out = CIMultiDict((k, v) for k, v in up.headers.items() if k.lower() not in _HOP)
            if up.content_length is not None and up.content_length <= _SMALL:
                return web.Response(status=up.status, body=await up.read(), headers=out)
            resp = web.StreamResponse(status=up.status, headers=out)
            await resp.prepare(request)
            async for chunk in up.content.iter_chunked(65536):
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    return web.Server(handle, access_log=None)


async def serve(port: int, upstream: str, sock: socket.socket) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
    )
    runner = web.ServerRunner(make_handler(upstream, session), handle_signals=False)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()
    await session.close()


def _listen(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    s.setblocking(False)
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--cpu-affinity", choices=("none", "auto"), default="none",
        help="auto: process i on the i-th allowed CPU, as gatekeeper's worker_cpu_affinity",
    )  # fmt: skip
    args = ap.parse_args()
    children: list[int] = []
    index = 0
    for i in range(1, args.workers):
        pid = os.fork()
        if pid == 0:
            children, index = [], i
            break
        children.append(pid)
    if args.cpu_affinity == "auto":
        # gatekeeper.affinity.cpu_for, written out: the baseline imports nothing of the gate.
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})
    sock = _listen(args.port)  # one SO_REUSEPORT socket per process, like gatekeeper's workers
    try:
        uvloop.run(serve(args.port, args.upstream, sock))
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
