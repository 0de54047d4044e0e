"""The webhook's pipeline: the route's own stages, with the principal from the tenant mapping.

The webhook decides through the same ``intake.decide`` as the proxy and ``check``; only the
pipeline it hands over differs, and only where the API server already did the work:

- authentication: the API server authenticated ``userInfo``; the tenant mapping names the entity,
  so a stage that sets that principal stands where the token check stands;
- quota: a dry run is decided and charged nothing (the quota stage reads ``request.dry_run``);
- compute: the review carries the object as it will be stored, so a patch is not re-applied; only
  the DRA claims its pods name are read, as the webhook's own service account (none configured:
  none are read, and a claim that cannot be resolved is refused or bounded as the adapter says).
"""

from __future__ import annotations

from ..context import Principal, RequestContext
from ..pipeline import Pipeline, Stage
from ..runtime import Runtime
from ..stages.kubernetes import ClaimAccess, KubernetesComputeStage

ISSUER = "kubernetes-admission"


class GivenPrincipal:
    """Stands for the ``authn`` stage: the principal the tenant mapping named."""

    name = "authn"

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def run(self, ctx: RequestContext) -> None:
        # SECURITY: the API server authenticated userInfo; the mapping names the entity
        ctx.principal = self.principal


def admission_pipeline(
    runtime: Runtime,
    ctx: RequestContext,
    principal: Principal,
    *,
    access: ClaimAccess | None = None,
) -> Pipeline:
    """The route's pipeline with the webhook's substitutions (see the module docstring)."""
    stages: list[Stage] = []
    for stage in runtime.snapshot.pipeline_for(ctx.route_config).stages:
        if stage.name == "authn":
            stages.append(GivenPrincipal(principal))
        elif isinstance(stage, KubernetesComputeStage):
            stages.append(stage.inner if access is None else stage.for_admission(access))
        else:
            stages.append(stage)
    return Pipeline(stages)


def principal_for(username: str, entity: str | None) -> Principal:
    return Principal(subject=username or "-", issuer=ISSUER, tenant=entity, entity=entity)


__all__ = ["ISSUER", "GivenPrincipal", "admission_pipeline", "principal_for"]
