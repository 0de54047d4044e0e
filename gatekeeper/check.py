"""Offline decisions: ``gatekeeper check REQUEST.json`` and the admin ``/v1/explain`` endpoint.

The request description is run through exactly the same path normalisation, routing and pipeline
as live traffic; nothing is forwarded, nothing is audited, and quota is consumed only with
``--consume``. The answer is the decision JSON of CONTRACT §1, with the policy trace.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from .context import DENY, Decision, RequestContext, RequestInfo
from .errors import Deny, DependencyError
from .pipeline import run_stage
from .policy.purpose import header_purpose
from .proxy.clientip import ClientIPResolver
from .proxy.headers import strip_client_headers
from .proxy.ids import new_decision_id
from .proxy.paths import normalize_path, split_target
from .proxy.routing import Router
from .runtime import Runtime
from .stages.policy import PolicyStage

MAX_BODY_TEXT = 16 * 1024 * 1024


def _request_fields(payload: dict[str, Any]) -> tuple[str, str, CIMultiDictProxy[str], str, bytes]:
    method = payload.get("method", "POST")
    path = payload.get("path")
    raw_headers = payload.get("headers", {})
    client_ip = payload.get("client_ip", "127.0.0.1")
    if not isinstance(method, str) or not method.isalpha():
        raise ValueError("'method' must be an HTTP method name")
    if not isinstance(path, str) or not path:
        raise ValueError("'path' is required and must be a string")
    if not isinstance(client_ip, str):
        raise ValueError("'client_ip' must be a string")
    headers: CIMultiDict[str] = CIMultiDict()
    if isinstance(raw_headers, dict):
        for k, v in raw_headers.items():
            values = v if isinstance(v, list) else [v]
            for item in values:
                if not isinstance(item, str):
                    raise ValueError(f"header {k!r} must be a string or a list of strings")
                headers.add(str(k), item)
    else:
        raise ValueError("'headers' must be an object")
    if "body_text" in payload:
        text = payload["body_text"]
        if not isinstance(text, str) or len(text) > MAX_BODY_TEXT:
            raise ValueError("'body_text' must be a string of at most 16 MiB")
        body = text.encode()
    elif "body" in payload:
        body = orjson.dumps(payload["body"])
    else:
        body = b""
    return method.upper(), path, CIMultiDictProxy(headers), client_ip, body


async def decide_offline(
    runtime: Runtime, payload: dict[str, Any], *, consume: bool
) -> dict[str, Any]:
    """Decide one described request; raises ``ValueError`` on a malformed description."""
    method, target, headers, client_ip, body = _request_fields(payload)
    cfg = runtime.cfg
    started = time.perf_counter()
    ip = ClientIPResolver(cfg.trusted_proxies).resolve(
        client_ip, headers.getall("X-Forwarded-For", ()), headers.getall("Forwarded", ())
    )
    ctx = RequestContext(
        decision_id=new_decision_id(),
        request=RequestInfo(route="", method=method, path=target, client_ip=ip),
        headers=strip_client_headers(headers),
        body=body,
        started=started,
    )
    status: int | None = None
    error: str | None = None
    try:
        path = normalize_path(split_target(target)[0])
        route = Router(cfg.routes).match(method, path)
        if route is None:
            raise Deny("no-route", 404, f"no route for {method} {path}")
        ctx.route_config = route
        ctx.request = RequestInfo(
            route=route.name,
            method=method,
            path=path,
            client_ip=ip,
            purpose=header_purpose(headers),
            mode=route.mode,
        )
        snapshot = runtime.snapshot
        for stage in snapshot.pipeline_for(route).stages:
            if stage.name == "quota" and not consume:
                continue
            if stage.name == "policy":
                # Same policy, with the rule trace that live traffic skips for speed.
                stage = PolicyStage(snapshot.policy, trace=True)
            await run_stage(stage, ctx)
    except Deny as deny:
        status = deny.status
        error = deny.reason
        if not ctx.has("decision"):
            ctx.decision = Decision(DENY, deny.rule, [deny.reason], status=deny.status)
        elif deny.reason not in ctx.decision.reasons:
            ctx.decision.reasons.append(deny.reason)
            if ctx.decision.action == "allow":
                ctx.decision.action = DENY
    except DependencyError as dep:
        status = dep.status
        error = dep.reason
        if not ctx.has("decision"):
            ctx.decision = Decision("error", None, [dep.reason], status=dep.status)
    decision = ctx.decision
    if status is not None:
        decision.status = status
    elif decision.action != "allow" and decision.enforced:
        decision.status = decision.status or 451
    else:
        decision.status = None
    return render_decision(ctx, error=error)


def render_decision(ctx: RequestContext, *, error: str | None = None) -> dict[str, Any]:
    """The decision JSON of CONTRACT §1."""
    d = ctx.decision
    principal = ctx.maybe("principal")
    ownership = ctx.maybe("ownership")
    geo = ctx.maybe("geo")
    compute = ctx.maybe("compute")
    quota = ctx.maybe("quota")
    out: dict[str, Any] = {
        "decision_id": ctx.decision_id,
        "action": d.action,
        "status": d.status,
        "rule": d.rule,
        "reasons": list(d.reasons),
        "enforced": d.enforced,
        "policy_version": d.policy_version,
        "license": d.license,
        "route": ctx.request.route or None,
        "principal": principal.to_json() if principal else None,
        "ownership": ownership.to_json() if ownership else None,
        "geo": geo.to_json() if geo else None,
        "compute": compute.to_json() if compute else None,
        "quota": quota.to_json() if quota else None,
        "shadow": list(d.shadow),
        "trace": list(d.trace),
    }
    if error is not None:
        out["error"] = error
    return out
