"""The decision pipeline: a literal tuple of stages run in order, each timed.

A stage sets one fact on the ``RequestContext`` or raises ``Deny`` / ``DependencyError``; the
pipeline stops at the first raise. The order is the tuple built by ``Runtime._pipelines`` in
``runtime.py`` — read it there, there are no self-registering plugins.

A stage that never waits (ownership, geo, compute, policy, enforce) has a plain ``run``; one that
may (authn, quota) has an ``async`` one, and the pipeline awaits whatever ``run`` returns. A
coroutine per stage that never suspends cost its creation, a frame and a ``send`` for nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import Protocol

from .context import RequestContext


class Stage(Protocol):
    """One step of the pipeline; dependencies come in the constructor, request data in ``run``
    (a plain method, or ``async`` when the stage may wait: its awaitable is awaited)."""

    name: str

    def run(self, ctx: RequestContext) -> Awaitable[None] | None: ...


class Pipeline:
    """Runs stages in order and records how long each took in ``ctx.stage_times``."""

    __slots__ = ("stages",)

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)

    async def run(self, ctx: RequestContext) -> None:
        clock = time.perf_counter
        times = ctx.stage_times
        for stage in self.stages:
            t0 = clock()
            try:  # no helper coroutine per stage: awaiting one would cost a frame each
                pending = stage.run(ctx)
                if pending is not None:
                    await pending
            finally:
                times[stage.name] = clock() - t0
