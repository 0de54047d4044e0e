"""Faults: a killed or hung Redis surfaces as DependencyError within the timeout; a restarted
Redis (which has lost the Lua script cache and all connections) is used again within 5 s by the
same store object."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import hiredis
import pytest

from gatekeeper.errors import DependencyError
from gatekeeper.stores.quota import Bucket, bucket_key
from gatekeeper.stores.redis import RedisQuotaStore
from tests.support import LoopLag, RedisServer, await_until

TIMEOUT = 0.3
SLACK = 0.25  # event-loop scheduling on a shared 2-core box


def bucket() -> Bucket:
    return Bucket("q", bucket_key("q", "tenant", "t"), 1.0, 1e12, 3600)


async def _load(store: RedisQuotaStore, group: str, stop: asyncio.Event, log: list) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            r = await store.consume(group, [bucket()], time.time())
            log.append((t0, time.monotonic() - t0, "ok" if r.admitted else "refused"))
        except DependencyError as exc:
            assert exc.reason == "store-unavailable"
            log.append((t0, time.monotonic() - t0, "error"))
            await asyncio.sleep(0.01)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batch", [True, False], ids=["batched", "unbatched"])
async def test_kill_mid_load_then_restart(batch: bool) -> None:
    server = RedisServer().start()
    store = RedisQuotaStore.from_url(server.url, timeout_s=TIMEOUT, batch=batch)
    group = uuid.uuid4().hex
    stop = asyncio.Event()
    log: list[tuple[float, float, str]] = []
    workers = [asyncio.ensure_future(_load(store, group, stop, log)) for _ in range(16)]
    try:
        async with LoopLag() as lag:
            await await_until(lambda: any(o == "ok" for *_, o in log))
            killed = time.monotonic()
            server.kill()

            def during() -> list[tuple[float, float, str]]:
                return [e for e in log if e[0] > killed + 0.05]

            await await_until(lambda: len(during()) >= 32)
        assert all(o == "error" for *_, o in during())
        # every failing call returned within the bound (however late the loop ran), never hung
        assert max(d for _, d, o in log if o == "error") < TIMEOUT + SLACK + lag.worst
        restarted = time.monotonic()
        server.start()  # same port, empty: no script cache, no data
        up = time.monotonic()  # a slow start of redis-server is not the store's
        await await_until(lambda: any(o == "ok" and t0 > restarted for t0, _, o in log), 10)
        first_ok = min(t0 + d for t0, d, o in log if o == "ok" and t0 > restarted)
        assert first_ok - up < 5.0

        def tail() -> list[tuple[float, float, str]]:
            return [e for e in log if e[0] > first_ok + 0.2]

        await await_until(lambda: len(tail()) >= 32)
        assert all(o == "ok" for *_, o in tail())
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await store.close()
        server.stop()


@pytest.mark.timeout(60)
async def test_hung_redis_times_out_within_the_bound() -> None:
    server = RedisServer().start()
    store = RedisQuotaStore.from_url(server.url, timeout_s=TIMEOUT)
    group = uuid.uuid4().hex
    assert server.proc is not None
    try:
        assert (await store.consume(group, [bucket()], time.time())).admitted
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            async with LoopLag() as lag:
                t0 = time.monotonic()
                results = await asyncio.gather(
                    *(store.consume(group, [bucket()], time.time()) for _ in range(20)),
                    return_exceptions=True,
                )
                elapsed = time.monotonic() - t0
            assert all(isinstance(r, DependencyError) for r in results), results
            assert elapsed < TIMEOUT + SLACK + lag.worst
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:
            try:
                assert (await store.consume(group, [bucket()], time.time())).admitted
                break
            except DependencyError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    finally:
        await store.close()
        server.stop()


class _SilentOnScripts:
    """A TCP server speaking just enough RESP: a reply to the client's connection set-up, no
    reply ever to a script call (a reply lost after the script may have run). Records every
    command it received."""

    def __init__(self) -> None:
        self.commands: list[list[bytes]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> _SilentOnScripts:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (cmd := parser.gets()) is not False:
                    self.commands.append(cmd)
                    name = cmd[0].upper()
                    if name == b"HELLO":  # redis-py speaks RESP3: a map with the protocol
                        writer.write(b"%1\r\n$5\r\nproto\r\n:3\r\n")
                    elif name not in (b"EVALSHA", b"EVAL"):
                        writer.write(b"+OK\r\n")
        except ConnectionError:
            pass
        finally:
            writer.close()

    def scripts(self) -> int:
        return sum(1 for c in self.commands if c[0].upper() in (b"EVALSHA", b"EVAL"))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batch", [True, False], ids=["batched", "unbatched"])
async def test_lost_replies_fail_within_the_timeout_and_nothing_is_resent(batch: bool) -> None:
    server = await _SilentOnScripts().start()
    store = RedisQuotaStore.from_url(
        f"redis://127.0.0.1:{server.port}", timeout_s=TIMEOUT, batch=batch
    )
    calls = 8
    try:
        async with LoopLag() as lag:
            t0 = time.monotonic()
            results = await asyncio.gather(
                *(store.consume("g", [bucket()], time.time()) for _ in range(calls)),
                return_exceptions=True,
            )
            elapsed = time.monotonic() - t0
        for r in results:
            assert isinstance(r, DependencyError) and r.reason == "store-unavailable", r
            assert r.detail == "quota store: TimeoutError", r.detail
        assert elapsed < TIMEOUT + SLACK + lag.worst
        # A script whose reply was lost may have run: it is never sent a second time. Batched
        # callers still queued when their time ran out are dropped before they are sent.
        assert 1 <= server.scripts() <= calls
        if not batch:
            assert server.scripts() == calls
    finally:
        await store.close()
        await server.stop()
