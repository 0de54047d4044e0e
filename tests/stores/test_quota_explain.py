"""The quota stage explaining a request (``RequestInfo.explain``): it reads, takes nothing, counts
nothing in the live metrics, and names a store failure."""

from __future__ import annotations

import dataclasses

import pytest

from gatekeeper import metrics
from gatekeeper.context import License, RequestContext
from gatekeeper.errors import Deny, DependencyError
from gatekeeper.stages.quota import LICENSE_WINDOW_S, QuotaStage
from gatekeeper.stores.quota import QuotaStore, bucket_key
from tests.stores.conftest import counter
from tests.stores.test_quota_stage import (
    QUOTAS,
    T0,
    UNHURRIED_S,
    Clock,
    dead_store,
    make_ctx,
)

MONTH = 30 * 86400


def explained(ctx: RequestContext) -> RequestContext:
    ctx.request = dataclasses.replace(ctx.request, explain=True)
    return ctx


async def used(store: QuotaStore, group: str) -> float:
    key = bucket_key("foreign-monthly", "ultimate_parent", group)
    return await store.usage(group, key, MONTH, T0)


async def test_explain_under_the_cap_takes_nothing(any_store: QuotaStore, group: str) -> None:
    stage = QuotaStage(any_store, QUOTAS, clock=Clock(), timeout_s=UNHURRIED_S)
    await stage.run(make_ctx(parent=group, tpp_hours=30.0))
    ctx = explained(make_ctx(parent=group, tpp_hours=50.0))
    await stage.run(ctx)
    q = ctx.quota
    assert (q.name, q.consumed, q.remaining, q.limit) == ("foreign-monthly", 0.0, 70.0, 100.0)
    assert q.reservation is None and q.error is None
    assert await used(any_store, group) == 30.0


async def test_explain_at_the_cap_refuses_and_counts_nothing(
    any_store: QuotaStore, group: str
) -> None:
    stage = QuotaStage(any_store, QUOTAS, clock=Clock(), timeout_s=UNHURRIED_S)
    await stage.run(make_ctx(parent=group, tpp_hours=90.0))
    rejected = counter(metrics.QUOTA_REJECTED, "foreign-monthly")
    ctx = explained(make_ctx(parent=group, tpp_hours=20.0))
    with pytest.raises(Deny) as e:
        await stage.run(ctx)
    assert (e.value.reason, e.value.status) == ("quota-exhausted", 429)
    assert "10 of 100" in e.value.detail and ctx.quota.remaining == 10.0
    assert counter(metrics.QUOTA_REJECTED, "foreign-monthly") == rejected
    assert await used(any_store, group) == 90.0
    # The same request live is refused and counted: the metric is the one explain leaves alone.
    with pytest.raises(Deny):
        await stage.run(make_ctx(parent=group, tpp_hours=20.0))
    assert counter(metrics.QUOTA_REJECTED, "foreign-monthly") == rejected + 1


async def test_explain_of_a_spent_licence_is_451(any_store: QuotaStore, group: str) -> None:
    lic = License("D1234567", ("3A090.a",), ("SG",), "2027-06-30", 100.0)
    stage = QuotaStage(any_store, {}, clock=Clock(), timeout_s=UNHURRIED_S)

    def ctx_for(tpp: float) -> RequestContext:
        return make_ctx(parent=group, quotas=(), tpp_hours=tpp, license="D1234567", licenses=(lic,))

    await stage.run(ctx_for(70.0))
    rejected = counter(metrics.QUOTA_REJECTED, "license")
    with pytest.raises(Deny) as e:
        await stage.run(explained(ctx_for(40.0)))
    assert (e.value.reason, e.value.status) == ("license-exhausted", 451)
    assert counter(metrics.QUOTA_REJECTED, "license") == rejected
    key = bucket_key("license", "license", "D1234567")
    assert await any_store.usage(group, key, LICENSE_WINDOW_S, T0) == 70.0


async def test_explain_names_a_dead_store_and_counts_nothing(group: str) -> None:
    store = dead_store()
    errors, opened = counter(metrics.STORE_ERRORS), counter(metrics.FAIL_OPEN)
    try:
        ctx = explained(make_ctx(parent=group))
        with pytest.raises(DependencyError) as e:
            await QuotaStage(store, QUOTAS, timeout_s=0.5).run(ctx)
        assert (e.value.reason, e.value.status) == ("store-unavailable", 503)
        assert ctx.quota.error and not ctx.quota.fail_open
        assert ctx.quota.to_json()["error"] == ctx.quota.error
        ctx = explained(make_ctx(parent=group))
        await QuotaStage(store, QUOTAS, on_store_error="allow", timeout_s=0.5).run(ctx)
        assert ctx.quota.fail_open and ctx.quota.error
        assert "store-unavailable" in ctx.decision.reasons
        assert (counter(metrics.STORE_ERRORS), counter(metrics.FAIL_OPEN)) == (errors, opened)
    finally:
        await store.close()
