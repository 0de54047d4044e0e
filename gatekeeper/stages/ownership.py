"""The ``ownership`` stage: attach the principal's resolved ownership profile to the context.

It never denies: an entity unknown to the registry gets ``known=False`` and the policy rule
``unknown-entity`` decides (403 on compute routes). The registry is swapped on reload by replacing
``stage.registry`` (one attribute store, atomic for running requests).
"""

from __future__ import annotations

from ..context import RequestContext
from ..ownership import Registry


class OwnershipStage:
    """Sets ``ctx.ownership`` from the registry, keyed by the principal's entity (else tenant)."""

    name = "ownership"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def run(self, ctx: RequestContext) -> None:
        principal = ctx.principal
        entity_id = principal.entity if principal.entity is not None else principal.tenant
        # A principal with neither claim is looked up as "" and is simply unknown.
        ctx.ownership = self.registry.profile(entity_id or "")
