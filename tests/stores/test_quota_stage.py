"""The quota stage on real stores: what it consumes, how it refuses, fails and refunds."""

from __future__ import annotations

import asyncio

import pytest

from gatekeeper import metrics
from gatekeeper.context import (
    ComputeRequest,
    Decision,
    License,
    OwnershipProfile,
    Principal,
    QuotaDef,
    RequestContext,
    RequestInfo,
)
from gatekeeper.errors import BadRequest, Deny, DependencyError
from gatekeeper.stages.quota import LICENSE_WINDOW_S, QuotaStage
from gatekeeper.stores.quota import QuotaStore, bucket_key
from gatekeeper.stores.redis import RedisQuotaStore
from tests.stores.conftest import counter, make_store, store_url
from tests.stores.race import fire
from tests.support import LoopLag, free_port

T0 = 1_700_000_000.0
# The stage's timeout where it is not what a test is about: a call on a busy machine (60 racing
# on a Redis cluster) can take longer than the 0.5 s default, and must not fail the test.
UNHURRIED_S = 10.0
QUOTAS = {
    "foreign-monthly": QuotaDef(
        "foreign-monthly", "tpp_hours", 100.0, 30 * 86400, "ultimate_parent"
    ),
    "tenant-daily": QuotaDef("tenant-daily", "gpu_hours", 50.0, 86400, "tenant"),
    "entity-requests": QuotaDef("entity-requests", "requests", 3.0, 3600, "entity"),
}


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_ctx(
    *,
    entity: str = "acme-sg",
    tenant: str | None = None,
    parent: str | None = "acme-group",
    quotas: tuple[str, ...] = ("foreign-monthly",),
    tpp_hours: float | None = 40.0,
    gpu_hours: float = 10.0,
    action: str = "allow",
    enforced: bool = True,
    license: str | None = None,
    licenses: tuple[License, ...] = (),
) -> RequestContext:
    ctx = RequestContext(
        decision_id="d-1",
        request=RequestInfo(route="slurm-submit", method="POST", path="/x", client_ip="192.0.2.1"),
        headers={},
    )
    ctx.principal = Principal(subject="u", issuer="i", tenant=tenant or entity, entity=entity)
    ctx.ownership = OwnershipProfile(
        id=entity, known=True, ultimate_parent=parent, licenses=licenses
    )
    if tpp_hours is not None:
        ctx.compute = ComputeRequest(
            gpu_model="H100-SXM", gpus=8, hours=1.25, gpu_hours=gpu_hours, tpp=1.0,
            tpp_hours=tpp_hours, eccn="3A090.a", controlled=True,
        )  # fmt: skip
    ctx.decision = Decision(
        action=action, rule="foreign-tenant", reasons=["foreign-tenant"], enforced=enforced,
        license=license, quotas=quotas,
    )  # fmt: skip
    return ctx


async def test_allow_consumes_and_reports(any_store: QuotaStore, group: str) -> None:
    stage = QuotaStage(any_store, QUOTAS, clock=Clock(), timeout_s=UNHURRIED_S)
    metrics.flush()
    before = counter(metrics.QUOTA_CONSUMED, "foreign-monthly", "tpp_hours")
    ctx = make_ctx(parent=group, quotas=("foreign-monthly", "tenant-daily", "entity-requests"))
    await stage.run(ctx)
    q = ctx.quota
    assert q.reservation is not None and not q.fail_open and not q.refunded
    # the tightest of the three buckets is the one reported: requests 1 of 3 (2/3 left) vs
    # tpp 40 of 100 (0.6 left) vs gpu 10 of 50 (0.8 left)
    assert (q.name, q.consumed, q.remaining, q.limit, q.window_s) == (
        "foreign-monthly", 40.0, 60.0, 100.0, 30 * 86400,
    )  # fmt: skip
    metrics.flush()  # buffered until the gate is idle or /metrics is read
    assert counter(metrics.QUOTA_CONSUMED, "foreign-monthly", "tpp_hours") == before + 40.0
    usage = await any_store.usage(group, bucket_key("tenant-daily", "tenant", "acme-sg"), 86400, T0)
    assert usage == 10.0


@pytest.mark.parametrize(
    ("action", "quotas", "tpp"),
    [("deny", ("foreign-monthly",), 40.0), ("require_license", ("foreign-monthly",), 40.0),
     ("allow", (), 40.0), ("allow", ("foreign-monthly",), None)],
)  # fmt: skip
async def test_nothing_to_consume(
    action: str, quotas: tuple[str, ...], tpp: float | None, group: str
) -> None:
    stage = QuotaStage(make_store("memory", None), QUOTAS, clock=Clock())
    ctx = make_ctx(parent=group, action=action, quotas=quotas, tpp_hours=tpp)
    await stage.run(ctx)
    assert not ctx.has("quota")


