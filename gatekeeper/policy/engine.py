"""A compiled, immutable policy set and its evaluation.

Precedence: **deny** beats **require_license** beats **allow**; ``flag`` rules add their id to the
reasons without changing the outcome. The deciding rule is the first applying rule (in file order)
of the winning action; the reasons are the ids of every applying rule of that action, then the
licence (``license:<id>``) when one was used, then flags. ``require_license`` becomes allow when the
entity holds a covering licence (``licensing.py``); the allow then consumes the quotas of every
applying allow rule. Nothing applied → ``default_action`` with rule ``None`` and reason
``default-action``.

Unknown is never permissive. A condition is true, false or unknown (``terms``). A rule whose
condition is true applies. A rule whose condition is unknown applies when it can only make the
decision stricter or draw attention — ``deny``, ``require_license`` and ``flag`` — and then names
each attribute that was unknown as a reason ``unknown:<attribute>`` right after its id; an
``allow`` rule whose condition is unknown does not apply.

Every rule is evaluated by generated code (``terms``): one function over all rules without a
trace, each rule's own with one. Verdicts depend only on which rules applied, so they are cached
per bitmask of applying rules; a decision with an unknown condition is computed afresh (its
reasons name the unknown attributes of this request).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..context import (
    ALLOW,
    DENY,
    FLAG,
    R_DEFAULT,
    R_LICENSE_EXHAUSTED,
    R_UNKNOWN_PREFIX,
    REQUIRE_LICENSE,
    QuotaDef,
)
from .licensing import find_license
from .model import CompiledRule, PolicyInput, Verdict
from .terms import show3

# Unknown reasons per rule id, for the rules that applied on an unknown condition.
_Unknown = Mapping[str, tuple[str, ...]]
_NONE: _Unknown = {}

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
        "_strict",
        "default_action",
        "groups",
        "name",
        "quotas",
        "reads",
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
        reads: Sequence[tuple[str, str, int]] = (),
        matcher: Callable[[PolicyInput], tuple[int, int]] | None = None,
    ) -> None:
        self.name = name
        self.rules = tuple(rules)
        self.groups = dict(groups)
        self.quotas = dict(quotas)
        self.default_action = default_action
        self.version = version
        self.shadows = tuple(shadows)
        self.reads = tuple(reads)  # (attribute, file, line) of every condition leaf
        self._match = matcher if matcher is not None else _rule_by_rule(self.rules)
        # Rules that apply when their condition is unknown: all but allow rules.
        self._strict = sum(1 << i for i, r in enumerate(self.rules) if r.action != ALLOW)
        self._plans: dict[int, _Plan] = {}

    def __repr__(self) -> str:
        return f"PolicySet(name={self.name!r}, rules={len(self.rules)}, version={self.version!r})"

    # ---------------------------------------------------------------------------- evaluate

    def evaluate(self, inp: PolicyInput, *, trace: bool = False) -> Verdict:
        """Decide one request. With ``trace`` every rule is also explained."""
        if trace:
            return self._traced(inp)
        mask, unknown = self._match(inp)
        unknown &= self._strict
        if unknown:
            return self._with_unknowns(inp, mask, unknown)
        plan = self._plans.get(mask)
        if plan is None:
            plan = self._plan(self._hits(mask), _NONE)
            if len(self._plans) < _PLAN_CACHE_MAX:
                self._plans[mask] = plan
        if plan.needs_license:
            return self._licensed(plan, inp, None)
        return Verdict(
            plan.action, plan.rule, list(plan.reasons), plan.status, None, plan.quotas, []
        )

    def _hits(self, mask: int) -> dict[str, list[CompiledRule]]:
        hits: dict[str, list[CompiledRule]] = {DENY: [], REQUIRE_LICENSE: [], ALLOW: [], FLAG: []}
        for i, r in enumerate(self.rules):
            if mask >> i & 1:
                hits[r.action].append(r)
        return hits

    def _with_unknowns(self, inp: PolicyInput, mask: int, unknown: int) -> Verdict:
        why = {
            r.id: tuple(R_UNKNOWN_PREFIX + n for n in r.unknowns(inp))
            for i, r in enumerate(self.rules)
            if unknown >> i & 1
        }
        plan = self._plan(self._hits(mask | unknown), why)
        if plan.needs_license:
            return self._licensed(plan, inp, None)
        return Verdict(
            plan.action, plan.rule, list(plan.reasons), plan.status, None, plan.quotas, []
        )

    def _traced(self, inp: PolicyInput) -> Verdict:
        trace: list[dict[str, Any]] = []
        hits: dict[str, list[CompiledRule]] = {DENY: [], REQUIRE_LICENSE: [], ALLOW: [], FLAG: []}
        why: dict[str, tuple[str, ...]] = {}
        for r in self.rules:
            result = r.test(inp)
            applies = result is True or (result is None and r.action != ALLOW)
            trace.append(
                {
                    "rule": r.id,
                    "action": r.action,
                    "matched": applies,
                    "result": show3(result),
                    "because": r.explain(inp),
                }
            )
            if applies:
                hits[r.action].append(r)
                if result is None:
                    why[r.id] = tuple(R_UNKNOWN_PREFIX + n for n in r.unknowns(inp))
        plan = self._plan(hits, why)
        if plan.needs_license:
            return self._licensed(plan, inp, trace)
        return Verdict(
            plan.action, plan.rule, list(plan.reasons), plan.status, None, plan.quotas, trace
        )

    def _plan(self, hits: Mapping[str, Sequence[CompiledRule]], why: _Unknown) -> _Plan:
        denied, required, allowed = hits[DENY], hits[REQUIRE_LICENSE], hits[ALLOW]
        flags = _ids(hits[FLAG], why)
        if denied:
            first = denied[0]
            reasons = _ids(denied, why) + flags
            return _Plan(DENY, first.id, reasons, first.status or DEFAULT_STATUS, ())
        if required or (not allowed and self.default_action == REQUIRE_LICENSE):
            return _Plan(
                REQUIRE_LICENSE,
                required[0].id if required else None,
                _ids(required, why) if required else (R_DEFAULT,),
                (required[0].status if required else None) or DEFAULT_STATUS,
                _quotas(allowed),
                needs_license=True,
                granted_tail=_ids(allowed, why) + flags,
                refused_tail=flags,
            )
        if allowed:
            reasons = _ids(allowed, why) + flags
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


def _rule_by_rule(rules: Sequence[CompiledRule]) -> Callable[[PolicyInput], tuple[int, int]]:
    """The matcher of rules compiled without one (each rule's own generated function)."""

    def match(inp: PolicyInput) -> tuple[int, int]:
        mask = unknown = 0
        for i, r in enumerate(rules):
            result = r.test(inp)
            if result:
                mask |= 1 << i
            elif result is None:
                unknown |= 1 << i
        return mask, unknown

    return match


def _ids(rules: Sequence[CompiledRule], why: _Unknown) -> tuple[str, ...]:
    """The rules' ids, each followed by the unknown attributes it applied on (once each)."""
    if not why:
        return tuple(r.id for r in rules)
    out: list[str] = []
    for r in rules:
        out.append(r.id)
        out.extend(n for n in why.get(r.id, ()) if n not in out)
    return tuple(out)


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
