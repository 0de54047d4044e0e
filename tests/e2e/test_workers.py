"""``workers: 2`` serves from two processes sharing one port; SIGHUP reaches both."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.gate import Gate, Upstream, base_config
from tests.support import await_until, listeners, wait_until


def _decisions(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") is None:
            out.append(rec)
    return out


async def test_two_workers_share_the_port(tmp_path: Path, upstream: Upstream) -> None:
    gate = Gate(tmp_path, base_config(tmp_path, upstream.url, workers=2))
    try:
        # The port opens with the first worker; wait until both have their own listener.
        wait_until(lambda: listeners(gate.port) == 2, 60, what="both workers listening")

        async def one(session: aiohttp.ClientSession, i: int) -> int:
            # A new connection each time, so the kernel spreads them across both listeners.
            async with session.get(gate.url + f"/w/{i}", headers={"Connection": "close"}) as r:
                await r.read()
                return r.status

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            statuses = await asyncio.gather(*(one(s, i) for i in range(200)))
        assert set(statuses) == {200}
        w0 = _decisions(tmp_path / "audit.w0.jsonl")
        w1 = _decisions(tmp_path / "audit.w1.jsonl")
        assert w0 and w1, (len(w0), len(w1))
        assert len(w0) + len(w1) == 200
        assert {r["replica"] for r in w0} != {r["replica"] for r in w1}

        # Metrics from any worker add up both processes (prometheus multiprocess mode); the other
        # worker's figures reach the shared files with its next flush, once it is idle.
        async def requests_total() -> float:
            return await _metric_sum(gate, "gatekeeper_requests_total{")

        await await_until(lambda: _at_least(requests_total, 200), what="both workers' counts")
        assert await requests_total() == 200

        # The audit commit histograms add up too: every line in both files (decision records
        # and outcome lines) was counted by the commit that wrote it. The last commits (outcome
        # lines) are flushed to the shared metrics by the workers' periodic flush: poll for it.
        def audit_lines() -> int:
            return sum(
                1
                for i in (0, 1)
                for line in (tmp_path / f"audit.w{i}.jsonl").read_text().splitlines()
                if json.loads(line).get("type") != "seal"
            )

        # 200 decision records and 200 outcome lines; an outcome line may follow its answer
        wait_until(lambda: audit_lines() >= 400, what="every outcome line")
        lines = audit_lines()
        assert lines == 400
        deadline = time.monotonic() + 30
        while True:
            async with aiohttp.ClientSession() as s:
                async with s.get(gate.admin_url + "/metrics") as r:
                    audit = _samples(await r.text(), "gatekeeper_audit_")
            if audit.get("gatekeeper_audit_batch_records_sum") == lines:
                break
            assert time.monotonic() < deadline, audit
            time.sleep(0.2)
        commits = audit["gatekeeper_audit_commit_seconds_count"]
        assert 2 <= commits <= lines  # at least one commit per worker; grouped when concurrent
        assert audit["gatekeeper_audit_batch_records_count"] == commits
        assert audit["gatekeeper_audit_fsync_seconds_count"] == commits
        assert audit['gatekeeper_audit_write_seconds_count{sink="file"}'] == commits
        assert audit["gatekeeper_audit_commit_seconds_sum"] > 0

        # SIGHUP to the supervisor reloads every worker.
        async def reloads() -> float:
            return await _metric_sum(gate, 'gatekeeper_policy_reloads_total{result="success"}')

        gate.signal(signal.SIGHUP)
        await await_until(lambda: _at_least(reloads, 2), what="both workers' reloads")
        assert await reloads() == 2
    finally:
        assert gate.stop() == 0


async def _metric_sum(gate: Gate, prefix: str) -> float:
    """The sum of the admin endpoint's samples whose line starts with ``prefix``."""
    async with aiohttp.ClientSession() as s, s.get(gate.admin_url + "/metrics") as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


async def _at_least(figure: Callable[[], Awaitable[float]], least: float) -> bool:
    return await figure() >= least


def _samples(text: str, prefix: str) -> dict[str, float]:
    """Exposition samples whose name starts with ``prefix``: ``name{labels}`` -> value."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _workers_of(gate: Gate) -> list[int]:
    """The supervisor's live worker processes."""
    with open(f"/proc/{gate.proc.pid}/task/{gate.proc.pid}/children") as fh:
        return [int(pid) for pid in fh.read().split()]


def _restart_delays(stderr: str, worker: int) -> list[float]:
    prefix = f"worker {worker} exited with "
    return [
        float(line.rsplit(" in ", 1)[1].rstrip("s"))
        for line in stderr.splitlines()
        if prefix in line and "; restarting in " in line
    ]


async def _get_ok(url: str) -> bool:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status == 200


def test_restart_delay_doubles_up_to_its_cap() -> None:
    from gatekeeper.serve import RESTART_FIRST_S, RESTART_MAX_S, restart_delay

    assert [restart_delay(n) for n in (1, 2, 3, 4)] == [RESTART_FIRST_S * f for f in (1, 2, 4, 8)]
    assert restart_delay(40) == RESTART_MAX_S


