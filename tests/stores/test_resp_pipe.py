"""The lean RESP connection (``stores/resp.py``) and the store's pre-encoded consume command.

Against a scripted fake server: the per-connection watchdog fails every outstanding call within
the timeout when a reply is late or lost, resets the connection, and never resends a command; the
store's hand-built ``EVALSHA`` is byte-identical to ``resp.encode`` of the same arguments.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import hiredis
import pytest

from gatekeeper.errors import DependencyError
from gatekeeper.stores import window as W
from gatekeeper.stores.quota import Bucket, bucket_key
from gatekeeper.stores.redis import _CONSUME_SHA, RedisQuotaStore
from gatekeeper.stores.resp import RespPipe, encode

TIMEOUT = 0.3
SLACK = 0.25  # event-loop scheduling on a shared 2-core box


class FakeRedis:
    """Records every command; ``answer(cmd)`` returns the reply bytes, or None to stay silent."""

    def __init__(self, answer: Callable[[list[bytes]], bytes | None]) -> None:
        self.answer = answer
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.port = 0

    def reply(self, data: bytes) -> None:
        """Write to the latest connection out of turn (a late reply)."""
        assert self.writer is not None
        self.writer.write(data)

    async def start(self) -> FakeRedis:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writer = writer
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (cmd := parser.gets()) is not False:
                    self.commands.append(cmd)
                    out = self.answer(cmd)
                    if out is not None:
                        writer.write(out)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def silent() -> AsyncIterator[FakeRedis]:
    server = await FakeRedis(lambda cmd: None).start()
    yield server
    await server.stop()


async def _timed(coro: Any) -> tuple[float, Any]:
    t0 = time.monotonic()
    try:
        result = await coro
    except Exception as exc:
        result = exc
    return time.monotonic() - t0, result


async def test_lost_replies_fail_every_call_within_the_timeout(silent: FakeRedis) -> None:
    pipe = RespPipe("127.0.0.1", silent.port, timeout_s=TIMEOUT)
    try:
        results = await asyncio.gather(*(_timed(pipe.call(("PING", str(i)))) for i in range(20)))
        for elapsed, exc in results:
            assert isinstance(exc, TimeoutError), exc
            assert TIMEOUT - 0.05 < elapsed < TIMEOUT + SLACK
        assert not pipe.connected and not pipe._waiters
        assert len(silent.commands) == 20  # each sent once, none resent
    finally:
        await pipe.close()


async def test_overdue_head_resets_and_fails_younger_calls_too(silent: FakeRedis) -> None:
    pipe = RespPipe("127.0.0.1", silent.port, timeout_s=TIMEOUT)
    try:
        first = asyncio.ensure_future(_timed(pipe.call(("PING", "old"))))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(_timed(pipe.call(("PING", "young"))))
        (e1, r1), (e2, r2) = await asyncio.gather(first, second)
        assert isinstance(r1, TimeoutError)
        # the younger call is not yet overdue, but its reply can no longer be matched
        assert isinstance(r2, ConnectionError) and "abandoned" in str(r2)
        assert e1 < TIMEOUT + SLACK and e2 < e1
        assert len(silent.commands) == 2
    finally:
        await pipe.close()


async def test_watchdog_rearms_for_the_next_oldest_call() -> None:
    # The first PING is answered after 0.2 s, the second never: the watchdog armed for the first
    # must re-arm and fail the second one TIMEOUT after it was sent, not earlier and not later.
    server = FakeRedis(lambda cmd: None)
    await server.start()
    loop = asyncio.get_running_loop()

    def answer(cmd: list[bytes]) -> bytes | None:
        if cmd == [b"PING", b"a"]:
            loop.call_later(0.2, server.reply, b"+a\r\n")
        return None

    server.answer = answer
    pipe = RespPipe("127.0.0.1", server.port, timeout_s=TIMEOUT)
    try:
        first = asyncio.ensure_future(pipe.call(("PING", "a")))
        await asyncio.sleep(0.1)
        t_second = time.monotonic()
        elapsed, second = await _timed(pipe.call(("PING", "b")))
        assert first.result() == b"a"
        assert isinstance(second, TimeoutError)
        assert TIMEOUT - 0.05 < elapsed < TIMEOUT + SLACK
        assert time.monotonic() - t_second < TIMEOUT + SLACK
    finally:
        await pipe.close()
        await server.stop()


async def test_steady_traffic_keeps_the_connection() -> None:
    server = await FakeRedis(lambda cmd: b"+PONG\r\n").start()
    # The timeout must outlast a scheduling hiccup of the shared CI box (a 50 ms bound failed
    # once under a full-suite run); the run is still several timeouts long, so a watchdog that
    # fired for answered calls or failed to re-arm would show.
    pipe = RespPipe("127.0.0.1", server.port, timeout_s=TIMEOUT)
    try:
        end = time.monotonic() + 4 * TIMEOUT
        n = 0
        while time.monotonic() < end:
            assert await pipe.call(("PING",)) == b"PONG"
            n += 1
        assert n > 10 and server.connections == 1
    finally:
        await pipe.close()
        await server.stop()


async def test_store_on_a_silent_server_fails_within_the_timeout(silent: FakeRedis) -> None:
    store = RedisQuotaStore.from_url(f"redis://127.0.0.1:{silent.port}", timeout_s=TIMEOUT)
    b = Bucket("q", bucket_key("q", "tenant", "t"), 1.0, 10.0, 60)
    try:
        assert store._pipe is not None
        results = await asyncio.gather(
            *(_timed(store.consume("g", [b], time.time())) for _ in range(8))
        )
        for elapsed, exc in results:
            assert isinstance(exc, DependencyError) and exc.reason == "store-unavailable"
            # The first caller to time out resets the shared connection; a caller whose own
            # timer had not fired yet in that loop iteration fails with the reset instead.
            assert exc.detail in (
                "quota store: TimeoutError",
                "quota store: ConnectionError: quota store call abandoned",
            ), exc.detail
            assert elapsed < TIMEOUT + SLACK
        # connected now (the connect itself succeeded): the next call takes the timer-less path
        await store._pipe._connect()
        elapsed, exc = await _timed(store.consume("g", [b], time.time()))
        assert isinstance(exc, DependencyError) and exc.detail == "quota store: TimeoutError"
        assert TIMEOUT - 0.05 < elapsed < TIMEOUT + SLACK
        assert all(c[0] == b"EVALSHA" for c in silent.commands)
        assert len(silent.commands) == 9  # nothing resent
    finally:
        await store.close()


def _old_command(
    prefix: str, group: str, buckets: list[Bucket], t: int, charge_t: int | None = None
) -> bytes:
    """The consume command as ``resp.encode`` of the argument tuple (the reference)."""
    store = RedisQuotaStore.from_url("redis://127.0.0.1:1", prefix=prefix)
    keys: list[str] = []
    # a lease passes its end (after now); an ordinary request 0
    argv: list[Any] = [t, W.SUB_BUCKETS, 0 if charge_t is None or charge_t == t else charge_t]
    for b in buckets:
        width = W.width_ms(b.window_s)
        keys.append(store.key(group, b.key, b.window_s))
        argv += [
            repr(float(b.amount)),
            repr(float(b.limit)),
            W.slot_of(t, width),
            width,
            b.window_s,
            W.slot_of(t if charge_t is None else charge_t, width),
        ]
    return encode(("EVALSHA", _CONSUME_SHA, len(keys), *keys, *argv))


@pytest.mark.parametrize("prefix", ["gk", "präfix", "a:b"])
@pytest.mark.parametrize("n", [1, 2, 3, 12])
async def test_consume_command_is_byte_identical(prefix: str, n: int) -> None:
    store = RedisQuotaStore.from_url("redis://127.0.0.1:1", prefix=prefix)
    try:
        amounts = [1.0, 0.1 + 0.2, 1e-9, 3, 0.0, 123456789.125]
        windows = [1, 59, 60, 86400, 30 * 86400, 315360000]
        for round_ in range(2):  # cold caches, then warm ones
            for group in ("g", "", "x}{y", "ü"):
                buckets = [
                    Bucket(
                        f"q{i}",
                        bucket_key(f"q{i}", "tenant", f"t:{i}{round_}"),
                        amounts[i % len(amounts)],
                        [1e15, 10, 2.5][i % 3],
                        windows[i % len(windows)],
                    )
                    for i in range(n)
                ]
                for t in (0, 1_700_000_000_123, 1_700_000_059_999):
                    command, slots = store._consume_command(group, buckets, t)
                    assert command == _old_command(prefix, group, buckets, t)
                    assert slots == [W.slot_of(t, W.width_ms(b.window_s)) for b in buckets]
                    # a lease books its amounts at its end (stores/lease.py)
                    end = t + 1500
                    command, slots = store._consume_command(group, buckets, t, end)
                    assert command == _old_command(prefix, group, buckets, t, end)
                    assert slots == [W.slot_of(end, W.width_ms(b.window_s)) for b in buckets]
    finally:
        await store.close()
