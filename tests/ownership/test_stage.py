"""The ownership stage: entity claim first, tenant as fallback, unknown entities are not denied."""

from __future__ import annotations

from pathlib import Path

from gatekeeper.context import Principal, RequestContext, RequestInfo
from gatekeeper.stages.ownership import OwnershipStage

from .helpers import ent, native


def _ctx(principal: Principal) -> RequestContext:
    ctx = RequestContext(
        decision_id="d1",
        request=RequestInfo(route="r", method="POST", path="/", client_ip="127.0.0.1"),
        headers={},
    )
    ctx.principal = principal
    return ctx


async def test_stage(tmp_path: Path) -> None:
    reg = native(
        tmp_path, [ent("x", flags=["sdn"]), ent("acme", ("x", 50)), ent("tenant-co", country="US")]
    )
    stage = OwnershipStage(reg)
    assert stage.name == "ownership"

    ctx = _ctx(Principal(subject="s", issuer="i", tenant="tenant-co", entity="acme"))
    stage.run(ctx)
    assert ctx.ownership.id == "acme" and ctx.ownership.affiliated

    ctx = _ctx(Principal(subject="s", issuer="i", tenant="tenant-co"))
    stage.run(ctx)
    assert ctx.ownership.id == "tenant-co" and ctx.ownership.country == "US"

    ctx = _ctx(Principal(subject="s", issuer="i", entity="ghost"))
    stage.run(ctx)  # does not raise: the unknown-entity rule decides
    assert ctx.ownership.id == "ghost" and not ctx.ownership.known

    ctx = _ctx(Principal(subject="s", issuer="i"))
    stage.run(ctx)
    assert not ctx.ownership.known
