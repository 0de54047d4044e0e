"""A/B throughput with many short interleaved rounds: a change's effect with an interval.

On the shared 2-core VMs the same target's req/s swings by up to 60% from one round to the next
(host noise comes in bursts), so ``bench/run``'s three rounds per target cannot resolve a 10%
change, and back-to-back ``profile_gate.py`` runs start a new stack between A and B. This keeps
both targets running on one stack (nginx upstream, private Redis, the ``gate-w*`` inputs) and
alternates short ``wrk`` rounds between them, A-B then B-A, so each pair is seconds apart; it
prints every pair's ratio B/A, their median with a distribution-free 95% interval for it (order
statistics of the sign test: no assumption about the noise but independence between pairs),
and how many pairs B won. The idle target costs nothing while the other is measured.

Targets: ``bare`` (``bench/bare_proxy.py``) or ``gate`` (the ``gate-w*`` configuration of
``bench/run``), each with its own ``--workers``-process count and ``--cpu-affinity``; a gate takes
``--a-set``/``--b-set KEY=YAML`` overrides and ``--a-tree``/``--b-tree PATH`` to run another work
tree's code (``git worktree add /tmp/base HEAD~1``). Default: the goal's pair, A = bare, B = gate.

Run: ``.venv/bin/python bench/ab.py [--pairs 12] [--seconds 4] [--workers 2]``
     ``.venv/bin/python bench/ab.py --a gate --b gate --b-set audit.durability=buffered``
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fixtures import (
    READ_PATH,
    SUBMIT_PATH,
    Stack,
    job_body,
    machine_busy_seconds,
    request_headers,
)
from loadbench import lua_script, wrk


@dataclass
class Target:
    """One side of the comparison and what its rounds measured."""

    label: str
    url: str = ""
    rps: list[float] = field(default_factory=list)
    machine_us: list[float] = field(default_factory=list)


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median: order statistics ``(x[k], x[n-1-k])``
    with the largest ``k`` whose two-sided sign-test tail stays within ``1 - confidence``
    (n=12: the 4th and 9th of the sorted values, 96% coverage). Too few values: the range."""
    xs = sorted(values)
    n = len(xs)
    k = 0
    tail = 0.0
    while k < n // 2:
        tail += math.comb(n, k) / 2**n  # P(X = k) for X ~ Binomial(n, 1/2)
        if 2 * tail > 1 - confidence:
            break
        k += 1
    return (xs[k], xs[n - 1 - k]) if n else (math.nan, math.nan)


def start(
    stack: Stack, side: str, args: argparse.Namespace, inputs: dict[str, Any], redis_url: str
) -> str:
    """Start side ``a`` or ``b``; its base URL."""
    if getattr(args, side) == "bare":
        port = stack.start_bare(args.workers, cpu_affinity=args.cpu_affinity)
        return f"http://127.0.0.1:{port}"
    sets = [f"worker_cpu_affinity={args.cpu_affinity}", *getattr(args, f"{side}_set")]
    path, cfg = stack.gate_config(
        f"gate-{side}", inputs, workers=args.workers, redis_url=redis_url, sets=sets
    )
    tree = getattr(args, f"{side}_tree")
    stack.start_gate_with([sys.executable], f"gate-{side}", path, cfg, cwd=tree)
    return f"http://127.0.0.1:{cfg['listen']['port']}"


def describe(side: str, args: argparse.Namespace) -> str:
    parts = [f"{getattr(args, side)}-w{args.workers}"]
    parts += getattr(args, f"{side}_set")
    if getattr(args, f"{side}_tree"):
        parts.append(f"tree={getattr(args, f'{side}_tree')}")
    return " ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", choices=("bare", "gate"), default="bare")
    ap.add_argument("--b", choices=("bare", "gate"), default="gate")
    for side in ("a", "b"):
        ap.add_argument(
            f"--{side}-set", action="append", default=[], metavar="KEY=YAML",
            help=f"override a key of {side.upper()}'s gate config (repeatable)",
        )  # fmt: skip
        ap.add_argument(
            f"--{side}-tree", type=Path, help=f"run {side.upper()}'s gate from this tree"
        )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpu-affinity", choices=("none", "auto"), default="auto")
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--seconds", type=int, default=4, help="length of one wrk round")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--read", action="store_true", help="the read route (GET) instead of submit")
    ap.add_argument("--registry-size", type=int, default=100_000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="gk-ab-") as tmpdir:
        tmp = Path(tmpdir)
        stack = Stack(tmp)
        try:
            stack.start_nginx()
            redis_url = stack.start_redis()
            inputs = stack.prepare_gate_inputs(args.registry_size)
            a = Target(describe("a", args), start(stack, "a", args, inputs, redis_url))
            b = Target(describe("b", args), start(stack, "b", args, inputs, redis_url))
            headers = request_headers(stack.token())
            if args.read:
                script = lua_script(tmp, "get", "GET", headers[:2], b"")
                path = READ_PATH
            else:
                script = lua_script(tmp, "post", "POST", headers, job_body())
                path = SUBMIT_PATH
            for t in (a, b):  # warm: token cache, quota leases, GeoIP and Slurm caches
                wrk(t.url + path, script, threads=1, conns=args.connections, seconds=2)
            print(f"A: {a.label}\nB: {b.label}\n{args.pairs} pairs of {args.seconds} s rounds")
            for i in range(args.pairs):
                for t in (a, b) if i % 2 == 0 else (b, a):
                    busy = machine_busy_seconds()
                    r = wrk(t.url + path, script, threads=1, conns=args.connections,
                            seconds=args.seconds)  # fmt: skip
                    busy = machine_busy_seconds() - busy
                    if r["status_errors"] or r["socket_errors"]:
                        raise RuntimeError(f"{t.label}: errors in round {i + 1}: {r}")
                    t.rps.append(r["rps"])
                    t.machine_us.append(1e6 * busy / r["requests"])
                print(
                    f"pair {i + 1:2d}: A {a.rps[-1]:8.0f}  B {b.rps[-1]:8.0f} req/s  "
                    f"B/A {b.rps[-1] / a.rps[-1]:.3f}   machine µs/req A {a.machine_us[-1]:.0f} "
                    f"B {b.machine_us[-1]:.0f}",
                    flush=True,
                )
        finally:
            stack.close()
    ratios = [y / x for x, y in zip(a.rps, b.rps, strict=True)]
    lo, hi = median_interval(ratios)
    wins = sum(r > 1 for r in ratios)
    cpu = [y / x for x, y in zip(a.machine_us, b.machine_us, strict=True)]
    clo, chi = median_interval(cpu)
    if len(ratios) < 6:
        print("\n(fewer than 6 pairs: the interval below is the range, covering less than 95%)")
    print(
        f"\nreq/s B/A: median {statistics.median(ratios):.3f}, 95% interval {lo:.3f}-{hi:.3f}, "
        f"range {min(ratios):.3f}-{max(ratios):.3f}; B faster in {wins} of {len(ratios)} pairs\n"
        f"machine CPU per request B/A: median {statistics.median(cpu):.3f}, "
        f"95% interval {clo:.3f}-{chi:.3f}\n"
        f"medians: A {statistics.median(a.rps):.0f} req/s, B {statistics.median(b.rps):.0f} req/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
