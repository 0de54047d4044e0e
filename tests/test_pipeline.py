"""The pipeline runs plain and ``async`` stages in order, times each, and stops at the first raise."""

from __future__ import annotations

import asyncio

import pytest

from gatekeeper.context import RequestContext, RequestInfo
from gatekeeper.errors import Deny
from gatekeeper.pipeline import Pipeline


def new_ctx() -> RequestContext:
    return RequestContext(
        decision_id="d1",
        request=RequestInfo("r", "POST", "/p", "203.0.113.7"),
        headers={},
    )


class Plain:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def run(self, ctx: RequestContext) -> None:
        self.log.append(self.name)
        if self.fail:
            raise Deny("no", 403, "refused by " + self.name)


class Waits:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def run(self, ctx: RequestContext) -> None:
        await asyncio.sleep(0.01)  # really suspends
        self.log.append(self.name)


async def test_plain_and_async_stages_run_in_order_and_are_timed() -> None:
    log: list[str] = []
    pipeline = Pipeline([Plain("a", log), Waits("b", log), Plain("c", log), Waits("d", log)])
    ctx = new_ctx()
    await pipeline.run(ctx)
    assert log == ["a", "b", "c", "d"]
    assert list(ctx.stage_times) == ["a", "b", "c", "d"]
    assert ctx.stage_times["b"] >= 0.009 and ctx.stage_times["d"] >= 0.009
    assert ctx.stage_times["a"] >= 0 and ctx.stage_times["c"] >= 0


async def test_a_plain_stage_that_raises_stops_the_pipeline_and_is_timed() -> None:
    log: list[str] = []
    pipeline = Pipeline([Waits("a", log), Plain("b", log, fail=True), Waits("c", log)])
    ctx = new_ctx()
    with pytest.raises(Deny, match="refused by b"):
        await pipeline.run(ctx)
    assert log == ["a", "b"]
    assert list(ctx.stage_times) == ["a", "b"]
