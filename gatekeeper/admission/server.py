"""The webhook listener: ``POST /v1/admission`` over TLS, on aiohttp's public web API.

One request: parse the review, build the request context, decide (``decide.py``), write the
audit record and wait until it is durable (audit before act, as the proxy), then answer. A refusal
is ``allowed: false`` with the gate's status code, its kebab-case reason and the decision id in the
message; ``monitor`` mode admits with a warning. Anything that is not a review the gate can answer
is an HTTP 400, which the API server treats as a webhook failure (``failurePolicy: Fail``).
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from .. import metrics
from ..config import AdmissionConfig, Config, RouteConfig
from ..context import ALLOW, RequestContext, RequestInfo
from ..intake import Admitted, decide
from ..proxy.ids import new_decision_id
from ..runtime import Runtime
from ..stages.kubernetes import ClaimAccess
from .decide import admission_pipeline, principal_for
from .review import Review, ReviewError, as_request, parse_review, response, tenant_of

log = logging.getLogger("gatekeeper.admission")

ADMISSION_PATH = "/v1/admission"
ROUTE_NAME = "admission"
# An AdmissionReview carries the object and the old object (each up to etcd's ~1.5 MiB).
MAX_REVIEW_BYTES = 8 * 1024 * 1024
_JSON = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))


def admission_route(cfg: Config, adm: AdmissionConfig) -> RouteConfig:
    """The route every admission request is decided on (the webhook's own settings)."""
    return RouteConfig(
        name=ROUTE_NAME,
        upstream=adm.api_server or "https://kubernetes.default.svc",
        adapter="kubernetes",
        mode=adm.mode,
        gpu_model=adm.gpu_model,
        max_hours=adm.max_hours,
        unknown_gpu=adm.unknown_gpu,
        inventory=adm.inventory,
        kubernetes=cfg.kubernetes,
    )


class AdmissionHandler:
    """Answers one ``AdmissionReview``."""

    def __init__(self, cfg: Config, adm: AdmissionConfig, runtime: Runtime) -> None:
        self.runtime = runtime
        self.tenants = adm.tenants
        self.route = admission_route(cfg, adm)
        self.access: ClaimAccess | None = None
        if adm.api_server is not None:
            tls = ssl.create_default_context(cafile=adm.ca_file) if adm.ca_file else None
            self.access = ClaimAccess(adm.token_file, tls)

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        if request.content_type != "application/json":
            return _bad(415, "an AdmissionReview is application/json")
        try:
            body = await request.read()
            review = parse_review(body)
        except web.HTTPRequestEntityTooLarge:
            return _bad(413, f"an AdmissionReview is at most {MAX_REVIEW_BYTES} bytes")
        except ReviewError as exc:
            return _bad(400, str(exc))
        answer = await self.answer(review, request.remote or "0.0.0.0", started)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def answer(self, review: Review, peer: str, started: float) -> dict[str, Any]:
        method, path, body = as_request(review)
        ctx = RequestContext(
            decision_id=new_decision_id(),
            request=RequestInfo(
                route=ROUTE_NAME,
                method=method,
                path=path,
                client_ip=peer,
                mode=self.route.mode,
                dry_run=review.dry_run,
            ),
            headers=_JSON,
            body=body,
            started=started,
        )
        ctx.route_config = self.route
        principal = principal_for(review.username, tenant_of(review, self.tenants))
        old = orjson.dumps(review.old) if review.operation == "UPDATE" and review.old else None
        pipeline = admission_pipeline(
            self.runtime, ctx, principal, old=old, access=self.access, version=_version(review)
        )
        snapshot = self.runtime.snapshot
        verdict = await decide(Admitted(ctx, self.route, ""), pipeline, snapshot.quota_stage)
        # As the proxy: a pipeline that raised nothing forwards (here: admits).
        status = verdict.status if verdict.status is not None else 200
        # SECURITY: audit before act; an unrecorded decision admits nothing
        await verdict.record(self.runtime.audit, status)
        allowed = not verdict.blocked
        if not allowed:
            await verdict.refund()
        reason = verdict.reason
        self._observe(ctx, allowed, reason)
        return response(
            review.uid,
            allowed=allowed,
            code=verdict.status or 200,
            reason=reason,
            message=f"{reason}: {verdict.detail} (decision {ctx.decision_id})",
            annotations=_annotations(ctx, review),
            warnings=_warnings(ctx, allowed),
        )

    def _observe(self, ctx: RequestContext, allowed: bool, reason: str) -> None:
        decision = ctx.decision
        enforced = "true" if decision.enforced else "false"
        metrics.REQUESTS.labels(ROUTE_NAME, decision.action, enforced).inc()
        if not allowed or decision.action != ALLOW:
            metrics.DENIALS.labels(ROUTE_NAME, reason or decision.rule or decision.action).inc()
        metrics.DECISION_SECONDS.observe(time.perf_counter() - ctx.started)
        for stage, seconds in ctx.stage_times.items():
            metrics.STAGE_SECONDS.labels(stage).observe(seconds)
        # Reviews are few: their counts reach the shared metrics at once (no Flusher here).
        metrics.flush()


def _version(review: Review) -> str | None:
    """The ``resourceVersion`` of a Scale review's ``oldObject``: the API server copies it from
    the workload it is changing (and the new Scale carries the same by the time it asks)."""
    if review.sub_resource != "scale" or review.old is None:
        return None
    meta = review.old.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return version if isinstance(version, str) and version else None


def _annotations(ctx: RequestContext, review: Review) -> dict[str, str]:
    """Kept by the API server in its own audit log, next to the request."""
    decision = ctx.decision
    out = {
        "decision-id": ctx.decision_id,
        "action": decision.action,
        "reasons": ",".join(decision.reasons)[:256],
    }
    compute = ctx.maybe("compute")
    if compute is not None:
        out["gpus"] = f"{compute.gpus:g}"
        out["gpu-hours"] = f"{compute.gpu_hours:g}"
    if review.dry_run:
        out["dry-run"] = "true"
    return out


def _warnings(ctx: RequestContext, allowed: bool) -> list[str]:
    decision = ctx.decision
    if allowed and decision.action != ALLOW:
        return [f"gatekeeper (monitor): would {decision.action}: {', '.join(decision.reasons)}"]
    return []


def _bad(status: int, message: str) -> web.Response:
    body = {"type": "about:blank", "title": "bad admission review", "status": status,
            "detail": message}  # fmt: skip
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/problem+json"
    )


def build_admission_app(cfg: Config, adm: AdmissionConfig, runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.router.add_post(ADMISSION_PATH, AdmissionHandler(cfg, adm, runtime).handle)
    return app


def ssl_context(adm: AdmissionConfig) -> ssl.SSLContext:
    """The listener's TLS context (the API server verifies it against the webhook's CA bundle)."""
    assert adm.tls is not None  # the loader refuses an admission section without tls
    return adm.tls.server_context()


async def start_admission(
    cfg: Config, runtime: Runtime, *, reuse_port: bool
) -> web.AppRunner | None:
    """Start the webhook listener when ``admission:`` is configured (``None`` otherwise);
    ``OSError`` when it cannot listen."""
    adm = cfg.admission
    if adm is None:
        return None
    runner = web.AppRunner(
        build_admission_app(cfg, adm, runtime), handle_signals=False, access_log=None
    )
    await runner.setup()
    site = web.TCPSite(
        runner, adm.host, adm.port, ssl_context=ssl_context(adm), reuse_port=reuse_port
    )
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


__all__ = [
    "ADMISSION_PATH",
    "AdmissionHandler",
    "admission_route",
    "build_admission_app",
    "start_admission",
]