async def test_no_compute_still_counts_requests(group: str) -> None:
    stage = QuotaStage(make_store("memory", None), QUOTAS, clock=Clock())
    for _ in range(3):
        ctx = make_ctx(parent=group, quotas=("foreign-monthly", "entity-requests"), tpp_hours=None)
        await stage.run(ctx)
        assert ctx.quota.name == "entity-requests"
    with pytest.raises(Deny) as e:
        await stage.run(
            make_ctx(parent=group, quotas=("foreign-monthly", "entity-requests"), tpp_hours=None)
        )
    assert e.value.status == 429


async def test_exhausted_is_429_with_retry_after(any_store: QuotaStore, group: str) -> None:
    clock = Clock()
    stage = QuotaStage(any_store, QUOTAS, clock=clock, timeout_s=UNHURRIED_S)
    rejected = counter(metrics.QUOTA_REJECTED, "foreign-monthly")
    await stage.run(make_ctx(parent=group, tpp_hours=60.0))
    clock.t += 86400  # one day later; the 30-day window still holds 60
    ctx = make_ctx(parent=group, tpp_hours=50.0)
    with pytest.raises(Deny) as e:
        await stage.run(ctx)
    exc = e.value
    assert (exc.reason, exc.status, exc.rule) == ("quota-exhausted", 429, "foreign-tenant")
    retry = int(exc.headers["Retry-After"])
    assert 29 * 86400 <= retry <= 30 * 86400 * (1 + 1 / 60)
    assert "foreign-monthly" in exc.detail and "40 of 100" in exc.detail
    assert ctx.quota.retry_after_s == retry and ctx.quota.consumed == 0.0
    assert ctx.quota.remaining == 40.0 and ctx.quota.reservation is None
    assert counter(metrics.QUOTA_REJECTED, "foreign-monthly") == rejected + 1
    # a request that fits still passes
    await stage.run(make_ctx(parent=group, tpp_hours=40.0))


async def test_monitor_mode_records_but_lets_through(any_store: QuotaStore, group: str) -> None:
    stage = QuotaStage(any_store, QUOTAS, clock=Clock(), timeout_s=UNHURRIED_S)
    await stage.run(make_ctx(parent=group, tpp_hours=90.0))
    ctx = make_ctx(parent=group, tpp_hours=50.0, enforced=False)
    await stage.run(ctx)  # no raise
    assert "quota-exhausted" in ctx.decision.reasons
    assert ctx.quota.name == "foreign-monthly" and ctx.quota.reservation is None
    assert ctx.quota.retry_after_s is not None
    key = bucket_key("foreign-monthly", "ultimate_parent", group)
    assert await any_store.usage(group, key, 30 * 86400, T0) == 90.0  # nothing consumed


async def test_licence_budget_is_451_when_spent(any_store: QuotaStore, group: str) -> None:
    lic = License("D1234567", ("3A090.a",), ("SG",), "2027-06-30", 100.0)
    stage = QuotaStage(any_store, {}, clock=Clock(), timeout_s=UNHURRIED_S)

    def ctx_for(tpp: float) -> RequestContext:
        return make_ctx(parent=group, quotas=(), tpp_hours=tpp, license="D1234567", licenses=(lic,))

    ok = ctx_for(70.0)
    await stage.run(ok)
    assert ok.quota.name == "license:D1234567" and ok.quota.window_s == LICENSE_WINDOW_S
    with pytest.raises(Deny) as e:
        await stage.run(ctx_for(40.0))
    assert (e.value.reason, e.value.status) == ("license-exhausted", 451)
    assert "Retry-After" not in e.value.headers
    # a licence without max_tpp_hours is not metered
    unmetered = License("D9", ("3A090.a",), ("SG",), None, None)
    ctx = make_ctx(parent=group, quotas=(), tpp_hours=1e9, license="D9", licenses=(unmetered,))
    await stage.run(ctx)
    assert not ctx.has("quota")


async def test_licence_and_quota_are_all_or_none(group: str) -> None:
    store = make_store("memory", None)
    lic = License("L1", (), (), None, 1000.0)
    stage = QuotaStage(store, QUOTAS, clock=Clock())
    await stage.run(make_ctx(parent=group, tpp_hours=90.0, license="L1", licenses=(lic,)))
    with pytest.raises(Deny) as e:  # quota has 10 left: licence must not be charged either
        await stage.run(make_ctx(parent=group, tpp_hours=20.0, license="L1", licenses=(lic,)))
    assert e.value.reason == "quota-exhausted"
    lic_key = bucket_key("license", "license", "L1")
    assert await store.usage(group, lic_key, LICENSE_WINDOW_S, T0) == 90.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -5.0])
