"""A real identity provider stand-in: an aiohttp server on loopback serving a JWKS, counting hits."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.support import free_port


class FakeIdP:
    """Serves ``/jwks.json`` from ``self.doc``; ``status``/``body`` override the answer."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.port = free_port()
        self.requests = 0
        self.status = 200
        self.body: bytes | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    async def _jwks(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = self.body if self.body is not None else json.dumps(self.doc).encode()
        return web.Response(body=body, status=self.status, content_type="application/json")

    async def start(self) -> FakeIdP:
        app = web.Application()
        app.router.add_get("/jwks.json", self._jwks)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
