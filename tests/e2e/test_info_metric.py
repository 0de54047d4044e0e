"""``gatekeeper_info`` names only the running policy version: after a reload, and after a worker
was replaced, with ``workers: 2`` (multiprocess metrics)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import aiohttp
import yaml

from tests.e2e.gate import Gate, Upstream, base_config


def _policy(path: Path, rule: str) -> None:
    doc = {
        "version": 1,
        "name": "p",
        "rules": [{"id": rule, "when": {"geo.country": "CN"}, "action": "deny"}],
    }
    path.write_text(yaml.safe_dump(doc))


async def _info(gate: Gate) -> list[dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.get(gate.admin_url + "/metrics") as r:
        text = await r.text()
    return [
        dict(re.findall(r'(\w+)="([^"]*)"', line))
        for line in text.splitlines()
        if line.startswith("gatekeeper_info{")
    ]


async def _until(gate: Gate, want: set[str], pids: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        info = await _info(gate)
        versions = {i["policy_version"] for i in info}
        if versions == want and len(info) == pids:
            return
        assert time.monotonic() < deadline, info
        time.sleep(0.2)


def _workers(gate: Gate) -> list[int]:
    with open(f"/proc/{gate.proc.pid}/task/{gate.proc.pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


async def test_info_carries_only_the_current_policy(tmp_path: Path, upstream: Upstream) -> None:
    policy = tmp_path / "policy.yaml"
    _policy(policy, "first")
    cfg = base_config(
        tmp_path, upstream.url, workers=2, policy={"files": [str(policy)], "default_action": "deny"}
    )
    gate = Gate(tmp_path, cfg)
    try:
        deadline = time.monotonic() + 30
        while len(await _info(gate)) < 2:
            assert time.monotonic() < deadline, gate.stderr()
            time.sleep(0.2)
        (first,) = {i["policy_version"] for i in await _info(gate)}
        _policy(policy, "second")
        gate.signal(signal.SIGHUP)
        # Both workers reloaded: one series each, both naming the new version, the old one gone.
        infos = await _info(gate)
        deadline = time.monotonic() + 30
        while {i["policy_version"] for i in infos} == {first}:
            assert time.monotonic() < deadline, infos
            time.sleep(0.2)
            infos = await _info(gate)
        await _until(gate, {i["policy_version"] for i in infos} - {first}, 2)
        (second,) = {i["policy_version"] for i in await _info(gate)}
        assert second != first
        # A worker that dies leaves no series behind; its replacement shows the current one.
        victim = _workers(gate)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while victim in _workers(gate) or len(_workers(gate)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        await _until(gate, {second}, 2)
        assert all(i.get("pid") != str(victim) for i in await _info(gate))
    finally:
        assert gate.stop() == 0