async def test_hostile_amounts_are_refused(bad: float, group: str) -> None:
    stage = QuotaStage(make_store("memory", None), QUOTAS, clock=Clock())
    with pytest.raises(BadRequest):
        await stage.run(make_ctx(parent=group, tpp_hours=bad))


async def test_undeclared_quota_fails_closed(group: str) -> None:
    stage = QuotaStage(make_store("memory", None), QUOTAS, clock=Clock())
    with pytest.raises(DependencyError):
        await stage.run(make_ctx(parent=group, quotas=("nope",)))


def dead_store() -> RedisQuotaStore:
    return RedisQuotaStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)


async def test_store_down_denies_by_default(group: str) -> None:
    store = dead_store()
    errors = counter(metrics.STORE_ERRORS)
    try:
        stage = QuotaStage(store, QUOTAS, timeout_s=0.5)
        with pytest.raises(DependencyError) as e:
            await stage.run(make_ctx(parent=group))
        assert (e.value.reason, e.value.status) == ("store-unavailable", 503)
        assert counter(metrics.STORE_ERRORS) == errors + 1
    finally:
        await store.close()


async def test_store_down_fail_open_is_counted(group: str) -> None:
    store = dead_store()
    opened = counter(metrics.FAIL_OPEN)
    try:
        stage = QuotaStage(store, QUOTAS, on_store_error="allow", timeout_s=0.5)
        ctx = make_ctx(parent=group)
        await stage.run(ctx)
        assert ctx.quota.fail_open and ctx.quota.reservation is None
        assert "store-unavailable" in ctx.decision.reasons
        assert counter(metrics.FAIL_OPEN) == opened + 1
        await stage.refund(ctx)  # nothing reserved: a no-op, not an error
    finally:
        await store.close()


async def test_stage_timeout_bounds_a_slow_store(group: str) -> None:
    class Slow:
        async def consume(self, *a: object) -> None:
            await asyncio.sleep(10)

    stage = QuotaStage(Slow(), QUOTAS, timeout_s=0.05)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    async with LoopLag() as lag:  # a stalled loop fires the timeout late: not the stage's doing
        t0 = loop.time()
        with pytest.raises(DependencyError):
            await stage.run(make_ctx(parent=group))
        took = loop.time() - t0
    assert took < 0.5 + lag.worst


async def test_refund_exactly_once(any_store: QuotaStore, group: str) -> None:
    stage = QuotaStage(any_store, QUOTAS, clock=Clock(), timeout_s=UNHURRIED_S)
    refunded = counter(metrics.QUOTA_REFUNDED, "foreign-monthly", "tpp_hours")
    await stage.run(make_ctx(parent=group, tpp_hours=30.0))  # stays consumed
    ctx = make_ctx(parent=group, tpp_hours=40.0)
    await stage.run(ctx)
    # the edge may call refund from several paths; concurrent and repeated calls refund once
    await asyncio.gather(*(stage.refund(ctx) for _ in range(5)))
    await stage.refund(ctx)
    assert ctx.quota.refunded
    key = bucket_key("foreign-monthly", "ultimate_parent", group)
    assert await any_store.usage(group, key, 30 * 86400, T0) == 30.0
    assert counter(metrics.QUOTA_REFUNDED, "foreign-monthly", "tpp_hours") == refunded + 40.0


@pytest.mark.parametrize("kind", ["memory", "redis", "cluster", "leased"])
async def test_affiliates_cannot_split_past_the_parent(
    kind: str, request: pytest.FixtureRequest, group: str
) -> None:
    """Three affiliates of one parent, each with room in its own tenant budget, racing: together
    they get exactly the parent's 100 tpp_hours (in 10s), never more."""
    url = store_url(kind, request)
    # three clients (three gate processes' worth) on Redis; the memory store is one process's
    first = make_store(kind, url, timeout_s=UNHURRIED_S)
    stores = (
        [first] * 3
        if kind == "memory"
        else [first] + [make_store(kind, url, timeout_s=UNHURRIED_S) for _ in "ab"]
    )
    try:
        stages = [QuotaStage(s, QUOTAS, clock=Clock(), timeout_s=UNHURRIED_S) for s in stores]
        affiliates = ("acme-sg", "acme-jp", "acme-de")

        async def submit(i: int) -> bool:
            ctx = make_ctx(
                entity=affiliates[i % 3], parent=group, tpp_hours=10.0, gpu_hours=1.0,
                quotas=("foreign-monthly", "tenant-daily"),
            )  # fmt: skip
            try:
                await stages[i % 3].run(ctx)
                return True
            except Deny as exc:
                assert exc.status == 429
                return False

        results = await fire(60, submit)
        assert sum(results) == 10
        key = bucket_key("foreign-monthly", "ultimate_parent", group)
        assert await stores[0].usage(group, key, 30 * 86400, T0) == 100.0
        per_tenant = [
            await stores[0].usage(group, bucket_key("tenant-daily", "tenant", a), 86400, T0)
            for a in affiliates
        ]
        assert sum(per_tenant) == 10.0  # 1 gpu_hour per admitted request, none for refused
    finally:
        for s in set(stores):
            await s.close()


