"""The ``compute`` stage for Kubernetes routes whose write changes a stored object.

A ``PATCH`` of an object and any write to its ``/scale`` subresource are measured on the object
as it will be stored: this stage reads the current object from the route's upstream (the API
server) and hands it to the adapter (``measure_change``), which applies the patch and measures
the result. Every other request goes to the plain compute stage.

# SECURITY: the read carries the client's own ``Authorization`` header, so the gate reads exactly
what the client may read -- it holds no cluster credentials of its own, and a client cannot use
the gate to learn an object it could not read itself. A client without ``get`` permission on the
object gets 400 ``unmeasurable-request`` (the gate cannot bound the change); a missing object is
patched as empty (server-side apply creates it; other patches fail at the API server).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import aiohttp

from ..adapters.common import MAX_BODY_BYTES, header, load_json
from ..adapters.kubernetes import measure_change, parse_path
from ..adapters.kubernetes.patch import metadata_only
from ..adapters.kubernetes.pods import unmeasurable
from ..context import R_UPSTREAM_UNREACHABLE, RequestContext
from ..errors import BadRequest, DependencyError
from .compute import ComputeStage

_WRITES = frozenset({"POST", "PUT", "PATCH"})


def stored_path(method: str, path: str) -> str | None:
    """The object's own path when this write is measured on the stored object, else ``None``."""
    if method not in _WRITES:
        return None
    api = parse_path(path)
    if api is None or api.name is None:
        return None
    base = path.split("?", 1)[0]
    if api.subresource == "scale":
        return base[: -len("/scale")] if base.endswith("/scale") else None
    if api.subresource is None and method == "PATCH":
        return base
    return None


class KubernetesComputeStage:
    """Wraps ``ComputeStage``: reads the stored object first where the measurement needs it."""

    name = "compute"

    def __init__(self, inner: ComputeStage, *, timeout_s: float = 5.0) -> None:
        self.inner = inner
        self.timeout_s = timeout_s

    def run(self, ctx: RequestContext) -> Awaitable[None] | None:
        route = ctx.route_config
        req = ctx.request
        target = None
        if route is not None and route.adapter == "kubernetes":
            target = stored_path(req.method, req.path)
        if target is None or self._metadata_patch(ctx):
            self.inner.run(ctx)
            return None
        return self._measure(ctx, target)

    def _metadata_patch(self, ctx: RequestContext) -> bool:
        if ctx.request.method != "PATCH" or parse_path(ctx.request.path) is None:
            return False
        ctype = (header(ctx.headers, "Content-Type") or "").split(";", 1)[0].strip().lower()
        try:
            doc = load_json(ctx.body) if ctx.body.strip() else {}
        except BadRequest:
            return False  # the adapter reports the body's own problem
        return metadata_only(doc, ctype) and not ctx.request.path.endswith("/scale")

    async def _measure(self, ctx: RequestContext, target: str) -> None:
        route = ctx.route_config
        current = await self.read(route.upstream, target, route.strip_prefix, ctx.headers)
        ctx.compute = measure_change(
            route,
            ctx.request.method,
            ctx.request.path,
            ctx.headers,
            ctx.body,
            self.inner.catalog,
            self.inner.inventory,
            current=current,
        )

    async def read(
        self, upstream: str, path: str, strip_prefix: str | None, headers: Any
    ) -> dict[str, Any]:
        """GET the object with the client's credentials (see the module docstring)."""
        if strip_prefix and path.startswith(strip_prefix):
            path = path[len(strip_prefix) :] or "/"
        send = {"Accept": "application/json"}
        auth = header(headers, "Authorization")
        if auth is not None:
            send["Authorization"] = auth
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(upstream.rstrip("/") + path, headers=send) as r,
            ):
                status = r.status
                body = await r.content.read(MAX_BODY_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DependencyError(
                R_UPSTREAM_UNREACHABLE,
                f"reading the stored object failed: {type(exc).__name__}",
                status=502,
            ) from None
        if status == 404:
            return {}
        if status != 200:
            raise unmeasurable(path, f"the stored object could not be read (HTTP {status})")
        doc = load_json(body)
        if not isinstance(doc, dict):
            raise unmeasurable(path, "the stored object is not an object")
        return doc


__all__ = ["KubernetesComputeStage", "stored_path"]
