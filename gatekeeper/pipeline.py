"""The decision pipeline: a literal tuple of stages run in order, each timed.

A stage sets one fact on the ``RequestContext`` or raises ``Deny`` / ``DependencyError``; the
pipeline stops at the first raise. The order is the tuple built by ``build_stages`` in
``proxy/app.py`` and ``cli.py`` — read it there, there are no self-registering plugins.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from .context import RequestContext


class Stage(Protocol):
    """One step of the pipeline; dependencies come in the constructor, request data in ``run``."""

    name: str

    async def run(self, ctx: RequestContext) -> None: ...


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
            try:
                await stage.run(ctx)
            finally:
                times[stage.name] = clock() - t0
