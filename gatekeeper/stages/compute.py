"""The ``compute`` stage: how much controlled compute the request asks for (``ctx.compute``)."""

from __future__ import annotations

from ..adapters import measure
from ..context import RequestContext
from ..gpus import GpuCatalog


class ComputeStage:
    """Runs the route's adapter on the buffered body; ``adapter: none`` leaves ``compute`` unset."""

    name = "compute"

    def __init__(self, catalog: GpuCatalog) -> None:
        self.catalog = catalog

    def run(self, ctx: RequestContext) -> None:
        c = measure(
            ctx.route_config,
            ctx.request.method,
            ctx.request.path,
            ctx.headers,
            ctx.body,
            self.catalog,
        )
        if c is not None:
            ctx.compute = c
