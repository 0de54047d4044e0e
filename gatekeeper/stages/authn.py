"""The ``authn`` stage: the request's verified identity (``ctx.principal``) from its JWT."""

from __future__ import annotations

from ..context import RequestContext
from ..identity import Authenticator


class AuthnStage:
    """Sets ``ctx.principal``; raises Deny (401) or DependencyError (503 jwks-unavailable)."""

    name = "authn"

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def run(self, ctx: RequestContext) -> None:
        route = ctx.route_config
        token_headers = route.token_headers if route is not None else ()
        ctx.principal = await self.authenticator.authenticate(ctx.headers, token_headers)