async def test_a_killed_worker_is_restarted(tmp_path: Path, upstream: Upstream) -> None:
    gate = Gate(tmp_path, base_config(tmp_path, upstream.url, workers=2))
    try:
        deadline = time.monotonic() + 30
        while len(_workers_of(gate)) < 2 or not (tmp_path / "audit.w1.jsonl").exists():
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        victim = _workers_of(gate)[0]
        os.kill(victim, signal.SIGKILL)
        while victim in _workers_of(gate) or len(_workers_of(gate)) < 2:
            assert time.monotonic() < deadline + 30, "the killed worker was not replaced"
            time.sleep(0.1)
        wait_until(lambda: listeners(gate.port) == 2, 60, what="the new worker listening")
        assert all([await _get_ok(gate.url + f"/after/{i}") for i in range(20)])
        assert "exited with -9; restarting in 0.1s" in gate.stderr()
    finally:
        assert gate.stop() == 0


async def test_a_worker_that_cannot_start_is_retried_with_growing_delays(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Worker 1's audit file is a directory: it fails at every start; worker 0 serves on."""
    (tmp_path / "audit.w1.jsonl").mkdir()
    gate = Gate(tmp_path, base_config(tmp_path, upstream.url, workers=2))
    try:
        deadline = time.monotonic() + 60
        while len(_restart_delays(gate.stderr(), 1)) < 4:
            assert time.monotonic() < deadline, gate.stderr()
            time.sleep(0.2)
        delays = _restart_delays(gate.stderr(), 1)
        assert delays[:4] == [0.1, 0.2, 0.4, 0.8], delays
        assert await _get_ok(gate.url + "/still-served")
        assert "gatekeeper: cannot start: cannot resume audit chain" in gate.stderr()
        assert "Traceback" not in gate.stderr()
    finally:
        assert gate.stop() == 0


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for its new parent to reap it counts as exited)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return any(line.startswith("State:\tZ") for line in fh)
    except FileNotFoundError:
        return True


def test_workers_drain_and_exit_when_the_supervisor_is_killed(
    tmp_path: Path, upstream: Upstream
) -> None:
    """An orphaned worker would serve on unsupervised with its old config, holding the port."""
    gate = Gate(tmp_path, base_config(tmp_path, upstream.url, workers=2))
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while len(_workers_of(gate)) < 2:
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.01)
        # Killed as soon as both exist: one may still be starting (it must notice all the same).
        workers = _workers_of(gate)
        gate.proc.kill()
        gate.proc.wait(10)
        deadline = time.monotonic() + 15
        while not all(_gone(pid) for pid in workers):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.1)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", gate.port), timeout=1).close()
    finally:
        for pid in workers:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        gate.stop()


def _cpus_by_thread(pid: int) -> dict[int, str]:
    """``Cpus_allowed_list`` of every thread of ``pid``."""
    out: dict[int, str] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as fh:
            for line in fh:
                if line.startswith("Cpus_allowed_list:"):
                    out[int(tid)] = line.split(":", 1)[1].strip()
    return out


@pytest.mark.parametrize("affinity", ["auto", "none"])
async def test_worker_cpu_affinity(tmp_path: Path, upstream: Upstream, affinity: str) -> None:
    """``auto``: worker i and all its threads (the audit file's among them) on the i-th allowed
    CPU, also after serving; ``none``: every thread may run anywhere it was allowed to."""
    allowed = sorted(os.sched_getaffinity(0))
    gate = Gate(
        tmp_path, base_config(tmp_path, upstream.url, workers=2, worker_cpu_affinity=affinity)
    )
    try:
        deadline = time.monotonic() + 30
        while len(_workers_of(gate)) < 2 or not all(
            (tmp_path / f"audit.w{i}.jsonl").exists() for i in (0, 1)
        ):
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        assert all([await _get_ok(gate.url + f"/pin/{i}") for i in range(20)])
        cpus_of = {}
        for pid in _workers_of(gate):
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = dict(item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item)
            cpus_of[int(env[b"GATEKEEPER_WORKER"])] = _cpus_by_thread(pid)
        assert sorted(cpus_of) == [0, 1]
        for worker, threads in cpus_of.items():
            assert len(threads) >= 2  # the event loop and at least the audit file's thread
            if affinity == "auto":
                assert set(threads.values()) == {str(allowed[worker % len(allowed)])}, threads
            else:
                assert all(len(_expand(v)) == len(allowed) for v in threads.values()), threads
        supervisor = _cpus_by_thread(gate.proc.pid)
        assert all(len(_expand(v)) == len(allowed) for v in supervisor.values())
    finally:
        assert gate.stop() == 0


def _expand(cpu_list: str) -> set[int]:
    """``0-2,5`` -> {0, 1, 2, 5}."""
    out: set[int] = set()
    for part in cpu_list.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out
