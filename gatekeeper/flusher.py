"""When the proxy's buffered metric updates reach the shared metrics (``metrics.flush``).

Per-request updates go to in-process buffers (``metrics.buffered``); with ``workers > 1`` each
direct update would write a shared mmap file. A ``Flusher`` decides when they move: every
``FLUSH_EVERY_S`` under load, and when the handler goes idle, at most once per ``IDLE_FLUSH_S``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from .metrics import flush

FLUSH_EVERY_S = 0.5
# When the gate goes idle it flushes at most once per this long (``Flusher.idle``).
IDLE_FLUSH_S = 0.05


class Flusher:
    """When the buffered updates reach the shared metrics, for one request handler.

    Every ``FLUSH_EVERY_S`` while requests keep coming (``busy()`` arms the timer), and when the
    handler goes idle (``idle()``) — at most once per ``IDLE_FLUSH_S``, a timer taking an idle
    moment that comes sooner. At a few hundred requests a second the gate idles after almost every
    request, and a flush each time cost a dozen histogram and counter flushes per request; so a
    scrape of another worker's metrics is at most ``IDLE_FLUSH_S`` behind once the gate is idle
    (the scraped process flushes its own in ``render()``). ``before_flush`` runs first (the
    in-flight gauge).
    """

    def __init__(
        self,
        before_flush: Callable[[], None],
        *,
        every_s: float = FLUSH_EVERY_S,
        idle_every_s: float = IDLE_FLUSH_S,
    ) -> None:
        self.before_flush = before_flush
        self.every_s = every_s
        self.idle_every_s = idle_every_s
        self.flushes = 0
        self._periodic: asyncio.TimerHandle | None = None
        self._deferred: asyncio.TimerHandle | None = None
        self._flushed_at = -math.inf

    def busy(self) -> None:
        """A request started: make sure the periodic flush is running."""
        if self._periodic is None:
            self._periodic = asyncio.get_running_loop().call_later(self.every_s, self._tick)

    def idle(self) -> None:
        """No request in flight: flush now, or once ``idle_every_s`` after the last flush."""
        if self._deferred is not None:
            return
        wait = self._flushed_at + self.idle_every_s - time.monotonic()
        if wait <= 0:
            self.flush()
        else:
            self._deferred = asyncio.get_running_loop().call_later(wait, self._deferred_flush)

    def flush(self) -> None:
        self.before_flush()
        flush()
        self.flushes += 1
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        """Stop the timers and flush what is left."""
        for timer in (self._periodic, self._deferred):
            if timer is not None:
                timer.cancel()
        self._periodic = self._deferred = None
        self.flush()

    def _tick(self) -> None:
        self.flush()
        self._periodic = asyncio.get_running_loop().call_later(self.every_s, self._tick)

    def _deferred_flush(self) -> None:
        self._deferred = None
        self.flush()
