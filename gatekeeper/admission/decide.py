"""The webhook's pipeline: the route's own stages, with the principal from the tenant mapping.

The webhook decides through the same ``intake.decide`` as the proxy and ``check``; only the
pipeline it hands over differs, and only where the API server already did the work:

- authentication: the API server authenticated ``userInfo``; the tenant mapping names the entity,
  so a stage that sets that principal stands where the token check stands;
- compute: the review carries the object as it will be stored, so a patch is not re-applied; the
  webhook reads from the API server, as its own service account, only the DRA claims its pods
  name and, for a ``Scale`` (which carries nothing but replicas), the workload it scales, once:
  the workload as read is the old state too, when its ``resourceVersion`` is the Scale's (else
  the review is refused, see ``stages/kubernetes.py``). Without ``admission.api_server`` nothing
  is read: a claim that cannot be resolved is refused or bounded as the adapter says, a ``Scale``
  is refused;
- quota: an ``UPDATE`` draws only its increase over ``oldObject``, measured the same way
  (``ctx.prior``; when the old object cannot be measured the new one is charged whole). The
  policy still decides on the whole new object. A dry run is decided and charged nothing (the
  quota stage reads ``request.dry_run``).
"""

from __future__ import annotations

from ..adapters.kubernetes import parse_path
from ..adapters.kubernetes.pods import unmeasurable
from ..context import Principal, RequestContext
from ..errors import Deny, DependencyError
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


class AdmissionCompute:
    """Stands for the ``compute`` stage: measures the new object, then the old one of an UPDATE."""

    name = "compute"

    def __init__(self, inner: Stage, old: bytes | None, *, reads: bool) -> None:
        self.inner = inner
        self.old = old  # oldObject as JSON, for an UPDATE
        self.reads = reads  # admission.api_server is set: the webhook can read the workload

    async def run(self, ctx: RequestContext) -> None:
        api = parse_path(ctx.request.path)
        scale = api is not None and api.subresource == "scale"
        if api is not None and scale and not self.reads:
            raise unmeasurable(
                f"{api.resource}/scale",
                "a Scale carries only replicas; the webhook reads the workload it scales "
                "only with admission.api_server set",
            )
        await _measure(self.inner, ctx)
        if self.old is None or not ctx.has("compute") or scale:
            # a Scale's old state is the workload the stage read (``ctx.prior``): not read twice
            return
        before = ctx.with_body(self.old)
        try:
            await _measure(self.inner, before)
        except (Deny, DependencyError):
            return  # the old object cannot be bounded: the new one is charged whole
        ctx.prior = before.maybe("compute")


async def _measure(stage: Stage, ctx: RequestContext) -> None:
    pending = stage.run(ctx)
    if pending is not None:
        await pending


def admission_pipeline(
    runtime: Runtime,
    ctx: RequestContext,
    principal: Principal,
    *,
    old: bytes | None = None,
    access: ClaimAccess | None = None,
    version: str | None = None,
) -> Pipeline:
    """The route's pipeline with the webhook's substitutions (see the module docstring)."""
    stages: list[Stage] = []
    for stage in runtime.snapshot.pipeline_for(ctx.route_config).stages:
        if stage.name == "authn":
            stages.append(GivenPrincipal(principal))
        elif isinstance(stage, KubernetesComputeStage):
            inner: Stage = stage.inner if access is None else stage.for_admission(access, version)
            stages.append(AdmissionCompute(inner, old, reads=access is not None))
        else:
            stages.append(stage)
    return Pipeline(stages)


def principal_for(username: str, entity: str | None) -> Principal:
    return Principal(subject=username or "-", issuer=ISSUER, tenant=entity, entity=entity)


__all__ = ["ISSUER", "AdmissionCompute", "GivenPrincipal", "admission_pipeline", "principal_for"]
