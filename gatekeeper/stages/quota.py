"""The ``quota`` stage: reserve compute budgets for an allowed request, all or none.

Runs after ``policy``. For an ``allow`` decision it draws the request's amount from every quota the
decision names (each ``per`` tenant, entity or ultimate parent) and, when the decision rests on a
licence with ``max_tpp_hours``, from that licence's lifetime budget, in one atomic store call.
All buckets live in the request's ownership group (its ultimate parent), which keeps them under one
Redis hash tag.

Outcomes: admitted -> ``ctx.quota`` holds the reservation that ``refund`` gives back exactly once
(the edge calls it when the upstream answers >= 400 or is unreachable). Exhausted ->
``Deny("quota-exhausted", 429)`` with ``Retry-After`` (``license-exhausted``, 451, for a licence);
in monitor mode the refusal is only recorded. Store failure or timeout -> ``DependencyError``
(503) under ``on_store_error: deny``, or a counted fail-open under ``allow``.

A Kubernetes dry run (``request.dry_run``) is decided from the buckets' usage and takes nothing;
so is an explanation (``request.explain``: ``gatekeeper check``, ``/v1/explain``), which moreover
counts in no live metric: its refusal or store failure is an answer to a question, not an event
of the serving gate, and it names the store failure in ``ctx.quota.error``.
A write that changes a stored object (``ctx.prior``: the object it replaces, as the webhook's
``oldObject`` or the proxy's read measured it) draws only the increase, per unit.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..context import (
    ALLOW,
    R_LICENSE_EXHAUSTED,
    R_QUOTA_EXHAUSTED,
    R_STORE_UNAVAILABLE,
    ComputeRequest,
    Decision,
    OwnershipProfile,
    Principal,
    QuotaDef,
    QuotaState,
    RequestContext,
    policy_facts,
)
from ..errors import BadRequest, Deny, DependencyError
from ..memo import remember
from ..stores.quota import Bucket, ConsumeResult, QuotaStore, bucket_key

LICENSE_WINDOW_S = 10 * 365 * 86400  # a licence budget is a lifetime budget; 10 years is "forever"
LICENSE_QUOTA = "license"  # metric label for licence budgets (bounded, unlike licence ids)


_PLAN_KEY_TEXT = 512  # characters of ids a remembered plan's key may hold
_Held = Callable[[str, Sequence[Bucket], float], ConsumeResult | None]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What an allowed request draws: its buckets, their units, their consumed counters."""

    buckets: tuple[Bucket, ...]
    units: dict[str, str]
    consumed: tuple[tuple[Any, float], ...]  # (buffered counter child, amount) per bucket


def license_quota_name(license_id: str) -> str:
    return f"license:{license_id}"


