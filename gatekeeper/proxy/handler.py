"""The HTTP face of the gate: intake, body, decide, audit, then forward or block.

One literal sequence, readable top to bottom in ``GateHandler.__call__``:

1. ``Intake.admit`` (intake.py): normalise the path, resolve the client IP, match the route, the
   header rules; a refusal there is decided and audited like any other;
2. read the body when the route measures it (bounded: 413, timed: 408), else leave it to stream;
3. ``decide``: the route's pipeline (authn → ownership → geo → compute → policy → enforce → quota);
4. write the audit record and wait until it is durable (audit before act; failure → 503);
5. forward (streamed) or answer with problem+json; refund quota (``Verdict.refund``) when the
   upstream fails or answers ≥ 400; append the request's *outcome* line to the audit log
   without delaying the reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from .. import metrics
from ..audit.record import outcome_body
from ..config import Config, RouteConfig
from ..context import R_BODY_INCOMPLETE, R_BODY_TIMEOUT, R_BODY_TOO_LARGE, RequestContext
from ..errors import BadRequest, Deny, DependencyError
from ..flusher import Flusher
from ..intake import Intake, Request, Verdict, decide
from ..runtime import Runtime
from .forward import (
    ClientGone,
    UpstreamBroke,
    Upstreams,
    forward_http,
    forward_websocket,
    gate_headers,
)
from .problem import problem_reply
from .server import GateRequest, RequestPayloadError, Responder, is_websocket, send_continue

log = logging.getLogger("gatekeeper.proxy")

# Per-request metric updates go to in-process buffers (``metrics.buffered``), moved to the real
# metrics by ``flusher.Flusher`` (when the handler goes idle, at most once per IDLE_FLUSH_S, and
# every FLUSH_EVERY_S under load): with workers > 1 each direct update would write a shared mmap
# file (~10% of the CPU per request).
_child = metrics.buffered


class GateHandler:
    """The proxy listener's request handler (``server.GateServer`` calls it per request)."""

    def __init__(self, cfg: Config, runtime: Runtime, upstreams: Upstreams) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.upstreams = upstreams
        self.intake = Intake(cfg)
        self.max_body = cfg.limits.max_body_bytes
        # SECURITY: a buffered (measured) body must arrive within limits.body_timeout_s, or a
        # client dribbling a byte at a time holds the request open forever (slow-body slowloris).
        self.body_timeout = cfg.limits.body_timeout_s
        self.in_flight = 0
        self.flusher = Flusher(self._set_in_flight_gauge)
        # Per route, worked out once: the upstream's base URL and its Host.
        self._upstream_of = {
            r.name: (r.upstream.rstrip("/"), _host_of(r.upstream)) for r in cfg.routes
        }
        # The metric children each request updates, looked up once each (on first use: a label
        # set appears in /metrics when it is first counted, not before).
        self._decision_cells = metrics.DECISION_SECONDS.labels()
        self._upstream_cells: dict[str, metrics.HistogramCells] = {}
        self._requests: dict[tuple[str, str, str], metrics.BufferedCounter] = {}

    # ----------------------------------------------------------------------------------- entry

    async def __call__(self, request: GateRequest, responder: Responder) -> None:
        self.in_flight += 1
        self.flusher.busy()
        try:
            started = time.perf_counter()
            admitted = self.intake.admit(
                Request(request.method, request.raw_path, request.headers, request.remote or ""),
                started=started,
            )
            if admitted.needs_body:
                try:
                    admitted.ctx.body = await self._read_body(request)
                except Deny as deny:
                    admitted.refuse(deny)
            snapshot = self.runtime.snapshot
            route = admitted.route
            pipeline = snapshot.pipeline_for(route) if route is not None else snapshot.anonymous
            verdict = await decide(admitted, pipeline, snapshot.quota_stage)
            if verdict.blocked:
                await self._block(responder, verdict)
            else:
                assert route is not None
                await self._forward(request, responder, verdict, route, admitted.target)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.flusher.idle()

    def _set_in_flight_gauge(self) -> None:
        metrics.IN_FLIGHT.set(self.in_flight)

    # ----------------------------------------------------------------------------------- body

    async def _read_body(self, request: GateRequest) -> bytes:
        """Read at most ``max_body_bytes`` (the declared length was checked at intake)."""
        limit = self.max_body
        length = request.content_length
        content = request.content
        send_continue(request)
        if length is not None and content.is_eof():
            # The whole body already arrived with the headers: taken as it is, no wait, no timer.
            try:
                data = content.read_nowait(-1)
            except (ConnectionError, RequestPayloadError):
                data = b""
            if len(data) != length:
                raise BadRequest(R_BODY_INCOMPLETE, "the request body ended before it was complete")
            return data
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                if length is not None:
                    # Known length (checked against the limit at intake): one read, no iterator.
                    return await content.readexactly(length)
                async for chunk in request.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > limit:
                        raise BadRequest(
                            R_BODY_TOO_LARGE, f"body larger than {limit} bytes", status=413
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise BadRequest(
                R_BODY_TIMEOUT, f"body not received within {self.body_timeout:g} s", status=408
            ) from None
        except (ConnectionError, asyncio.IncompleteReadError, RequestPayloadError):
            # SECURITY: a client that hangs up mid-body (or breaks the chunking) is a client error,
            # not "internal-error" 500 with a traceback: anyone could flood logs and 5xx alerts.
            raise BadRequest(
                R_BODY_INCOMPLETE, "the request body ended before it was complete"
            ) from None
        return b"".join(chunks)

    # ---------------------------------------------------------------------------------- block

    async def _block(self, responder: Responder, verdict: Verdict) -> None:
        assert verdict.status is not None
        await verdict.record(self.runtime.audit, verdict.status)
        await verdict.refund()
        await self._answer_verdict(responder, verdict)

    async def _answer_verdict(self, responder: Responder, verdict: Verdict) -> None:
        assert verdict.status is not None
        await self._answer_problem(
            responder,
            verdict.ctx,
            verdict.status,
            verdict.reason,
            verdict.detail,
            verdict.rule,
            verdict.headers,
        )

    async def _answer_problem(
        self,
        responder: Responder,
        ctx: RequestContext,
        status: int,
        reason: str,
        detail: str,
        rule: str | None,
        headers: Mapping[str, str],
    ) -> None:
        decision = ctx.decision
        route = ctx.request.route or "-"
        self._count(route, decision.action, "true")
        _child(metrics.DENIALS, route, reason).inc()
        self._decision_cells.observe(time.perf_counter() - ctx.started)
        metrics.STAGE_SECONDS.observe_each(ctx.stage_times)
        reply = problem_reply(
            status=status,
            reason=reason,
            detail=detail,
            decision_id=ctx.decision_id,
            rule=rule,
            reasons=decision.reasons,
            headers=headers,
        )
        await responder.send(reply.status, reply.headers, reply.body)

    # -------------------------------------------------------------------------------- forward

    async def _forward(
        self,
        request: GateRequest,
        responder: Responder,
        verdict: Verdict,
        route: RouteConfig,
        target: str,
    ) -> None:
        ctx = verdict.ctx
        started = ctx.started
        decision = ctx.decision
        # Audit before act: the record is durable before a byte goes upstream.
        if not await verdict.record(self.runtime.audit, None):
            await verdict.refund()
            return await self._answer_verdict(responder, verdict)
        self._decision_cells.observe(time.perf_counter() - started)
        metrics.STAGE_SECONDS.observe_each(ctx.stage_times)
        self._count(route.name, decision.action, "true" if decision.enforced else "false")
        if not decision.enforced and decision.action != "allow":
            _child(metrics.DENIALS, route.name, decision.rule or decision.action).inc()

        principal = ctx.maybe("principal")
        websocket = "Upgrade" in request.headers and is_websocket(request)
        base, host = self._upstream_of[route.name]
        headers = gate_headers(
            request,
            decision_id=ctx.decision_id,
            tenant=principal.tenant if principal else None,
            entity=principal.entity if principal else None,
            client_chain=ctx.request.client_ip,
            upstream_host=host,
            keep_upgrade=websocket,
        )
        url = base + target
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
            await responder.send(reply.status, reply.headers, reply.body)
        finally:
            upstream_cells = self._upstream_cells.get(route.name)
            if upstream_cells is None:
                upstream_cells = self._upstream_cells[route.name] = _child(
                    metrics.UPSTREAM_SECONDS, route.name
                )
            upstream_cells.observe(time.perf_counter() - t_up)
            if upstream_status is None or upstream_status >= 400:
                await verdict.refund()
            self._outcome(ctx, status, upstream_status, started)

    # -------------------------------------------------------------------------------- helpers

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

    def _count(self, route: str, action: str, enforced: str) -> None:
        """``gatekeeper_requests_total{route, action, enforced}`` + 1."""
        key = (route, action, enforced)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = _child(metrics.REQUESTS, *key)
        counter.pending += 1.0

    def close(self) -> None:
        """After the server drained its requests: stop the metric flusher, flush the rest.

        (``AuditLog.close()`` writes the queued outcome lines.)"""
        self.flusher.close()


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc
