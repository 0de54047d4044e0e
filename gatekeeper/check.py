"""Offline decisions: ``gatekeeper check REQUEST.json`` and the admin ``/v1/explain`` endpoint.

The request description goes through exactly the live path (``intake.py``: the same intake, header
and body checks, pipeline and merge of a refusal); nothing is forwarded, nothing is audited. The
answer is the decision JSON, with the policy trace.

Quota, three ways. By default the stage runs as an explanation (``RequestInfo.explain``): it reads
the buckets' usage and takes nothing, so the answer is the live one, an exhausted budget's 429 or
451 included, and it counts in no live metric (``/v1/explain`` runs inside a serving gate). A
store that cannot be reached is answered as ``quota.on_store_error`` says, with the store's error
in ``quota.error``. ``--consume`` takes the quota as a live request would; ``--no-quota`` skips
the stage (the answer then says nothing about budgets).
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
    runtime: Runtime, payload: dict[str, Any], *, consume: bool = False, skip_quota: bool = False
) -> dict[str, Any]:
    """Decide one described request; raises ``ValueError`` on a malformed description.

    ``consume`` takes quota as a live request would; ``skip_quota`` leaves the stage out; neither:
    the quota is read and nothing taken (the module docstring)."""
    if consume and skip_quota:
        raise ValueError("consume and skip_quota exclude each other")
    method, target, headers, client_ip, body = _request_fields(payload)
    admitted = Intake(runtime.cfg).admit(
        Request(method, target, headers, client_ip, body),
        started=time.perf_counter(),
        explain=not consume,
    )
    snapshot = runtime.snapshot
    route = admitted.route
    stages = snapshot.pipeline_for(route).stages if route is not None else ()
    # The live stages, with the rule trace live traffic skips for speed.
    pipeline = Pipeline(
        [
            PolicyStage(snapshot.policy, trace=True) if stage.name == "policy" else stage
            for stage in stages
            if not (skip_quota and stage.name == "quota")
        ]
    )
    # Only a consuming decision holds a reservation the quota stage could be asked to refund.
    verdict = await decide(admitted, pipeline, snapshot.quota_stage if consume else None)
    if not verdict.blocked:
        return render_decision(admitted.ctx)
    return render_decision(admitted.ctx, error=verdict.reason, detail=verdict.detail)


def render_decision(
    ctx: RequestContext, *, error: str | None = None, detail: str = ""
) -> dict[str, Any]:
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
        if detail:
            out["detail"] = detail
    return out
