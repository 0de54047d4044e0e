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
from intervals import median_interval
from loadbench import lua_script, wrk


@dataclass
class Target:
    """One side of the comparison and what its rounds measured."""

    label: str
    url: str = ""
    rps: dict[int, list[float]] = field(default_factory=dict)  # by wrk connections
    machine_us: dict[int, list[float]] = field(default_factory=dict)


def measure(t: Target, conns: int, path: str, script: Path, seconds: int, pair: int) -> None:
    """One wrk round of ``t`` at ``conns`` connections; its req/s and machine CPU per request."""
    busy = machine_busy_seconds()
    r = wrk(t.url + path, script, threads=1, conns=conns, seconds=seconds)
    busy = machine_busy_seconds() - busy
    if r["status_errors"] or r["socket_errors"]:
        raise RuntimeError(f"{t.label}: errors in round {pair + 1} at {conns} connections: {r}")
    t.rps.setdefault(conns, []).append(r["rps"])
    t.machine_us.setdefault(conns, []).append(1e6 * busy / r["requests"])


def report(prefix: str, a: Target, b: Target, conns: int) -> None:
    """The pairs' median B/A with its interval, for req/s and machine CPU per request."""
    ratios = [y / x for x, y in zip(a.rps[conns], b.rps[conns], strict=True)]
    lo, hi = median_interval(ratios)
    wins = sum(r > 1 for r in ratios)
    cpu = [y / x for x, y in zip(a.machine_us[conns], b.machine_us[conns], strict=True)]
    clo, chi = median_interval(cpu)
    print(
        f"\n{prefix}req/s B/A: median {statistics.median(ratios):.3f}, 95% interval "
        f"{lo:.3f}-{hi:.3f}, range {min(ratios):.3f}-{max(ratios):.3f}; B faster in {wins} of "
        f"{len(ratios)} pairs\n"
        f"{prefix}machine CPU per request B/A: median {statistics.median(cpu):.3f}, "
        f"95% interval {clo:.3f}-{chi:.3f}\n"
        f"{prefix}medians: A {statistics.median(a.rps[conns]):.0f} req/s, "
        f"B {statistics.median(b.rps[conns]):.0f} req/s"
    )


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
    ap.add_argument(
        "--connections", default="32",
        help="wrk connections; a comma list (32,64,128) measures each and the peak ratio",
    )  # fmt: skip
    ap.add_argument("--read", action="store_true", help="the read route (GET) instead of submit")
    ap.add_argument("--registry-size", type=int, default=100_000)
    args = ap.parse_args()
    conns = [int(c) for c in args.connections.split(",")]

    with tempfile.TemporaryDirectory(prefix="gk-ab-") as tmpdir:
        tmp = Path(tmpdir)
        stack = Stack(tmp)
        try:
            redis_url, inputs = stack.start_backends(args.registry_size)
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
                wrk(t.url + path, script, threads=1, conns=conns[-1], seconds=2)
            print(f"A: {a.label}\nB: {b.label}\n{args.pairs} pairs of {args.seconds} s rounds"
                  f" at {', '.join(map(str, conns))} connections")  # fmt: skip
            for i in range(args.pairs):
                # Rotate the connection counts and alternate A and B, so neither side nor any
                # concurrency always runs first after the other.
                for c in conns[i % len(conns) :] + conns[: i % len(conns)]:
                    for t in (a, b) if i % 2 == 0 else (b, a):
                        measure(t, c, path, script, args.seconds, i)
                for c in conns:
                    print(
                        f"pair {i + 1:2d}{f' c{c}' if len(conns) > 1 else ''}: "
                        f"A {a.rps[c][-1]:8.0f}  B {b.rps[c][-1]:8.0f} req/s  "
                        f"B/A {b.rps[c][-1] / a.rps[c][-1]:.3f}   machine µs/req "
                        f"A {a.machine_us[c][-1]:.0f} B {b.machine_us[c][-1]:.0f}",
                        flush=True,
                    )
        finally:
            stack.close()
    if args.pairs < 6:
        print("\n(fewer than 6 pairs: the intervals below are the range, covering less than 95%)")
    for c in conns:
        report(f"{c} connections: " if len(conns) > 1 else "", a, b, c)
    if len(conns) > 1:
        # Each side's throughput is its best over the concurrencies tried (a group-commit gate
        # needs more requests in flight than a proxy that never waits on a disk to reach it).
        peak_a = [max(a.rps[c][i] for c in conns) for i in range(args.pairs)]
        peak_b = [max(b.rps[c][i] for c in conns) for i in range(args.pairs)]
        ratios = [y / x for x, y in zip(peak_a, peak_b, strict=True)]
        lo, hi = median_interval(ratios)
        best = lambda t: max(conns, key=lambda c: statistics.median(t.rps[c]))  # noqa: E731
        print(
            f"\npeak req/s B/A (each side's best concurrency in each pair): median "
            f"{statistics.median(ratios):.3f}, 95% interval {lo:.3f}-{hi:.3f}; "
            f"A peaks at {best(a)}, B at {best(b)} connections (median)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
