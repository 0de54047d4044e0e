"""A deadline that moves on every request without a timer per move.

A kept-alive connection moves its deadline several times per request (the header deadline at the
first byte, cleared at the complete head, the idle deadline after the answer; the upstream's read
deadline around each exchange). Cancelling and arming an event-loop timer for each move, or an
``asyncio.timeout`` around each wait, costs far more than writing a number, several times per
request: a measurable share of a loaded gate's CPU. Here a move only writes ``when``; the
one timer per connection stays armed and, when it fires, either expires the deadline or re-arms
for it. The timer is never armed further ahead than ``tick``, and every delay is at least
``tick``, so a pending timer always fires no later than the current deadline: expiry is as exact
as a fresh timer per move would make it, at the cost of one timer per ``tick`` per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LazyDeadline:
    """One connection's deadline: ``set`` and ``clear`` are cheap; ``on_expiry`` runs once at it.

    Every ``delay`` given to ``set`` must be at least ``tick`` (the shortest timeout in use).
    """

    __slots__ = ("_loop", "_on_expiry", "_tick", "_timer", "when")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, tick: float, on_expiry: Callable[[], None]
    ) -> None:
        self._loop = loop
        self._tick = tick
        self._on_expiry = on_expiry
        self._timer: asyncio.TimerHandle | None = None
        self.when: float | None = None  # loop time of the deadline; None when none runs

    def set(self, delay: float) -> None:
        """The deadline is now ``delay`` seconds from now (replacing any earlier one)."""
        now = self._loop.time()
        self.when = now + delay
        if self._timer is None:
            self._timer = self._loop.call_at(now + min(delay, self._tick), self._fire)

    def clear(self) -> None:
        """No deadline runs (the armed timer, if any, finds nothing to do and lapses)."""
        self.when = None

    def close(self) -> None:
        """No deadline, and no timer left behind (the connection is gone)."""
        self.when = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        when = self.when
        if when is None:
            return
        now = self._loop.time()
        if now >= when:
            self.when = None
            self._on_expiry()
        else:
            self._timer = self._loop.call_at(min(when, now + self._tick), self._fire)
