"""Intake and decision: the one path from a request to a ``Decision``, shared by every face.

A face (the HTTP edge, ``gatekeeper check``, an admission webhook) converts what it received into
a plain ``Request`` and acts on the ``Verdict``; it never decides. In between, two steps:

1. ``Intake.admit``: path normalisation, routing, the client address, the header rules (method
   and path overrides, the body's encoding and declared length on measured routes), the decision
   id, and the ``RequestContext`` with its ``RequestInfo`` (built once). A refusal here is kept on
   the ``Admitted`` request, not raised: it is decided, audited and answered like any other.
2. ``decide``: the route's pipeline (authn, ownership, geo, compute, policy, enforce, quota), and
   the one merge of a refusal into the decision. The ``Verdict`` says whether to forward or what
   to answer, and carries the quota refund of the stage that reserved it.

Nothing here knows HTTP frameworks: headers are a read-only case-insensitive multimap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from multidict import CIMultiDictProxy

from .adapters.kubernetes.dryrun import is_dry_run
from .audit.log import AuditLog
from .audit.record import record_body
from .config import Config, RouteConfig
from .context import (
    DENY,
    R_BAD_HTTP,
    R_BODY_TOO_LARGE,
    R_CONTENT_ENCODING,
    R_INTERNAL_ERROR,
    R_NO_ROUTE,
    Decision,
    RequestContext,
    RequestInfo,
)
from .errors import BadRequest, Deny, DependencyError
from .memo import remember
from .pipeline import Pipeline
from .policy.purpose import header_purpose
from .proxy.clientip import ClientIPResolver
from .proxy.headers import (
    GATE_MARK,
    header_names,
    refuse_override_headers,
    refuse_override_params,
    strip_client_headers,
)
from .proxy.ids import new_decision_id
from .proxy.paths import normalize_path, split_target
from .proxy.routing import Router
from .stages.quota import QuotaStage

log = logging.getLogger("gatekeeper")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_INFO_KEY_TEXT = 1024  # characters of a remembered RequestInfo's key (longer paths: built anew)
STATUS_BLOCKED = 451  # an enforced policy block (its action stays what the policy said)


@dataclass(frozen=True, slots=True)
class Request:
    """A request as a face hands it over: the request line's method and target, the headers,
    the address of the peer that sent it, and the body when the face has it whole (``None``: the
    edge reads it later, only when the route measures it)."""

    method: str
    target: str
    headers: CIMultiDictProxy[str]
    peer: str
    body: bytes | None = None


@dataclass(slots=True)
class Admitted:
    """A request after intake: its context, its route and upstream target, or its refusal."""

    ctx: RequestContext
    route: RouteConfig | None
    target: str  # the upstream request-target (prefix stripped, query kept); "" when refused
    refusal: Deny | None = None
    needs_body: bool = False  # the route measures the body: it must be in ``ctx.body`` to decide

    def refuse(self, deny: Deny) -> None:
        """A refusal found by the face while taking the body (size, time, a broken stream)."""
        if self.refusal is None:
            self.refusal = deny


class Intake:
    """The intake rules of one configuration (routes, trusted proxies, body limit)."""

    def __init__(self, cfg: Config) -> None:
        self.router = Router(cfg.routes)
        self.ipres = ClientIPResolver(cfg.trusted_proxies)
        self.max_body = cfg.limits.max_body_bytes
        # Every field of a RequestInfo -> the one shared instance (``_info``).
        self._infos: dict[tuple[Any, ...], RequestInfo] = {}

    def admit(self, request: Request, *, started: float, explain: bool = False) -> Admitted:
        """The request's context and route, or the refusal found at intake; ``explain`` marks an
        offline decision (``RequestInfo.explain``)."""
        headers = request.headers
        method = request.method
        names = header_names(headers)  # each header name is looked for in it, not in headers
        client_ip = self.ipres.resolve(
            request.peer,
            headers.getall("X-Forwarded-For", ()),
            headers.getall("Forwarded", ()) if "\nforwarded\n" in names else (),
        )
        path = ""
        route: RouteConfig | None = None
        refusal: Deny | None = None
        target = ""
        needs_body = False
        purpose: str | None = None
        dry_run = False
        try:
            raw_path, query = split_target(request.target)
            path = normalize_path(raw_path)
            route = self.router.match(method, path)
            if route is None:
                raise Deny(R_NO_ROUTE, 404, f"no route for {method} {path}")
            refuse_override_headers(headers, names)
            refuse_override_params(query)
            # Read before client X-Gatekeeper-* headers are stripped: a declared purpose adds to
            # the token's claim (policy/purpose.py), so it can only make a decision stricter.
            if GATE_MARK in names:  # else there is no X-Gatekeeper-Purpose to read
                purpose = header_purpose(headers)
            needs_body = route.adapter != "none" and method in BODY_METHODS
            if needs_body:
                self._check_body_headers(headers, request.body, names)
            target = _upstream_path(route, path) + query
            # Only the Kubernetes API knows dryRun: elsewhere the parameter exempts nothing.
            dry_run = route.adapter == "kubernetes" and bool(query) and is_dry_run(query)
        except Deny as deny:
            refusal = deny
        ctx = RequestContext(
            decision_id=new_decision_id(),
            request=self._info(route, method, path, client_ip, purpose, dry_run, explain),
            headers=strip_client_headers(headers, names),
            body=request.body if needs_body and request.body is not None else b"",
            route_config=route,
            started=started,
        )
        return Admitted(ctx, route, target, refusal, needs_body and refusal is None)

    def _info(
        self,
        route: RouteConfig | None,
        method: str,
        path: str,
        client_ip: str,
        purpose: str | None,
        dry_run: bool,
        explain: bool,
    ) -> RequestInfo:
        """The ``RequestInfo`` of these attributes, shared by the requests that repeat them (it
        is frozen; building one costs more than finding it)."""
        name, mode = (route.name, route.mode) if route is not None else ("", "enforce")
        key = (name, mode, method, path, client_ip, purpose, dry_run, explain)
        info = self._infos.get(key)
        if info is None:
            info = RequestInfo(
                route=name,
                method=method,
                path=path,
                client_ip=client_ip,
                purpose=purpose,
                mode=mode,
                dry_run=dry_run,
                explain=explain,
            )
            size = len(name) + len(method) + len(path) + len(client_ip) + len(purpose or "")
            remember(self._infos, key, info, size, _INFO_KEY_TEXT)
        return info

    def _check_body_headers(
        self, headers: CIMultiDictProxy[str], body: bytes | None, names: str
    ) -> None:
        """The declared (or given) size within ``max_body_bytes``, no ``Content-Encoding``
        (``names``: ``header_names(headers)``)."""
        limit = self.max_body
        if body is not None:
            length: int | None = len(body)
        else:
            length = _declared_length(headers.getall("Content-Length", ()))
        if length is not None and length > limit:
            raise BadRequest(R_BODY_TOO_LARGE, f"body larger than {limit} bytes", status=413)
        if "\ncontent-encoding\n" not in names:
            return
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            # SECURITY: the gate measures the bytes it forwards; it does not inflate them
            # (a compression bomb) nor measure something other than what the scheduler reads.
            raise BadRequest(
                R_CONTENT_ENCODING,
                f"Content-Encoding {encoding[:40]!r} is not accepted on a measured route",
            )


def _declared_length(values: Sequence[str]) -> int | None:
    """The one ``Content-Length`` as a number, ``None`` without one; 400 for anything else.

    The HTTP edge's parser refuses a malformed length before the intake sees it, but not every
    face has one: a list, a sign, ``_`` (which ``int`` reads) or two values are refused here too.
    """
    if not values:
        return None
    value = values[0].strip(" \t")
    if len(values) > 1 or not value.isascii() or not value.isdigit() or len(value) > 19:
        raise BadRequest(R_BAD_HTTP, f"Content-Length {values[0][:40]!r} is not one length")
    return int(value)


def _upstream_path(route: RouteConfig, path: str) -> str:
    prefix = route.strip_prefix
    if prefix and path.startswith(prefix):
        path = path[len(prefix) :] or "/"
        if not path.startswith("/"):
            path = "/" + path
    return path


@dataclass(slots=True)
class Verdict:
    """What ``decide`` returns: forward (``status`` None) or answer ``status`` with ``reason``."""

    ctx: RequestContext
    status: int | None = None
    reason: str = ""
    detail: str = ""
    rule: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    quota: QuotaStage | None = None  # the stage that reserved quota for this request, if any

    @property
    def decision(self) -> Decision:
        return self.ctx.decision

    @property
    def blocked(self) -> bool:
        return self.status is not None

    def unrecorded(self, exc: DependencyError) -> None:
        """The audit record could not be written: the request is answered ``exc`` (503), as a
        refusal, and neither forwarded nor admitted. The decision's reasons stay as decided."""
        self.status, self.reason, self.detail = exc.status, exc.reason, exc.detail
        self.rule, self.headers = None, {}
        self.ctx.decision.status = exc.status

    async def record(self, audit: AuditLog, status: int | None) -> bool:
        """Write the decision record (``status`` None: forwarded, the upstream answers); audit
        before act. ``False``: it could not be written, and this verdict is now the refusal
        that says so (``unrecorded``)."""
        latency_ms = (time.perf_counter() - self.ctx.started) * 1000
        try:
            await audit.append(
                record_body(self.ctx, status=status, upstream_status=None, latency_ms=latency_ms)
            )
        except DependencyError as exc:
            self.unrecorded(exc)
            return False
        return True

    async def refund(self) -> None:
        """Give this request's quota back (the upstream failed or refused): at most once."""
        state = self.ctx.maybe("quota")
        if self.quota is None or state is None or state.reservation is None or state.refunded:
            return
        try:
            await self.quota.refund(self.ctx)
        except Exception:
            log.exception("quota refund failed for %s", self.ctx.decision_id)


