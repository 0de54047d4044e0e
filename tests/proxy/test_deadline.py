"""``LazyDeadline`` on a real event loop, and the lean client's read deadline on pooled connections.

The deadline moves without re-arming its timer; these tests check that it still expires exactly
when a fresh timer per move would (not at an earlier, superseded deadline, and not late), once,
and never after ``clear`` or ``close``. The lean client's pooled connections use it as their read
deadline: a kept-alive connection whose timer was armed by an earlier exchange must still time
out the exchange in hand after ``read_timeout_s`` of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gatekeeper.proxy import lean
from gatekeeper.proxy.deadline import LazyDeadline
from tests.support import LoopLag

SLACK = 0.15  # scheduling noise allowed on a busy 2-core machine
STALLED = 0.01  # a run whose loop was this late may have seen a deadline pass early


async def on_time(scenario: Callable[[], Awaitable[None]], attempts: int = 10) -> None:
    """Run ``scenario`` until it passes; a failed run counts only if the loop was on time.

    These scenarios check what happened at fixed moments (not yet expired at 0.25 s, expired by
    0.45 s); a process the machine did not run for a while may wake up past a deadline it was
    meant to move, and that run says nothing about the deadline.
    """
    for attempt in range(attempts):
        async with LoopLag() as lag:
            try:
                await scenario()
                return
            except AssertionError:
                if lag.worst < STALLED or attempt == attempts - 1:
                    raise


class Expiries:
    def __init__(self) -> None:
        self.at: list[float] = []

    def __call__(self) -> None:
        self.at.append(asyncio.get_running_loop().time())

    def once_after(self, t0: float, delay: float) -> None:
        """Expired exactly once, ``delay`` after ``t0`` (never early; late by at most SLACK)."""
        assert len(self.at) == 1, self.at
        assert delay <= self.at[0] - t0 < delay + SLACK


def _deadline(tick: float) -> tuple[LazyDeadline, Expiries, float]:
    loop = asyncio.get_running_loop()
    seen = Expiries()
    return LazyDeadline(loop, tick, seen), seen, loop.time()


async def test_expires_once_at_its_deadline() -> None:
    async def scenario() -> None:
        d, seen, t0 = _deadline(0.2)
        d.set(0.2)
        await asyncio.sleep(0.2 + SLACK + 0.2)
        seen.once_after(t0, 0.2)
        assert d.when is None

    await on_time(scenario)


async def test_a_moved_deadline_replaces_the_earlier_one() -> None:
    async def scenario() -> None:
        d, seen, t0 = _deadline(0.2)
        d.set(0.2)
        await asyncio.sleep(0.1)
        d.set(0.2)  # now due at ~0.3; the timer armed for 0.2 must re-arm, not expire
        await asyncio.sleep(0.15)
        assert seen.at == []
        await asyncio.sleep(0.1 + SLACK)
        seen.once_after(t0, 0.3)

    await on_time(scenario)


async def test_long_deadline_with_a_short_tick_is_exact() -> None:
    # The timer never looks further ahead than the tick: it re-arms step by step up to `when`.
    async def scenario() -> None:
        d, seen, t0 = _deadline(0.05)
        d.set(0.3)
        await asyncio.sleep(0.25)
        assert seen.at == []
        await asyncio.sleep(0.05 + SLACK)
        seen.once_after(t0, 0.3)

    await on_time(scenario)


async def test_clear_and_close_stop_expiry() -> None:
    async def scenario() -> None:
        d, seen, _ = _deadline(0.1)
        d.set(0.1)
        d.clear()
        await asyncio.sleep(0.1 + SLACK)
        assert seen.at == []
        t1 = asyncio.get_running_loop().time()
        d.set(0.1)  # usable again after a clear
        await asyncio.sleep(0.1 + SLACK)
        assert len(seen.at) == 1 and seen.at[0] - t1 >= 0.1
        d.set(0.1)
        d.close()
        await asyncio.sleep(0.1 + SLACK)
        assert len(seen.at) == 1

    await on_time(scenario)


async def test_many_moves_keep_one_timer() -> None:
    # A busy connection moves its deadline thousands of times a second: it must never expire
    # while the deadline keeps moving ahead of it.
    async def scenario() -> None:
        d, seen, _ = _deadline(0.05)
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.3
        while loop.time() < end:
            d.set(0.05)
            await asyncio.sleep(0.001)
        assert seen.at == []
        await asyncio.sleep(0.05 + SLACK)
        assert len(seen.at) == 1

    await on_time(scenario)


# ------------------------------------------------------------------ the lean client's use of it


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[int, list[str]]]:
    """Answers ``/fast`` at once and never answers ``/slow`` (keep-alive, one request a time)."""
    opened: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append("conn")
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.split(b" ", 2)[1] == b"/slow":
                    await asyncio.sleep(30)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, opened
    finally:
        server.close()


def _head(path: str, port: int) -> bytes:
    return lean.encode_head("GET", path, [("Host", f"127.0.0.1:{port}")], None)


async def test_pooled_connection_times_out_the_exchange_in_hand(
    upstream: tuple[int, list[str]],
) -> None:
    port, opened = upstream
    loop = asyncio.get_running_loop()
    pool = lean.LeanPool(connect_timeout_s=2, read_timeout_s=0.4)
    try:
        for _ in range(3):  # one kept-alive connection, its deadline moved by each exchange
            resp = await lean.send(pool, "127.0.0.1", port, _head("/fast", port), None,
                                   method="GET", small=1024)  # fmt: skip
            assert (resp.status, resp.body) == (200, b"ok")
            pool.release(resp)
            await asyncio.sleep(0.15)
        assert len(opened) == 1
        async with LoopLag() as lag:
            started = loop.time()
            with pytest.raises(TimeoutError):
                await lean.send(pool, "127.0.0.1", port, _head("/slow", port), None,
                                method="GET", small=1024)  # fmt: skip
            waited = loop.time() - started
        assert 0.4 <= waited < 0.4 + SLACK + lag.worst, waited
        # The timed-out connection is gone; the next exchange opens a fresh one.
        resp = await lean.send(pool, "127.0.0.1", port, _head("/fast", port), None,
                               method="GET", small=1024)  # fmt: skip
        assert resp.status == 200
        pool.release(resp)
        assert len(opened) == 2
    finally:
        pool.close()


async def test_an_idle_pooled_connection_is_not_expired(upstream: tuple[int, list[str]]) -> None:
    port, opened = upstream
    pool = lean.LeanPool(connect_timeout_s=2, read_timeout_s=0.1)
    try:
        resp = await lean.send(pool, "127.0.0.1", port, _head("/fast", port), None,
                               method="GET", small=1024)  # fmt: skip
        pool.release(resp)
        await asyncio.sleep(0.1 + SLACK)  # past the read deadline, but nothing was in hand
        resp = await lean.send(pool, "127.0.0.1", port, _head("/fast", port), None,
                               method="GET", small=1024)  # fmt: skip
        assert resp.status == 200
        pool.release(resp)
        assert len(opened) == 1  # the same connection served both
    finally:
        pool.close()
