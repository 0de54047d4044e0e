"""Offline decisions: ``gatekeeper check REQUEST.json`` and the admin ``/v1/explain`` endpoint.

The request description goes through exactly the live path (``intake.py``: the same intake, header
and body checks, pipeline and merge of a refusal); nothing is forwarded, nothing is audited, and
quota is consumed only with ``--consume``. The answer is the decision JSON, with the policy trace.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from .context import RequestContext
from .intake import Intake, Request, decide
from .pipeline import Pipeline
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
    admitted = Intake(runtime.cfg).admit(
        Request(method, target, headers, client_ip, body), started=time.perf_counter()
    )
    snapshot = runtime.snapshot
    route = admitted.route
    stages = snapshot.pipeline_for(route).stages if route is not None else ()
    # The live stages, with the rule trace live traffic skips for speed; quota only if asked.
    pipeline = Pipeline(
        [
            PolicyStage(snapshot.policy, trace=True) if stage.name == "policy" else stage
            for stage in stages
            if consume or stage.name != "quota"
        ]
    )
    verdict = await decide(admitted, pipeline, snapshot.quota_stage if consume else None)
    return render_decision(admitted.ctx, error=verdict.reason if verdict.blocked else None)


def render_decision(ctx: RequestContext, *, error: str | None = None) -> dict[str, Any]:
    """The decision JSON (what ``check`` prints and ``/v1/explain`` answers)."""
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
