"""The ``compute`` stage: how much controlled compute the request asks for (``ctx.compute``)."""

from __future__ import annotations

from ..adapters import measure
from ..context import RequestContext
from ..gpus import GpuCatalog
from ..inventory import EMPTY_INVENTORY, Inventory


class ComputeStage:
    """Runs the route's adapter on the buffered body; ``adapter: none`` leaves ``compute`` unset."""

    name = "compute"

    def __init__(self, catalog: GpuCatalog, inventory: Inventory = EMPTY_INVENTORY) -> None:
        self.catalog = catalog
        self.inventory = inventory

    def run(self, ctx: RequestContext) -> None:
        c = measure(
            ctx.route_config,
            ctx.request.method,
            ctx.request.path,
            ctx.headers,
            ctx.body,
            self.catalog,
            self.inventory,
        )
        if c is not None:
            ctx.compute = c
