"""``worker_cpu_affinity: auto`` (gatekeeper.affinity): which CPU a worker takes, and that the
process and every thread it already has end up there (in a child process: pinning is for life)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from gatekeeper.affinity import cpu_for
from tests.support import repo_root


def test_workers_take_the_allowed_cpus_in_order_and_wrap_around() -> None:
    allowed = {6, 2, 4}
    assert [cpu_for(i, allowed) for i in range(5)] == [2, 4, 6, 2, 4]
    assert cpu_for(0, {0}) == cpu_for(3, {0}) == 0
    with pytest.raises(ValueError):
        cpu_for(0, set())


@pytest.mark.parametrize("worker", [0, 1, 5])
def test_pin_moves_the_process_and_the_threads_it_already_has(worker: int) -> None:
    """A thread started before pinning is moved too; one started after inherits the CPU."""
    script = textwrap.dedent(
        """
        import json, os, sys, threading
        from gatekeeper.affinity import pin_worker
        stop = threading.Event()
        before = threading.Thread(target=stop.wait, daemon=True)
        before.start()
        cpu = pin_worker(int(sys.argv[1]))
        after = threading.Thread(target=stop.wait, daemon=True)
        after.start()
        def cpus(tid):
            for line in open(f"/proc/self/task/{tid}/status"):
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
        tids = sorted(os.listdir("/proc/self/task"))
        print(json.dumps({"cpu": cpu, "threads": {t: cpus(t) for t in tids}}))
        stop.set()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(worker)],
        cwd=repo_root(), capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    got = json.loads(out)
    expected = cpu_for(worker, os.sched_getaffinity(0))
    assert got["cpu"] == expected
    assert len(got["threads"]) == 3  # main, the thread from before, the thread from after
    assert set(got["threads"].values()) == {str(expected)}
