"""The gate's own work per request, in-process: intake, each stage, the audit record.

No HTTP: the script builds the ``gate-w1`` inputs of ``bench/fixtures.py`` (its private Redis,
the US pack, the bench token and Slurm body), starts a ``Runtime`` and drives the one decision
path the edge uses (``Intake.admit``, ``decide``, ``Verdict.record``, the outcome line) from
``--concurrency`` coroutines. It prints, per request:

* **in flow**: the wall time of intake, of each stage (``ctx.stage_times``) and of the whole
  decision while requests interleave as under load (``record`` is mostly the wait for the group
  commit), and the CPU time of the process (all its threads, the audit file's included) per
  request;
* **isolated**: each synchronous stage, intake and ``record_body`` run alone on one context
  thousands of times in a row (best of five): what the code costs with warm caches.

The gap between the two is what the rest of a request does to the caches; both shrink when a
stage does less. ``--profile STAGE`` (a stage name or ``admit``) prints a ``cProfile`` of that
stage alone. Run: ``.venv/bin/python bench/decide_bench.py [--requests 8000] [--buffered]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import CLIENT_IP, SUBMIT_PATH, Stack, job_body

from gatekeeper.audit.record import outcome_body, record_body
from gatekeeper.config import load_config
from gatekeeper.intake import Intake, Request, decide
from gatekeeper.runtime import Runtime

ROUNDS = 5


def best_us(fn: Callable[[], object], n: int = 5000) -> float:
    """The best of ``ROUNDS`` rounds of ``n`` calls, µs per call."""
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


async def run(args: argparse.Namespace) -> None:
    stack = Stack(Path(tempfile.mkdtemp(prefix="gk-decide-")), remove_folder=True)
    try:
        sets = ["audit.durability=buffered"] if args.buffered else []
        path, _ = stack.bench_gate_config(
            "decide", workers=1, registry_size=args.registry_size, sets=sets
        )
        cfg = load_config(str(path))
        runtime = Runtime(cfg, replica="decide")
        await runtime.start()
        intake = Intake(cfg)
        body = job_body()
        headers = CIMultiDictProxy(
            CIMultiDict(
                {
                    "Host": "gate",
                    "Authorization": f"Bearer {stack.token()}",
                    "X-Forwarded-For": CLIENT_IP,
                    "Content-Type": "application/json",
                    "Content-Length": str(len(body)),
                }
            )
        )
        totals: dict[str, float] = {}

        def request() -> Request:
            return Request("POST", SUBMIT_PATH, headers, "127.0.0.1")

        async def one() -> None:
            started = time.perf_counter()
            admitted = intake.admit(request(), started=started)
            admitted.ctx.body = body
            snapshot = runtime.snapshot
            assert admitted.route is not None
            t_admitted = time.perf_counter()
            verdict = await decide(
                admitted, snapshot.pipeline_for(admitted.route), snapshot.quota_stage
            )
            t_decided = time.perf_counter()
            if verdict.blocked:
                raise SystemExit(f"the bench request was refused: {verdict.reason}")
            if not await verdict.record(runtime.audit, None):
                raise SystemExit("the audit record was not written")
            outcome = outcome_body(admitted.ctx.decision_id, 200, 200, 1.0, False)
            runtime.audit.append_nowait(outcome)
            t_recorded = time.perf_counter()
            for name, seconds in admitted.ctx.stage_times.items():
                totals[name] = totals.get(name, 0.0) + seconds
            for name, seconds in (
                ("intake", t_admitted - started),
                ("decide", t_decided - t_admitted),
                ("record", t_recorded - t_decided),  # waits for its group commit
            ):
                totals[name] = totals.get(name, 0.0) + seconds

        async def flow(n: int) -> None:
            async def client(k: int) -> None:
                for _ in range(k):
                    await one()

            await asyncio.gather(*(client(n // args.concurrency) for _ in range(args.concurrency)))

        gc.collect()
        gc.freeze()  # as the server does after start-up (gatekeeper/heap.py)
        await flow(2000)
        totals.clear()
        n = args.requests - args.requests % args.concurrency
        cpu = []
        for _ in range(ROUNDS):
            t0 = time.process_time()
            await flow(n)
            cpu.append((time.process_time() - t0) / n * 1e6)
        print(f"in flow ({args.concurrency} concurrent requests), wall µs per request:")
        for name, seconds in totals.items():
            print(f"  {name:10s} {seconds / (ROUNDS * n) * 1e6:8.1f}")
        print("  CPU, all threads, per round: " + " ".join(f"{c:.1f}" for c in cpu))
        print(f"  CPU median {sorted(cpu)[ROUNDS // 2]:.1f} µs per request")

        admitted = intake.admit(request(), started=time.perf_counter())
        admitted.ctx.body = body
        assert admitted.route is not None
        pipeline = runtime.snapshot.pipeline_for(admitted.route)
        await pipeline.run(admitted.ctx)
        ctx = admitted.ctx
        print("isolated, best of 5 rounds of 5,000, µs per call:")
        print(f"  {'intake':10s} {best_us(lambda: intake.admit(request(), started=0.0)):8.2f}")
        for stage in pipeline.stages:
            if asyncio.iscoroutinefunction(stage.run):
                continue  # awaits (authn, quota): measured in flow only
            print(f"  {stage.name:10s} {best_us(lambda s=stage: s.run(ctx)):8.2f}")
        record = best_us(
            lambda: record_body(ctx, status=None, upstream_status=None, latency_ms=1.0)
        )
        print(f"  {'record':10s} {record:8.2f}  (record_body only)")
        if args.profile:
            await profile(args.profile, intake, request, pipeline, ctx)
        await runtime.close()
    finally:
        stack.close()


async def profile(
    name: str, intake: Intake, request: Callable[[], Request], pipeline: Any, ctx: Any
) -> None:
    """cProfile of one stage (or intake) run 5,000 times on one context."""
    stages = [s for s in pipeline.stages if s.name == name]
    if name != "admit" and not stages:
        raise SystemExit(f"no stage {name!r}: {[s.name for s in pipeline.stages]} or admit")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5000):
        if name == "admit":
            intake.admit(request(), started=0.0)
            continue
        pending = stages[0].run(ctx)
        if pending is not None:
            await pending
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=8000, help="per round (5 rounds)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--buffered", action="store_true", help="audit.durability: buffered")
    ap.add_argument("--registry-size", type=int, default=0, help="generated FtM entities")
    ap.add_argument("--profile", metavar="STAGE", help="cProfile one stage (or admit)")
    args = ap.parse_args()
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
