"""``worker_cpu_affinity: auto``: each worker process on a CPU of its own (nginx's
``worker_cpu_affinity auto``).

Why. A gate process is an event loop plus helpers that take every group commit to the disk and
hand it back (the audit file's thread). Left to the scheduler, they move between CPUs: the
commit hand-off then crosses cores and each move starts on cold caches. Pinned, worker *i* and
all its threads stay on one CPU (the audit thread, left free to move, measured 7.5% fewer
req/s at 32 connections in eight paired rounds). Measured on the 2-core benchmark
VM with ``bench/profile_gate.py --workers 2 --cpu-affinity auto|none`` (wrk, nginx and Redis on
the same two cores): seven paired rounds, median 5,573 against 4,603 req/s (more in 6 of 7) and
285 against 337 µs of gate CPU per request; ``workers: 1`` gained 8-19% in three pairs. The bare
aiohttp proxy, which has no second thread, gained nothing consistent (+11%, -13%, +1%). Below
saturation it does not pay: at 500 req/s the pinned gate's median latency was 0.1 ms higher (its
audit thread can no longer run on the idle CPU), so it is a throughput setting.

Which CPU. The CPUs the process may use when it starts (``sched_getaffinity``: a cpuset, a
``taskset``), in ascending order; worker *i* takes the (*i* mod *n*)-th. ``workers: 1`` is worker
0. Every thread that exists at that moment is moved too, and threads started later inherit it.

When not to. With a CPU *quota* on a large host (a Kubernetes CPU limit without the static CPU
manager), every pod sees all of the node's CPUs and would pin its workers to the same first ones:
use ``auto`` only where the process's CPU set is its own (the static CPU manager with Guaranteed
pods and integer CPUs, a dedicated VM, ``taskset``/``cpuset`` per instance). Hence ``none`` by
default, as in nginx.
"""

from __future__ import annotations

import contextlib
import os


def cpu_for(worker: int, allowed: set[int]) -> int:
    """The CPU of ``worker`` among ``allowed`` (ascending, round robin)."""
    if not allowed:
        raise ValueError("no CPU allowed")
    cpus = sorted(allowed)
    return cpus[worker % len(cpus)]


def pin_worker(worker: int) -> int | None:
    """Pin this process and all its threads to ``cpu_for(worker, <allowed now>)``; the CPU, or
    None where the platform cannot (no ``sched_setaffinity``)."""
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - Linux has it
        return None
    cpu = cpu_for(worker, os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
                os.sched_setaffinity(int(task), {cpu})
    return cpu
