"""The ``authn`` stage: the request's verified identity (``ctx.principal``) from its JWT."""

from __future__ import annotations

from ..context import RequestContext
from ..identity import Authenticator
from ..identity.extract import extract_token


class AuthnStage:
    """Sets ``ctx.principal``; raises Deny (401) or DependencyError (503 jwks-unavailable)."""

    name = "authn"

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def run(self, ctx: RequestContext) -> None:
        # ``Authenticator.authenticate`` unfolded: a cache hit (nearly every request) costs no
        # coroutine of its own.
        route = ctx.route_config
        auth = self.authenticator
        token = extract_token(
            ctx.headers,
            route.token_headers if route is not None else (),
            auth.cfg.max_token_bytes,
        )
        verifier = auth.verifier
        principal = verifier.cached(token)
        if principal is None:
            principal = await verifier.verify_fresh(token)
        ctx.principal = principal
