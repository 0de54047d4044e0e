"""Real processes for tests: free loopback ports and ``redis-server`` instances (never mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatekeeper.ports import free_port as free_port  # re-exported: tests import it from here


def free_cluster_port() -> int:
    """A free port <= 55535 whose cluster bus port (+10000) is free too (Redis Cluster's rule)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 50000)
        ok = True
        for candidate in (port, port + 10000):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", candidate))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free cluster port pair")


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    """Block until ``host:port`` accepts TCP connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"{host}:{port} not listening after {timeout}s")


def wait_until(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02, what: str = ""
) -> float:
    """Block until ``predicate()`` is true; the seconds it took. Tests wait for a condition, never
    a fixed time: a loaded machine makes every step arbitrarily late, so ``timeout`` is generous
    and bounds only a hang."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what or 'condition'} not met within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start


async def await_until(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02, what: str = ""
) -> float:
    """``wait_until`` for the event loop; ``predicate`` may return an awaitable."""
    start = time.monotonic()
    while True:
        ok = predicate()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what or 'condition'} not met within {timeout}s")
        await asyncio.sleep(interval)


def listeners(port: int) -> int:
    """How many sockets listen on TCP ``port`` (IPv4): with ``SO_REUSEPORT`` every worker of a
    gate has its own, and a worker takes connections only once its socket is in this count."""
    with open("/proc/net/tcp") as fh:
        rows = [line.split() for line in fh.readlines()[1:]]
    return sum(1 for r in rows if int(r[1].rsplit(":", 1)[1], 16) == port and r[3] == "0A")


class LoopLag:
    """The worst lateness of a 5 ms ticker on the running loop while in the ``async with``.

    A bound on how long something takes holds on a loaded machine only up to the time the process
    was not run: a test asserting ``elapsed < bound + lag.worst`` still catches a missing or a
    doubled timeout on a quiet machine, and does not fail because the machine was busy."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.monotonic() - t0 - 0.005)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.ensure_future(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class RedisServer:
    """A private ``redis-server`` on a free loopback port (optionally a cluster node)."""

    def __init__(self, port: int | None = None, *, cluster: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.port = port or (free_cluster_port() if cluster else free_port())
        self.cluster = cluster
        self.dir = tempfile.mkdtemp(prefix=f"gk-redis-{self.port}-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        self.kill()
        self.start()


def redis_cluster(masters: int = 3) -> list[RedisServer]:
    """Start ``masters`` cluster-mode redis-servers and join them (no replicas)."""
    nodes = [RedisServer(cluster=True).start() for _ in range(masters)]
    addrs = [f"127.0.0.1:{n.port}" for n in nodes]
    subprocess.run(
        ["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
    )
    # Every node, not just the first: a client may land on one whose view of the cluster is still
    # forming, and that node answers CLUSTERDOWN (a first test on a fresh cluster flaked so).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        infos = [
            subprocess.run(
                ["redis-cli", "-p", str(n.port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            for n in nodes
        ]
        if all("cluster_state:ok" in out for out in infos):
            return nodes
        time.sleep(0.1)
    for n in nodes:
        n.stop()
    raise TimeoutError("redis cluster did not become ok")


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def venv_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: the current one plus ``extra``."""
    env = dict(os.environ)
    env.update(extra)
    return env