async def decide(admitted: Admitted, pipeline: Pipeline, quota: QuotaStage | None) -> Verdict:
    """Run the route's pipeline on an admitted request; every outcome becomes a ``Verdict``."""
    ctx = admitted.ctx
    verdict = Verdict(ctx, quota=quota)
    try:
        if admitted.refusal is not None:
            raise admitted.refusal
        await pipeline.run(ctx)
    except Deny as deny:
        _merge(verdict, deny.status, deny.reason, deny.detail, deny)
    except DependencyError as dep:
        _merge(verdict, dep.status, dep.reason, dep.detail, None)
    except Exception:
        # A bug must still produce an audited, attributable, fail-closed answer.
        log.exception("internal error deciding %s", ctx.decision_id)
        _merge(verdict, 500, R_INTERNAL_ERROR, "the gate failed to decide", None)
    else:
        ctx.decision.status = None  # forwarded: the upstream answers
    return verdict


def _merge(verdict: Verdict, status: int, reason: str, detail: str, deny: Deny | None) -> None:
    """The one merge of a refusal into the decision (or the decision it becomes)."""
    ctx = verdict.ctx
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
    if deny is not None and decision.action != DENY and status != STATUS_BLOCKED:
        # quota, token and body refusals block an otherwise allowed request
        decision.action = DENY
    verdict.status = status
    verdict.reason = reason
    verdict.detail = detail
    verdict.rule = decision.rule if deny is None or deny.rule is None else deny.rule
    verdict.headers = deny.headers if deny is not None else {}
