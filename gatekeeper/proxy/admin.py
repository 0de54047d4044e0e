"""The admin listener: health, readiness, metrics, explain, reload, quota inspection, and the
entities the last reloads of entity data changed (``/v1/screening``)."""

from __future__ import annotations

import os
import signal
from typing import Any

import orjson
from aiohttp import web

from .. import metrics
from ..runtime import Runtime

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
MULTI_WORKER: web.AppKey[bool] = web.AppKey("multi_worker", bool)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(data, option=orjson.OPT_INDENT_2),
        content_type="application/json",
    )


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await request.app[RUNTIME].readiness()
    ready = all(v is True or (isinstance(v, dict) and v.get("ok", True)) for v in checks.values())
    return _json({"ready": ready, "checks": checks}, 200 if ready else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def reload_handler(request: web.Request) -> web.Response:
    if request.app[MULTI_WORKER]:
        # The supervisor fans SIGHUP out to every worker, so all of them reload, not just this one.
        os.kill(os.getppid(), signal.SIGHUP)
        return _json({"reloaded": "signalled all workers"}, 202)
    ok = await request.app[RUNTIME].reload()
    return _json(
        {"reloaded": ok, "policy_version": request.app[RUNTIME].snapshot.policy.version},
        200 if ok else 500,
    )


async def explain_handler(request: web.Request) -> web.Response:
    from ..check import decide_offline

    try:
        payload = await request.json(loads=orjson.loads)
    except ValueError:
        return _json({"error": "body must be a JSON request description"}, 400)
    if not isinstance(payload, dict):
        return _json({"error": "body must be a JSON object"}, 400)
    try:
        decision = await decide_offline(request.app[RUNTIME], payload, consume=False)
    except ValueError as exc:
        return _json({"error": str(exc)}, 400)
    return _json(decision)


async def quota_handler(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    per, ident = request.match_info["per"], request.match_info["id"]
    if per not in ("tenant", "entity", "ultimate_parent", "license"):
        return _json({"error": "per must be tenant, entity, ultimate_parent or license"}, 400)
    snapshot = runtime.snapshot
    group = request.query.get("group")
    license_limit = None
    if per == "license":
        for profile_id in (request.query.get("entity"),):
            if profile_id:
                for lic in snapshot.registry.profile(profile_id).licenses:
                    if lic.id == ident:
                        license_limit = lic.max_tpp_hours
    elif group is None and per in ("tenant", "entity") and ident in snapshot.registry:
        # a tenant's or entity's buckets live in its ultimate parent's group (one hash tag)
        group = snapshot.registry.profile(ident).ultimate_parent or ident
    info = await snapshot.quota_stage.describe(per, ident, group=group, license_limit=license_limit)
    return _json(info)


async def screening_handler(request: web.Request) -> web.Response:
    """The entities the last reloads of entity data changed (re-screening), newest last."""
    runtime = request.app[RUNTIME]
    body = runtime.rescreener.to_json()
    body["data_version"] = runtime.snapshot.data_version
    body["entities_version"] = runtime.snapshot.registry.version
    return _json(body)


def build_admin_app(runtime: Runtime, *, multi_worker: bool) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[RUNTIME] = runtime
    app[MULTI_WORKER] = multi_worker
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_post("/v1/reload", reload_handler)
    app.router.add_post("/v1/explain", explain_handler)
    app.router.add_get("/v1/quotas/{per}/{id}", quota_handler)
    app.router.add_get("/v1/screening", screening_handler)
    return app
