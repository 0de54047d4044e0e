"""The ``policy`` stage: evaluate the compiled policy on the facts the pipeline gathered.

It sets ``ctx.decision`` and never raises: turning a blocking decision into the HTTP answer is the
edge's job (``stages.enforce.EnforceStage``), so monitor mode and ``check`` see the same decision.
Facts a route does not produce (no compute on a read route, no principal on an anonymous route)
are simply absent from the input; conditions on them are false. Shadow policies are evaluated
here too and recorded on the decision, never enforced.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from ..context import Decision, RequestContext
from ..policy import PolicyInput, PolicySet


class PolicyStage:
    """Decides with ``policy``; ``swap`` replaces it atomically (hot reload keeps the last good:
    the caller swaps only after a new ``PolicySet`` compiled without errors)."""

    name = "policy"

    def __init__(
        self,
        policy: PolicySet,
        *,
        clock: Callable[[], datetime.date] = datetime.date.today,
        trace: bool = False,
        data_version: str | None = None,
    ) -> None:
        self.policy = policy
        self.data_version = data_version  # entity data + inventory (runtime.data_version_of)
        self.clock = clock
        self.trace = trace  # explain every rule (check, /v1/explain); off on the hot path

    def swap(self, policy: PolicySet) -> None:
        self.policy = policy  # one attribute store: in-flight requests keep the set they read

    def build_input(self, ctx: RequestContext) -> PolicyInput:
        return PolicyInput(
            principal=ctx.maybe("principal"),
            ownership=ctx.maybe("ownership"),
            geo=ctx.maybe("geo"),
            compute=ctx.maybe("compute"),
            request=ctx.request,
            today=self.clock(),
        )

    def run(self, ctx: RequestContext) -> None:
        policy = self.policy  # read once: a concurrent swap must not mix two policy versions
        inp = self.build_input(ctx)
        verdict = policy.evaluate(inp, trace=self.trace)
        shadow = policy.evaluate_shadow(inp, verdict) if policy.shadows else []
        ctx.decision = Decision(
            action=verdict.action,
            rule=verdict.rule,
            reasons=verdict.reasons,
            status=verdict.status,
            enforced=ctx.request.mode == "enforce",
            policy_version=policy.version,
            data_version=self.data_version,
            license=verdict.license.id if verdict.license is not None else None,
            quotas=tuple(q.name for q in verdict.quotas),
            trace=verdict.trace,
            shadow=shadow,
        )
