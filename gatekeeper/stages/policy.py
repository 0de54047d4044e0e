"""The ``policy`` stage: evaluate the compiled policy on the facts the pipeline gathered.

It sets ``ctx.decision`` and never raises: turning a blocking decision into the HTTP answer is the
edge's job (``stages.enforce.EnforceStage``), so monitor mode and ``check`` see the same decision.
Facts a route does not produce (no compute on a read route, no principal on an anonymous route)
are simply absent from the input; conditions on them are false. Shadow policies are evaluated
here too and recorded on the decision, never enforced.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

from ..context import Decision, RequestContext, policy_facts
from ..policy import PolicyInput, PolicySet


def today() -> datetime.date:
    """``datetime.date.today()``, read once a second.

    The date is a function of the whole second: ``date.today()`` is ``date.fromtimestamp`` of
    ``time.time()``, which takes the floor of the timestamp before the local calendar. So the
    date of the second last read is exact for every call within it.
    """
    global _day_second, _day
    second = int(time.time())
    if second != _day_second:
        _day = datetime.date.fromtimestamp(second)
        _day_second = second
    return _day


_day_second = -1
_day = datetime.date.min


class PolicyStage:
    """Decides with ``policy``; ``swap`` replaces it atomically (hot reload keeps the last good:
    the caller swaps only after a new ``PolicySet`` compiled without errors)."""

    name = "policy"

    def __init__(
        self,
        policy: PolicySet,
        *,
        clock: Callable[[], datetime.date] = today,
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
        principal, ownership, geo, compute = policy_facts(ctx)
        return PolicyInput(principal, ownership, geo, compute, ctx.request, self.clock())

    def run(self, ctx: RequestContext) -> None:
        policy = self.policy  # read once: a concurrent swap must not mix two policy versions
        inp = self.build_input(ctx)
        verdict = policy.evaluate(inp, trace=self.trace)
        shadow = policy.evaluate_shadow(inp, verdict) if policy.shadows else []
        quotas = verdict.quotas
        lic = verdict.license
        ctx.decision = Decision(
            action=verdict.action,
            rule=verdict.rule,
            reasons=verdict.reasons,
            status=verdict.status,
            enforced=ctx.request.mode == "enforce",
            policy_version=policy.version,
            data_version=self.data_version,
            license=lic.id if lic is not None else None,
            quotas=(quotas[0].name,) if len(quotas) == 1 else tuple([q.name for q in quotas]),
            trace=verdict.trace,
            shadow=shadow,
        )
