"""A stand-in upstream for end-to-end tests (run as its own process).

Endpoints: any path echoes the request as JSON (``/echo``), ``/download?size=N`` streams N bytes,
``/upload`` hashes a streamed body, ``/slow?delay=S`` answers late, ``/ws`` echoes WebSocket
messages, ``/status/N`` answers with status N. Every request's headers are appended to the JSON
lines file given as ``--log`` so tests can scan what reached the upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json

from aiohttp import WSMsgType, web

CHUNK = 64 * 1024


def build(log_path: str) -> web.Application:
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        log.write(
            json.dumps(
                {
                    "method": request.method,
                    "path": request.raw_path,
                    "headers": [[k, v] for k, v in request.headers.items()],
                }
            )
            + "\n"
        )
        return await handler(request)

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "0"))
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        block = bytes(range(256)) * (CHUNK // 256)
        sent = 0
        while sent < size:
            n = min(CHUNK, size - sent)
            await resp.write(block[:n])
            sent += n
        await resp.write_eof()
        return resp

    async def upload(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            h.update(chunk)
            n += len(chunk)
        return web.json_response({"length": n, "sha256": h.hexdigest()})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return web.json_response({"slept": True})

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"status": True}, status=int(request.match_info["code"]))

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "raw_path": request.raw_path,
                "query": request.query_string,
                "headers": {k: v for k, v in request.headers.items()},
                "header_list": [[k, v] for k, v in request.headers.items()],
                "body": body.decode("utf-8", "replace"),
                "body_length": len(body),
            }
        )

    app = web.Application(middlewares=[record], client_max_size=1 << 30)
    app.router.add_get("/download", download)
    app.router.add_post("/upload", upload)
    app.router.add_put("/upload", upload)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    web.run_app(build(args.log), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
