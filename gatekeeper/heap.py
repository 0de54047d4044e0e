"""Keep the long-lived heap out of the cyclic garbage collector's way (``gc.freeze``).

A gate holds a large, long-lived object graph: the entity registry (100k entities is about a
million objects), the compiled policy, GeoIP readers. CPython's collector walks every tracked
object on a full (generation 2) collection, and request garbage triggers one every few thousand
requests: with that graph in the heap each pause took tens of milliseconds, which is the gate's
p99 under load (bench/README.md). ``gc.freeze()`` moves everything alive at that moment into a
permanent generation the collector never scans; only what requests allocate is collected.

Frozen objects are still freed by reference counting, but a frozen *cycle* is never collected.
So after a reload the old snapshot is unfrozen with everything else, and the heap is settled
again once requests that started on it are done (``RESETTLE_AFTER_S``, past the 60 s the old
GeoIP readers are kept open). Only the server process does this; ``check``, the CLI and the tests
keep CPython's default behaviour.

The collection thresholds stay CPython's (``gc.set_threshold`` is not called): a generation-0
collection is due when allocations of tracked objects outnumber deallocations by 700, and a
request's objects are freed by reference counting as it ends, so even with many requests in
flight young collections are rare and small (``bench/instructions.py`` counts them among the
interpreter's work: a fraction of a per mille). A larger threshold saves nothing measurable
and only lets garbage cycles live longer.
"""

from __future__ import annotations

import asyncio
import gc
import logging

log = logging.getLogger("gatekeeper.heap")

RESETTLE_AFTER_S = 65.0


def settle() -> None:
    """Collect what is garbage now, then freeze everything that is left."""
    gc.collect()
    gc.freeze()
    log.debug("heap settled: %d objects frozen", gc.get_freeze_count())


class HeapKeeper:
    """Settles the heap at start and again a while after each reload."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: asyncio.TimerHandle | None = None

    def started(self) -> None:
        settle()

    def reloaded(self) -> None:
        # The old snapshot may hold cycles: let the collector see them again now, and freeze
        # what survives once in-flight requests have let go of the old snapshot.
        gc.unfreeze()
        if self._pending is not None:
            self._pending.cancel()
        self._pending = self._loop.call_later(RESETTLE_AFTER_S, self._resettle)

    def _resettle(self) -> None:
        self._pending = None
        settle()

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