class QuotaStage:
    """Reserve before forwarding; refund exactly once. Dependencies in, request data per call."""

    name = "quota"

    def __init__(
        self,
        store: QuotaStore,
        quotas: Mapping[str, QuotaDef],
        *,
        on_store_error: str = "deny",
        timeout_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if on_store_error not in ("deny", "allow"):
            raise ValueError(f"on_store_error must be deny or allow, not {on_store_error!r}")
        self.store = store
        self.quotas = dict(quotas)
        self.on_store_error = on_store_error
        self.timeout_s = timeout_s
        self.clock = clock
        # A store that bounds its own calls by at most our deadline (the Redis store does) needs
        # no second timer around them: one asyncio.timeout per request is measurable.
        store_deadline = getattr(store, "timeout_s", None)
        self._own_deadline = not (
            isinstance(store_deadline, int | float) and 0 < store_deadline <= timeout_s
        )
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        # The store's admission from credit it holds, without a coroutine (``LeasedQuotaStore``):
        # a ``ConsumeResult``, or ``None`` when only ``consume`` can answer.
        self._held: _Held | None = getattr(store, "consume_held", None)

    # ------------------------------------------------------------------------------- run

    async def run(self, ctx: RequestContext) -> None:
        decision = ctx.decision
        if decision.action != ALLOW:
            return
        principal, own, _, compute = policy_facts(ctx)
        group = _group(principal, own)
        plan = self._plan(ctx, decision, group, principal, own, compute)
        buckets = plan.buckets
        if not buckets:
            return
        request = ctx.request
        if request.dry_run or request.explain:
            return await self._dry_run(ctx, group, plan)
        try:
            now = self.clock()
            # Admitted from credit the store holds (a lease): no store call, no coroutine.
            held = self._held
            result = held(group, buckets, now) if held is not None else None
            if result is None:
                if self._own_deadline:
                    async with asyncio.timeout(self.timeout_s):
                        result = await self.store.consume(group, buckets, now)
                else:
                    result = await self.store.consume(group, buckets, now)
        except (DependencyError, TimeoutError, OSError) as exc:
            self._store_failed(ctx, exc)
            return
        if not result.admitted:
            self._exhausted(ctx, buckets, plan.units, result)
            return
        # Buffered like the handler's metrics: with workers > 1 a direct inc writes the shared
        # metrics file under a lock on every admitted request.
        for counter, amount in plan.consumed:
            counter.inc(amount)
        remaining = result.remaining
        main = buckets[0] if len(buckets) == 1 else _tightest(buckets, result)
        ctx.quota = QuotaState(
            name=main.quota,
            consumed=main.amount,
            remaining=remaining[main.quota],
            limit=main.limit,
            window_s=main.window_s,
            reservation=result.reservation,
        )

    async def _dry_run(self, ctx: RequestContext, group: str, plan: _Plan) -> None:
        """Decide as ``consume`` would, from the buckets' usage, and take nothing.

        What differs from the real write: a request racing this one is not seen, and a refusal
        advises a retry after the whole window (the usage says how much is used, not when)."""
        buckets = plan.buckets
        remaining: dict[str, float] = {}
        exhausted: str | None = None
        now = self.clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                for b in buckets:
                    used = await self.store.usage(group, b.key, b.window_s, now)
                    remaining[b.quota] = b.limit - used
                    if exhausted is None and used + b.amount > b.limit:
                        exhausted = b.quota
        except (DependencyError, TimeoutError, OSError) as exc:
            self._store_failed(ctx, exc)
            return
        result = ConsumeResult(exhausted is None, remaining, None, exhausted)
        if exhausted is not None:
            self._exhausted(ctx, buckets, plan.units, result)
            return
        main = _tightest(buckets, result)
        ctx.quota = QuotaState(
            name=main.quota,
            consumed=0.0,
            remaining=remaining[main.quota],
            limit=main.limit,
            window_s=main.window_s,
        )

    def _plan(
        self,
        ctx: RequestContext,
        decision: Decision,
        group: str,
        principal: Principal | None,
        own: OwnershipProfile | None,
        compute: ComputeRequest | None,
    ) -> _Plan:
        """The request's buckets, from ``_plans`` when the same inputs were planned before.

        What decides them: the decision's quotas and licence budget, the ownership group, the
        principal's tenant and entity (``per``) and the compute amounts. Requests repeat these
        (one tenant, the same few job shapes), and building the buckets, their keys and metric
        children again costs more than the lookup. Bounded like the other caches
        (``gatekeeper.memo``; long ids are not kept); the plans belong to this stage, so a reload
        starts afresh.
        """
        lic = _budget(decision.license, own)
        tenant = principal.tenant if principal is not None else None
        entity = principal.entity if principal is not None else None
        amounts = _charged(compute, ctx.prior)
        key = (decision.quotas, lic, group, tenant, entity, amounts)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._build_plan(ctx, group, lic, amounts)
            size = len(group) + len(tenant or "") + len(entity or "") + len(lic[0] if lic else "")
            remember(self._plans, key, plan, size, _PLAN_KEY_TEXT)
        return plan

    def _build_plan(
        self,
        ctx: RequestContext,
        group: str,
        lic: tuple[str, float] | None,
        amounts: tuple[float, float] | None,
    ) -> _Plan:
        decision = ctx.decision
        buckets: list[Bucket] = []
        units: dict[str, str] = {}
        for qname in decision.quotas:
            qdef = self.quotas.get(qname)
            if qdef is None:
                # A policy naming an undeclared quota is a load-time bug; refuse rather than
                # forward unmetered.
                raise DependencyError("quota-undefined", f"quota {qname!r} is not declared")
            amount = _amount(qdef.unit, amounts)
            if amount is None:
                continue  # an hours budget says nothing about a request without compute
            buckets.append(
                Bucket(
                    quota=qname,
                    key=bucket_key(qname, qdef.per, ident_of(ctx, qdef.per, group)),
                    amount=amount,
                    limit=qdef.limit,
                    window_s=qdef.window_s,
                )
            )
            units[qname] = qdef.unit
        if lic is not None and amounts is not None:
            lic_id, limit = lic
            amount = _checked(amounts[0])
            name = license_quota_name(lic_id)
            buckets.append(
                Bucket(
                    quota=name,
                    key=bucket_key(LICENSE_QUOTA, LICENSE_QUOTA, lic_id),
                    amount=amount,
                    limit=limit,
                    window_s=LICENSE_WINDOW_S,
                )
            )
            units[name] = "tpp_hours"
        consumed = tuple(
            (metrics.buffered(metrics.QUOTA_CONSUMED, _label(b.quota), units[b.quota]), b.amount)
            for b in buckets
        )
        return _Plan(tuple(buckets), units, consumed)

    def _exhausted(
        self,
        ctx: RequestContext,
        buckets: Sequence[Bucket],
        units: dict[str, str],
        result: ConsumeResult,
    ) -> None:
        name = result.exhausted or buckets[0].quota
        bucket = next(b for b in buckets if b.quota == name)
        retry = result.retry_after_s or bucket.window_s
        is_license = name.startswith("license:")
        reason = R_LICENSE_EXHAUSTED if is_license else R_QUOTA_EXHAUSTED
        if not ctx.request.explain:
            metrics.QUOTA_REJECTED.labels(_label(name)).inc()
        remaining = max(0.0, result.remaining.get(name, 0.0))
        ctx.quota = QuotaState(
            name=name,
            consumed=0.0,
            remaining=remaining,
            limit=bucket.limit,
            window_s=bucket.window_s,
            retry_after_s=retry,
        )
        decision = ctx.decision
        if not decision.enforced:
            # Monitor mode: record what enforce would do, consume nothing, let it through.
            if reason not in decision.reasons:
                decision.reasons.append(reason)
            return
        unit = units[name]
        if is_license:
            detail = (
                f"licence {name[8:]} has {remaining:g} of {bucket.limit:g} tpp_hours left; "
                f"this request needs {bucket.amount:g}"
            )
            raise Deny(reason, 451, detail, rule=decision.rule)
        detail = (
            f"quota {name} has {remaining:g} of {bucket.limit:g} {unit} left in its "
            f"{bucket.window_s}s window; this request needs {bucket.amount:g}; "
            f"retry after {retry}s"
        )
        raise Deny(reason, 429, detail, rule=decision.rule, headers={"Retry-After": str(retry)})

    def _store_failed(self, ctx: RequestContext, exc: BaseException) -> None:
        explain = ctx.request.explain
        if not explain:
            metrics.STORE_ERRORS.inc()
        detail = getattr(exc, "detail", "") or f"quota store: {type(exc).__name__}"
        error = detail if explain else None
        # Monitor mode never blocks on its own account: it forwards what enforce would block.
        if self.on_store_error == "deny" and ctx.decision.enforced:
            if explain:
                ctx.quota = QuotaState(error=error)
            raise DependencyError(R_STORE_UNAVAILABLE, detail) from exc
        if not explain:
            metrics.FAIL_OPEN.inc()
        ctx.quota = QuotaState(fail_open=True, error=error)
        if R_STORE_UNAVAILABLE not in ctx.decision.reasons:
            ctx.decision.reasons.append(R_STORE_UNAVAILABLE)

    # ---------------------------------------------------------------------------- refund

    async def refund(self, ctx: RequestContext) -> None:
        """Give the reservation back, at most once per request (safe to call repeatedly)."""
        state = ctx.maybe("quota")
        if state is None or state.reservation is None or state.refunded:
            return
        # Mark first: a concurrent or repeated call must not refund twice even while we await.
        state.refunded = True
        reservation = state.reservation
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.store.refund(reservation)
        except (DependencyError, TimeoutError, OSError) as exc:
            metrics.STORE_ERRORS.inc()
            raise DependencyError(R_STORE_UNAVAILABLE, f"quota refund failed: {exc}") from exc
        for it in reservation.items:
            metrics.QUOTA_REFUNDED.labels(_label(it.quota), self._unit(it.quota)).inc(it.amount)

    def _unit(self, quota: str) -> str:
        if quota.startswith("license:"):
            return "tpp_hours"
        q = self.quotas.get(quota)
        return q.unit if q is not None else "unknown"  # quota dropped by a reload meanwhile

    # -------------------------------------------------------------------------- describe

    async def describe(
        self, per: str, ident: str, *, group: str | None = None, license_limit: float | None = None
    ) -> dict[str, Any]:
        """Usage of every quota kept ``per`` this id (admin ``/v1/quotas/{per}/{id}``).

        ``group`` is the id's ownership group (its ultimate parent); it defaults to ``ident``,
        which is right for ``ultimate_parent`` and for entities without a parent. Callers that can
        resolve a tenant or entity to its ultimate parent should pass it.
        """
        g = ident if group is None else group
        now = self.clock()
        out: list[dict[str, Any]] = []
        if per == LICENSE_QUOTA:
            used = await self.store.usage(
                g, bucket_key(LICENSE_QUOTA, LICENSE_QUOTA, ident), LICENSE_WINDOW_S, now
            )
            out.append(
                _usage_row(
                    license_quota_name(ident), "tpp_hours", used, license_limit, LICENSE_WINDOW_S
                )
            )
        for q in sorted(self.quotas.values(), key=lambda q: q.name):
            if q.per != per:
                continue
            used = await self.store.usage(g, bucket_key(q.name, per, ident), q.window_s, now)
            out.append(_usage_row(q.name, q.unit, used, q.limit, q.window_s))
        return {"per": per, "id": ident, "group": g, "quotas": out}


# ------------------------------------------------------------------------------ helpers


def group_of(ctx: RequestContext) -> str:
    """The ownership group: ultimate parent, else the entity, else the tenant ("" if none)."""
    return _group(ctx.maybe("principal"), ctx.maybe("ownership"))


def _group(principal: Principal | None, own: OwnershipProfile | None) -> str:
    if own is not None and own.ultimate_parent:
        return str(own.ultimate_parent)
    if own is not None and own.known and own.id:
        return str(own.id)
    if principal is not None and principal.entity:
        return str(principal.entity)
    if principal is not None and principal.tenant:
        return str(principal.tenant)
    return ""


def ident_of(ctx: RequestContext, per: str, group: str | None = None) -> str | None:
    """The id a ``per`` bucket is kept for; None (the group's shared ``*`` bucket) if unknown.

    ``group`` is ``group_of(ctx)`` when the caller has it already.
    """
    if per == "ultimate_parent":
        return (group_of(ctx) if group is None else group) or None
    principal = ctx.maybe("principal")
    if per == "tenant":
        return principal.tenant if principal is not None else None
    if per == "entity":
        return principal.entity if principal is not None else None
    raise DependencyError("quota-undefined", f"unknown quota dimension per={per!r}")


def charged(ctx: RequestContext) -> tuple[float, float] | None:
    """(tpp_hours, gpu_hours) the request draws; ``None`` without compute.

    The measured amounts, or with ``ctx.prior`` (the stored object a write replaces) only their
    increase over it, per unit: an edit that grows nothing draws nothing."""
    return _charged(ctx.maybe("compute"), ctx.prior)


def _charged(
    compute: ComputeRequest | None, prior: ComputeRequest | None
) -> tuple[float, float] | None:
    if compute is None:
        return None
    if prior is None:
        return compute.tpp_hours, compute.gpu_hours
    return (
        _increase(compute.tpp_hours, prior.tpp_hours),
        _increase(compute.gpu_hours, prior.gpu_hours),
    )


def _increase(new: float, old: float) -> float:
    # SECURITY: an amount that is no finite, non-negative number stays as it is, for _checked to
    # refuse (max(0.0, nan) would be 0.0); an old one that is none credits nothing.
    good = (math.isfinite(v) and v >= 0 for v in (new, old))
    return max(0.0, new - old) if all(good) else new


def _amount(unit: str, amounts: tuple[float, float] | None) -> float | None:
    if unit == "requests":
        return 1.0
    if amounts is None:
        return None
    if unit == "tpp_hours":
        return _checked(amounts[0])
    if unit == "gpu_hours":
        return _checked(amounts[1])
    raise DependencyError("quota-undefined", f"unknown quota unit {unit!r}")


def _checked(amount: float) -> float:
    # SECURITY: a negative or NaN amount would credit the budget or poison the counter.
    if not (isinstance(amount, (int, float)) and math.isfinite(amount) and amount >= 0):
        raise BadRequest("bad-body", "requested compute is not a finite, non-negative amount")
    return float(amount)


def _budget(lic_id: str | None, own: OwnershipProfile | None) -> tuple[str, float] | None:
    """(licence id, its ``max_tpp_hours``) when the decision rests on a licence with a budget."""
    if not lic_id or own is None:
        return None
    for lic in own.licenses:
        if lic.id == lic_id and lic.max_tpp_hours is not None:
            return lic.id, float(lic.max_tpp_hours)
    return None


def _tightest(buckets: Sequence[Bucket], result: ConsumeResult) -> Bucket:
    """The bucket closest to exhaustion: the one the audit record and decision report."""

    def left(b: Bucket) -> float:
        return result.remaining[b.quota] / b.limit if b.limit > 0 else 0.0

    return min(buckets, key=left)


def _label(quota: str) -> str:
    return LICENSE_QUOTA if quota.startswith("license:") else quota


def _usage_row(
    name: str, unit: str, used: float, limit: float | None, window_s: int
) -> dict[str, Any]:
    return {
        "name": name,
        "unit": unit,
        "used": used,
        "limit": limit,
        "remaining": None if limit is None else max(0.0, limit - used),
        "window_s": window_s,
    }