async def test_describe_for_the_admin_endpoint(any_store: QuotaStore, group: str) -> None:
    stage = QuotaStage(any_store, QUOTAS, clock=Clock(), timeout_s=UNHURRIED_S)
    await stage.run(make_ctx(parent=group, tpp_hours=25.0, quotas=("foreign-monthly",)))
    info = await stage.describe("ultimate_parent", group)
    assert info == {
        "per": "ultimate_parent", "id": group, "group": group,
        "quotas": [{"name": "foreign-monthly", "unit": "tpp_hours", "used": 25.0, "limit": 100.0,
                    "remaining": 75.0, "window_s": 30 * 86400}],
    }  # fmt: skip
    tenant = await stage.describe("tenant", "acme-sg", group=group)
    assert [(q["name"], q["used"]) for q in tenant["quotas"]] == [("tenant-daily", 0.0)]


def test_redis_store_uses_hiredis_and_bounded_timeouts(private_redis: object) -> None:
    from redis._parsers import _AsyncHiredisParser
    from redis.asyncio.connection import DefaultParser

    store = RedisQuotaStore.from_url(private_redis.url, timeout_s=0.25)  # type: ignore[attr-defined]
    kwargs = store.client.connection_pool.connection_kwargs  # type: ignore[union-attr]
    assert kwargs.get("parser_class", DefaultParser) is _AsyncHiredisParser
    assert kwargs["socket_timeout"] == 0.25 and kwargs["socket_connect_timeout"] == 0.25


def _lic(lic_id: str, max_tpp_hours: float) -> License:
    return License(lic_id, ("3A090.a",), ("SG",), None, max_tpp_hours)


# One input of the bucket plan changed at a time, against the same baseline request.
_PLAN_VARIANTS: list[dict[str, object]] = [
    {},
    {"tenant": "other-tenant"},
    {"entity": "other-entity", "tenant": "acme-sg"},  # the same tenant: only the entity differs
    {"parent": "other-group"},
    {"tpp_hours": 30.0},
    {"gpu_hours": 20.0},
    {"tpp_hours": None},
    {"quotas": ("foreign-monthly",)},
    {"quotas": ("entity-requests", "tenant-daily")},
    {"license": "LIC-1", "licenses": (_lic("LIC-1", 500.0),)},
    {"license": "LIC-1", "licenses": (_lic("LIC-1", 900.0),)},
    {"license": "LIC-2", "licenses": (_lic("LIC-2", 500.0),)},
]


@pytest.mark.parametrize("first", range(len(_PLAN_VARIANTS)))
async def test_remembered_plans_never_mix_up_requests(first: int) -> None:
    """Each variant draws what a fresh stage would draw, whatever request came before it."""

    def ctx(variant: dict[str, object]) -> RequestContext:
        base: dict[str, object] = {"quotas": ("foreign-monthly", "tenant-daily", "entity-requests")}
        return make_ctx(**{**base, **variant})  # type: ignore[arg-type]

    async def drawn(stage: QuotaStage, variant: dict[str, object]) -> object:
        c = ctx(variant)
        await stage.run(c)
        res = c.quota.reservation
        assert res is not None
        return (res.group, sorted((i.quota, i.key, i.amount) for i in res.items))

    for second in _PLAN_VARIANTS:
        fresh = await drawn(QuotaStage(make_store("memory", None), QUOTAS, clock=Clock()), second)
        stage = QuotaStage(make_store("memory", None), QUOTAS, clock=Clock())
        await drawn(stage, _PLAN_VARIANTS[first])
        assert await drawn(stage, second) == fresh, (_PLAN_VARIANTS[first], second)
    assert len(stage._plans) == 2 - (_PLAN_VARIANTS[first] == _PLAN_VARIANTS[-1])
