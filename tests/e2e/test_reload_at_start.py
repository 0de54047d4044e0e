"""A reload asked for while the gate starts is kept: no worker dies of the SIGHUP, none keeps
the policy it read before the file changed (``serve.py``, module docstring)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from gatekeeper.policy import load_policy_set
from tests.e2e.gate import Gate, Upstream, base_config
from tests.e2e.test_info_metric import _info, _policy


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return sorted(int(p) for p in fh.read().split())


async def test_sighup_while_workers_start_reloads_and_kills_nobody(
    tmp_path: Path, upstream: Upstream
) -> None:
    policy = tmp_path / "policy.yaml"
    _policy(policy, "first")
    first = load_policy_set([str(policy)]).version
    cfg = base_config(
        tmp_path, upstream.url, workers=2, policy={"files": [str(policy)], "default_action": "deny"}
    )
    seen: list[int] = []
    hups = 0

    def reload_now(proc: subprocess.Popen[bytes]) -> None:
        """Once both workers exist (still importing), change the policy and send SIGHUP; then
        again on every call until the gate listens."""
        nonlocal hups
        if not seen:
            workers = _children(proc.pid)
            if len(workers) < 2:
                return
            seen.extend(workers)
            _policy(policy, "second")
        proc.send_signal(signal.SIGHUP)
        hups += 1

    gate = Gate(tmp_path, cfg, while_starting=reload_now)
    try:
        assert seen and hups >= 1, "the workers were not caught starting"
        second = load_policy_set([str(policy)]).version
        assert second != first
        deadline = time.monotonic() + 30
        while True:
            info = await _info(gate)
            if len(info) == 2 and {i["policy_version"] for i in info} == {second}:
                break
            assert time.monotonic() < deadline, (info, gate.stderr())
            time.sleep(0.2)
        # The workers that were starting are the ones serving: none died of a SIGHUP.
        assert _children(gate.proc.pid) == seen, gate.stderr()
        assert "exited" not in gate.stderr()
    finally:
        gate.stop()
