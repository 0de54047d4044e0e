"""The ``geo`` stage: where the client address is (``ctx.geo``)."""

from __future__ import annotations

from ..context import RequestContext
from ..geo import GeoResolver


class GeoStage:
    """Looks the client IP up in the GeoIP databases; never fails (unknown -> ``known: false``)."""

    name = "geo"

    def __init__(self, resolver: GeoResolver) -> None:
        self.resolver = resolver

    def run(self, ctx: RequestContext) -> None:
        ctx.geo = self.resolver.lookup(ctx.request.client_ip)
