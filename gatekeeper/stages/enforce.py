"""The enforce stage: a blocking policy decision becomes a refusal before any quota is spent."""

from __future__ import annotations

from ..context import ALLOW, RequestContext
from ..errors import Deny


class EnforceStage:
    """Turns a blocking policy decision into a ``Deny`` (enforce mode) before any quota is spent.

    In monitor mode the decision stays on the context (``enforced: false``) and the request goes on.
    """

    name = "enforce"

    def run(self, ctx: RequestContext) -> None:
        decision = ctx.decision
        if decision.action == ALLOW or not decision.enforced:
            return
        rule = decision.rule or decision.action
        raise Deny(
            rule,
            decision.status or 451,
            f"{decision.action.replace('_', ' ')}: {', '.join(decision.reasons)}",
            rule=decision.rule,
        )
