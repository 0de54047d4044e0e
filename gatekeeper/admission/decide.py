"""The webhook's one call into the decision core, and the merge of a denial into the decision.

``decide`` runs the snapshot's pipeline for the request's route exactly as the proxy does, with the
principal taken from the tenant mapping instead of a token (the API server authenticated the user)
and the quota stage left out for a dry run. It is the only place the webhook touches the core:
when the core becomes one shared ``decide`` function, this is what to point at it.
"""

from __future__ import annotations

import time

from ..context import DENY, Decision, Principal, RequestContext
from ..errors import Deny
from ..pipeline import run_stage
from ..runtime import Runtime
from ..stages.kubernetes import ClaimAccess, KubernetesComputeStage

ISSUER = "kubernetes-admission"


async def decide(
    runtime: Runtime,
    ctx: RequestContext,
    principal: Principal,
    *,
    consume: bool,
    access: ClaimAccess | None = None,
) -> None:
    """Set ``ctx.decision`` (and every fact on the way); raises ``Deny``/``DependencyError``."""
    clock = time.perf_counter
    for stage in runtime.snapshot.pipeline_for(ctx.route_config).stages:
        if stage.name == "authn":
            # SECURITY: the API server authenticated userInfo; the mapping names the entity
            ctx.principal = principal
            continue
        if stage.name == "quota" and not consume:
            continue
        if isinstance(stage, KubernetesComputeStage):
            # The review carries the object as it will be stored: only the DRA claims its pods
            # name are read, as the webhook's own service account (none configured: none read).
            stage = stage.inner if access is None else stage.for_admission(access)
        t0 = clock()
        try:
            await run_stage(stage, ctx)
        finally:
            ctx.stage_times[stage.name] = clock() - t0


def settle(ctx: RequestContext, status: int, reason: str, deny: Deny | None) -> None:
    """Merge a refusal into ``ctx.decision`` the way the proxy does before it answers."""
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
        decision.action = DENY


def principal_for(username: str, entity: str | None) -> Principal:
    return Principal(subject=username or "-", issuer=ISSUER, tenant=entity, entity=entity)


__all__ = ["ISSUER", "decide", "principal_for", "settle"]
