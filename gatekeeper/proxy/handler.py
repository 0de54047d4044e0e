"""The gate's request handler: normalise, route, decide, audit, then forward or block.

One literal sequence, readable top to bottom in ``GateHandler.__call__``:

1. normalise the path, resolve the client IP, match the route (400/404 before any work);
2. read the body when a compute adapter needs it (bounded: 413), else leave it to stream;
3. run the route's pipeline (authn → ownership → geo → compute → policy → enforce → quota);
4. write the audit record and wait until it is durable (audit before act; failure → 503);
5. forward (streamed) or answer with problem+json; refund quota when the upstream fails or
   answers ≥ 400; append the request's *outcome* line to the audit log without delaying the reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

from .. import metrics
from ..audit.record import outcome_body, record_body
from ..config import Config, RouteConfig
from ..context import DENY, Decision, RequestContext, RequestInfo
from ..errors import BadRequest, Deny, DependencyError
from ..policy.purpose import header_purpose
from ..runtime import Runtime
from .clientip import ClientIPResolver
from .forward import (
    ClientGone,
    UpstreamBroke,
    Upstreams,
    forward_http,
    forward_websocket,
    gate_headers,
)
from .headers import refuse_override_headers, refuse_override_params, strip_client_headers
from .ids import new_decision_id
from .paths import normalize_path, split_target
from .problem import problem_reply
from .routing import Router
from .server import GateRequest, RequestPayloadError, Responder

log = logging.getLogger("gatekeeper.proxy")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# Per-request metric updates go to in-process buffers (``metrics.buffered``), moved to the real
# metrics by ``metrics.Flusher`` (when the handler goes idle, at most once per IDLE_FLUSH_S, and
# every FLUSH_EVERY_S under load): with workers > 1 each direct update would write a shared mmap
# file (~10% of the CPU per request).
_child = metrics.buffered


class GateHandler:
    """The proxy listener's request handler (``server.GateServer`` calls it per request)."""

    def __init__(self, cfg: Config, runtime: Runtime, upstreams: Upstreams) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.upstreams = upstreams
        self.router = Router(cfg.routes)
        self.ipres = ClientIPResolver(cfg.trusted_proxies)
        self.max_body = cfg.limits.max_body_bytes
        # SECURITY: a buffered (measured) body must arrive within limits.body_timeout_s, or a
        # client dribbling a byte at a time holds the request open forever (slow-body slowloris).
        self.body_timeout = cfg.limits.body_timeout_s
        self.in_flight = 0
        self.flusher = metrics.Flusher(self._set_in_flight_gauge)
        self._upstream_hosts = {r.name: _host_of(r.upstream) for r in cfg.routes}

    # ----------------------------------------------------------------------------------- entry

    async def __call__(self, request: GateRequest, responder: Responder) -> None:
        self.in_flight += 1
        self.flusher.busy()
        try:
            await self._handle(request, responder)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.flusher.idle()

    def _set_in_flight_gauge(self) -> None:
        metrics.IN_FLIGHT.set(self.in_flight)

    async def _handle(self, request: GateRequest, responder: Responder) -> None:
        started = time.perf_counter()
        decision_id = new_decision_id()
        headers = request.headers
        client_ip = self.ipres.resolve(
            request.peer_ip, headers.getall("X-Forwarded-For", ()), headers.getall("Forwarded", ())
        )
        ctx = RequestContext(
            decision_id=decision_id,
            request=RequestInfo(route="", method=request.method, path="", client_ip=client_ip),
            headers=headers,
            started=started,
        )
        snapshot = self.runtime.snapshot
        route: RouteConfig | None = None
        try:
            raw_path, query = split_target(request.raw_path)
            path = normalize_path(raw_path)
            route = self.router.match(request.method, path)
            if route is None:
                ctx.request = RequestInfo(
                    route="", method=request.method, path=path, client_ip=client_ip
                )
                raise Deny("no-route", 404, f"no route for {request.method} {path}")
            ctx.route_config = route
            # The purpose header is read before client X-Gatekeeper-* headers are stripped:
            # a self-declared purpose can only make a decision stricter, never looser.
            ctx.request = RequestInfo(
                route=route.name,
                method=request.method,
                path=path,
                client_ip=client_ip,
                purpose=header_purpose(headers),
                mode=route.mode,
            )
            refuse_override_headers(headers)
            refuse_override_params(query)
            ctx.headers = strip_client_headers(headers)
            if route.adapter != "none" and request.method in _BODY_METHODS:
                ctx.body = await self._read_body(request)
            await snapshot.pipeline_for(route).run(ctx)
        except Deny as deny:
            return await self._block(
                responder, ctx, deny.status, deny.reason, deny.detail, deny, started
            )
        except DependencyError as dep:
            return await self._block(
                responder, ctx, dep.status, dep.reason, dep.detail, None, started
            )
        except Exception:
            # A bug must still produce an audited, attributable, fail-closed answer.
            log.exception("internal error deciding %s", decision_id)
            return await self._block(
                responder, ctx, 500, "internal-error", "the gate failed to decide", None, started
            )
        assert route is not None
        if route.strip_prefix and path.startswith(route.strip_prefix):
            path = path[len(route.strip_prefix) :] or "/"
            if not path.startswith("/"):
                path = "/" + path
        await self._forward(request, responder, ctx, route, path + query, started)

    # ----------------------------------------------------------------------------------- body

    async def _read_body(self, request: GateRequest) -> bytes:
        """Read at most ``max_body_bytes``; more is a 413 before anything is decided."""
        limit = self.max_body
        length = request.content_length
        if length is not None and length > limit:
            raise BadRequest("body-too-large", f"body larger than {limit} bytes", status=413)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            # SECURITY: the gate measures the bytes it forwards; it does not inflate them
            # (a compression bomb) nor measure something other than what the scheduler reads.
            raise BadRequest(
                "content-encoding",
                f"Content-Encoding {encoding[:40]!r} is not accepted on a measured route",
            )
        content = request.content
        request.send_continue()
        if length is not None and content.is_eof():
            # The whole body already arrived with the headers: taken as it is, no wait, no timer.
            try:
                data = content.read_nowait(-1)
            except (ConnectionError, RequestPayloadError):
                data = b""
            if len(data) != length:
                raise BadRequest("body-incomplete", "the request body ended before it was complete")
            return data
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                if length is not None:
                    # Known length (checked against the limit above): one read, no iterator.
                    return await content.readexactly(length)
                async for chunk in request.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > limit:
                        raise BadRequest(
                            "body-too-large", f"body larger than {limit} bytes", status=413
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise BadRequest(
                "body-timeout", f"body not received within {self.body_timeout:g} s", status=408
            ) from None
        except (ConnectionError, asyncio.IncompleteReadError, RequestPayloadError):
            # SECURITY: a client that hangs up mid-body (or breaks the chunking) is a client error,
            # not "internal-error" 500 with a traceback: anyone could flood logs and 5xx alerts.
            raise BadRequest(
                "body-incomplete", "the request body ended before it was complete"
            ) from None
        return b"".join(chunks)

    # ---------------------------------------------------------------------------------- block

    async def _block(
        self,
        responder: Responder,
        ctx: RequestContext,
        status: int,
        reason: str,
        detail: str,
        deny: Deny | None,
        started: float,
    ) -> None:
        if not ctx.has("decision"):
            ctx.decision = Decision(
                action=DENY if deny is not None else "error",
                rule=deny.rule if deny is not None else None,
                reasons=[reason],
                status=status,
            )
        decision = ctx.decision
        decision.status = status
        if reason not in decision.reasons:
            decision.reasons.append(reason)
        if deny is not None and decision.action != DENY and status != 451:
            # quota, token and body failures block an otherwise allowed request
            decision.action = DENY
        extra = deny.headers if deny is not None else {}
        rule = decision.rule if deny is None or deny.rule is None else deny.rule
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            await self.runtime.audit.append(
                record_body(ctx, status=status, upstream_status=None, latency_ms=latency_ms)
            )
        except DependencyError as exc:
            await self._refund(ctx)
            return self._answer_problem(responder, ctx, 503, exc.reason, exc.detail, None, {})
        await self._refund(ctx)
        self._answer_problem(responder, ctx, status, reason, detail, rule, extra)

    def _answer_problem(
        self,
        responder: Responder,
        ctx: RequestContext,
        status: int,
        reason: str,
        detail: str,
        rule: str | None,
        headers: dict[str, str],
    ) -> None:
        decision = ctx.decision
        route = ctx.request.route or "-"
        _child(metrics.REQUESTS, route, decision.action, "true").inc()
        _child(metrics.DENIALS, route, reason).inc()
        _child(metrics.DECISION_SECONDS).observe(time.perf_counter() - ctx.started)
        self._observe_stages(ctx)
        reply = problem_reply(
            status=status,
            reason=reason,
            detail=detail,
            decision_id=ctx.decision_id,
            rule=rule,
            reasons=decision.reasons,
            headers=headers,
        )
        responder.send(reply.status, reply.headers, reply.body)

    # -------------------------------------------------------------------------------- forward

    async def _forward(
        self,
        request: GateRequest,
        responder: Responder,
        ctx: RequestContext,
        route: RouteConfig,
        target: str,
        started: float,
    ) -> None:
        decision = ctx.decision
        gate_ms = (time.perf_counter() - started) * 1000
        try:
            # Audit before act: the record is durable before a byte goes upstream.
            await self.runtime.audit.append(
                record_body(ctx, status=None, upstream_status=None, latency_ms=gate_ms)
            )
        except DependencyError as exc:
            await self._refund(ctx)
            decision.status = 503
            return self._answer_problem(responder, ctx, 503, exc.reason, exc.detail, None, {})
        _child(metrics.DECISION_SECONDS).observe(time.perf_counter() - started)
        self._observe_stages(ctx)
        enforced = "true" if decision.enforced else "false"
        _child(metrics.REQUESTS, route.name, decision.action, enforced).inc()
        if not decision.enforced and decision.action != "allow":
            _child(metrics.DENIALS, route.name, decision.rule or decision.action).inc()

        principal = ctx.maybe("principal")
        websocket = request.upgrade and request.method == "GET"
        headers = gate_headers(
            request,
            decision_id=ctx.decision_id,
            tenant=principal.tenant if principal else None,
            entity=principal.entity if principal else None,
            client_chain=ctx.request.client_ip,
            upstream_host=self._upstream_hosts[route.name],
            keep_upgrade=websocket,
        )
        url = route.upstream.rstrip("/") + target
        t_up = time.perf_counter()
        upstream_status: int | None = None
        status = 502
        try:
            if websocket:
                upstream_status = await forward_websocket(
                    self.upstreams,
                    request,
                    responder,
                    url=url,
                    headers=headers,
                    decision_id=ctx.decision_id,
                )
            else:
                upstream_status = await forward_http(
                    self.upstreams,
                    request,
                    responder,
                    url=url,
                    headers=headers,
                    body=ctx.body if ctx.body or route.adapter != "none" else None,
                    decision_id=ctx.decision_id,
                )
            status = upstream_status
        except ClientGone as gone:
            # The upstream answered; only the client left: record it, keep the charge.
            upstream_status = status = gone.status
            raise
        except UpstreamBroke as exc:
            # The answer started, then the upstream failed: the connection is cut (the client
            # sees a truncated answer), and the request counts as not served (refund).
            log.warning("upstream failed mid-answer for %s: %s", ctx.decision_id, exc)
        except DependencyError as exc:
            status = exc.status
            reply = problem_reply(
                status=exc.status,
                reason=exc.reason,
                detail=exc.detail,
                decision_id=ctx.decision_id,
                reasons=[exc.reason],
            )
            responder.send(reply.status, reply.headers, reply.body)
        finally:
            _child(metrics.UPSTREAM_SECONDS, route.name).observe(time.perf_counter() - t_up)
            if upstream_status is None or upstream_status >= 400:
                await self._refund(ctx)
            self._outcome(ctx, status, upstream_status, started)

    # -------------------------------------------------------------------------------- helpers

    async def _refund(self, ctx: RequestContext) -> None:
        if ctx.has("quota") and ctx.quota.reservation is not None and not ctx.quota.refunded:
            try:
                await self.runtime.snapshot.quota_stage.refund(ctx)
            except Exception:
                log.exception("quota refund failed for %s", ctx.decision_id)

    def _outcome(
        self, ctx: RequestContext, status: int, upstream_status: int | None, started: float
    ) -> None:
        """Append the outcome line (status, upstream status, latency) in the background."""
        body = outcome_body(
            ctx.decision_id,
            status,
            upstream_status,
            (time.perf_counter() - started) * 1000,
            ctx.quota.refunded if ctx.has("quota") else False,
        )
        # Queued without a task or a future: nobody waits for it, and AuditLog.close() still
        # writes whatever is queued at a graceful stop.
        try:
            self.runtime.audit.append_nowait(body)
        except DependencyError:
            log.warning("audit outcome line for %s not written", body["decision_id"])

    def _observe_stages(self, ctx: RequestContext) -> None:
        for stage, seconds in ctx.stage_times.items():
            _child(metrics.STAGE_SECONDS, stage).observe(seconds)

    def close(self) -> None:
        """After the server drained its requests: stop the metric flusher, flush the rest.

        (``AuditLog.close()`` writes the queued outcome lines.)"""
        self.flusher.close()


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc
