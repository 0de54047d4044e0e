"""A compiled, immutable policy set and its evaluation (CONTRACT §5.3).

Precedence: **deny** beats **require_license** beats **allow**; ``flag`` rules add their id to the
reasons without changing the outcome. The deciding rule is the first matching rule (in file order)
of the winning action; the reasons are the ids of every matching rule of that action, then the
licence (``license:<id>``) when one was used, then flags. ``require_license`` becomes allow when the
entity holds a covering licence (``licensing.py``); the allow then consumes the quotas of every
matching allow rule. Nothing matched → ``default_action`` with rule ``None`` and reason
``default-action``.

Every rule is evaluated. The fast path runs one generated function over all rules (see
``compiler._Emitter``) and looks the verdict up by the bitmask of matching rules; with a trace
the reference closures are run and each rule explained.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..context import ALLOW, DENY, FLAG, R_DEFAULT, R_LICENSE_EXHAUSTED, REQUIRE_LICENSE, QuotaDef
from .licensing import find_license
from .model import CompiledRule, PolicyInput, Verdict

DEFAULT_STATUS = 451  # deny and require_license, unless a rule says otherwise
DEFAULT_ACTIONS = (DENY, REQUIRE_LICENSE, ALLOW)


@dataclass(frozen=True, slots=True)
class _Plan:
    """The verdict implied by one set of matching rules, before any licence is looked at.

    Plans depend only on which rules matched, so they are computed once per distinct bitmask
    and cached; evaluation is then one matcher call, one dict lookup and one ``Verdict``.
    """

    action: str
    rule: str | None
    reasons: tuple[str, ...]
    status: int | None
    quotas: tuple[QuotaDef, ...]
    # Only when the licence decides (require_license): reasons appended either way.
    needs_license: bool = False
    granted_tail: tuple[str, ...] = ()  # allow rule ids + flags, after "license:<id>"
    refused_tail: tuple[str, ...] = ()  # flags, after an optional "license-exhausted"


_PLAN_CACHE_MAX = 4096  # distinct match patterns are few; the bound only guards memory


class PolicySet:
    """Compiled rules of the active policy files plus the shadow policies; evaluation is pure."""

    __slots__ = (
        "_match",
        "_plans",
        "default_action",
        "groups",
        "name",
        "quotas",
        "rules",
        "shadows",
        "version",
    )

    def __init__(
        self,
        *,
        name: str,
        rules: Sequence[CompiledRule],
        groups: Mapping[str, tuple[Any, ...]],
        quotas: Mapping[str, QuotaDef],
        default_action: str,
        version: str,
        shadows: Sequence[PolicySet] = (),
        matcher: Callable[[PolicyInput], int] | None = None,
    ) -> None:
        self.name = name
        self.rules = tuple(rules)
        self.groups = dict(groups)
        self.quotas = dict(quotas)
        self.default_action = default_action
        self.version = version
        self.shadows = tuple(shadows)
        self._match = matcher if matcher is not None else _closure_matcher(self.rules)
        self._plans: dict[int, _Plan] = {}

    def __repr__(self) -> str:
        return f"PolicySet(name={self.name!r}, rules={len(self.rules)}, version={self.version!r})"

    # ---------------------------------------------------------------------------- evaluate

    def evaluate(self, inp: PolicyInput, *, trace: bool = False) -> Verdict:
        """Decide one request. With ``trace`` every rule is also explained."""
        if trace:
            return self._traced(inp)
        mask = self._match(inp)
        plan = self._plans.get(mask)
        if plan is None:
            plan = self._plan_for(mask)
        if plan.needs_license:
            return self._licensed(plan, inp, None)
        return Verdict(
            plan.action, plan.rule, list(plan.reasons), plan.status, None, plan.quotas, []
        )

    def _plan_for(self, mask: int) -> _Plan:
        hits: dict[str, list[CompiledRule]] = {DENY: [], REQUIRE_LICENSE: [], ALLOW: [], FLAG: []}
        for i, r in enumerate(self.rules):
            if mask >> i & 1:
                hits[r.action].append(r)
        plan = self._plan(hits)
        if len(self._plans) < _PLAN_CACHE_MAX:
            self._plans[mask] = plan
        return plan

    def _traced(self, inp: PolicyInput) -> Verdict:
        trace: list[dict[str, Any]] = []
        hits: dict[str, list[CompiledRule]] = {DENY: [], REQUIRE_LICENSE: [], ALLOW: [], FLAG: []}
        for r in self.rules:
            # The closures are the reference implementation; the trace explains with them.
            matched = bool(r.test(inp))
            trace.append(
                {"rule": r.id, "action": r.action, "matched": matched, "because": r.explain(inp)}
            )
            if matched:
                hits[r.action].append(r)
        plan = self._plan(hits)
        if plan.needs_license:
            return self._licensed(plan, inp, trace)
        return Verdict(
            plan.action, plan.rule, list(plan.reasons), plan.status, None, plan.quotas, trace
        )

    def _plan(self, hits: Mapping[str, Sequence[CompiledRule]]) -> _Plan:
        denied, required, allowed = hits[DENY], hits[REQUIRE_LICENSE], hits[ALLOW]
        flags = tuple(r.id for r in hits[FLAG])
        if denied:
            first = denied[0]
            reasons = tuple(r.id for r in denied) + flags
            return _Plan(DENY, first.id, reasons, first.status or DEFAULT_STATUS, ())
        if required or (not allowed and self.default_action == REQUIRE_LICENSE):
            return _Plan(
                REQUIRE_LICENSE,
                required[0].id if required else None,
                tuple(r.id for r in required) if required else (R_DEFAULT,),
                (required[0].status if required else None) or DEFAULT_STATUS,
                _quotas(allowed),
                needs_license=True,
                granted_tail=tuple(r.id for r in allowed) + flags,
                refused_tail=flags,
            )
        if allowed:
            reasons = tuple(r.id for r in allowed) + flags
            return _Plan(ALLOW, allowed[0].id, reasons, None, _quotas(allowed))
        reasons = (R_DEFAULT, *flags)
        if self.default_action == ALLOW:
            return _Plan(ALLOW, None, reasons, None, ())
        return _Plan(DENY, None, reasons, DEFAULT_STATUS, ())

    def _licensed(
        self, plan: _Plan, inp: PolicyInput, trace: list[dict[str, Any]] | None
    ) -> Verdict:
        check = find_license(inp, explain=trace is not None)
        if trace is not None:
            trace.append(
                {
                    "rule": "license",
                    "action": REQUIRE_LICENSE,
                    "matched": check.granted is not None,
                    "because": "; ".join(check.notes),
                }
            )
        out_trace = trace if trace is not None else []
        reasons = list(plan.reasons)
        if check.granted is None:
            if check.exhausted:
                reasons.append(R_LICENSE_EXHAUSTED)
            reasons.extend(plan.refused_tail)
            return Verdict(REQUIRE_LICENSE, plan.rule, reasons, plan.status, None, (), out_trace)
        reasons.append("license:" + check.granted.id)
        reasons.extend(plan.granted_tail)
        return Verdict(ALLOW, plan.rule, reasons, None, check.granted, plan.quotas, out_trace)

    # ------------------------------------------------------------------------------ shadow

    def evaluate_shadow(self, inp: PolicyInput, active: Verdict) -> list[dict[str, Any]]:
        """Evaluate every shadow policy (never enforced); count each whose action differs."""
        if not self.shadows:
            return []
        out: list[dict[str, Any]] = []
        for shadow in self.shadows:
            v = shadow.evaluate(inp)
            differs = v.action != active.action
            if differs:
                metrics.SHADOW_DIVERGENCE.labels(
                    policy=shadow.name, active=active.action, shadow=v.action
                ).inc()
            out.append(
                {
                    "policy": shadow.name,
                    "version": shadow.version,
                    "action": v.action,
                    "rule": v.rule,
                    "reasons": v.reasons,
                    "differs": differs,
                }
            )
        return out


def _closure_matcher(rules: tuple[CompiledRule, ...]) -> Callable[[PolicyInput], int]:
    """The reference matcher built from the closures (used when no generated one is given)."""

    def match(inp: PolicyInput) -> int:
        m = 0
        for i, r in enumerate(rules):
            if r.test(inp):
                m |= 1 << i
        return m

    return match


def _quotas(allowed: Sequence[CompiledRule]) -> tuple[QuotaDef, ...]:
    if not allowed:
        return ()
    if len(allowed) == 1:
        return allowed[0].quotas
    seen: dict[QuotaDef, None] = {}
    for r in allowed:
        for q in r.quotas:
            seen[q] = None
    return tuple(seen)
