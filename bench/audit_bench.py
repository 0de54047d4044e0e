"""Audit throughput: fsync group commit vs buffered vs no audit, and the cost of one record.

    .venv/bin/python bench/audit_bench.py [--runs 3] [--seconds 1.0] [--dir PATH] [--work-us 300]

Part 1, raw appends/s of ``AuditLog.append`` with a file sink at concurrency 1, 16 and 64, for
``durability: fsync`` (group commit) and ``buffered``, against a loop that does not audit ("noop").
Part 2, "gate-shaped" requests/s: each request first burns ``--work-us`` of CPU (a stand-in for
authn, policy and proxying in the same event loop) and then appends its record; this is the
figure behind the goal "group commit costs under 15% of throughput". Part 3, microseconds per
record for ``record_body`` + canonical JSON + SHA-256, and for ``verify_files``.

The file lives in ``--dir`` (default: a folder next to this script, i.e. the real disk; /tmp may
be a tmpfs where fsync is free). Medians of ``--runs`` runs; ratios against noop from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.record import canonical, chain_hash, record_body
from gatekeeper.audit.sinks import FileSink
from gatekeeper.audit.verify import verify_files
from gatekeeper.config import AuditConfig, AuditSinkConfig
from tests.audit.helpers import full_ctx


def _cfg(path: Path, durability: str) -> AuditConfig:
    sink = AuditSinkConfig(type="file", path=str(path), rotate_bytes=1 << 30)
    return AuditConfig(durability=durability, sinks=(sink,))


def _burn(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


async def _run(
    folder: Path, mode: str, concurrency: int, seconds: float, work_us: float
) -> tuple[float, float]:
    """(operations per second, records per fsync) for one configuration."""
    ctx = full_ctx()
    log: AuditLog | None = None
    if mode != "noop":
        path = folder / f"bench-{mode}-{concurrency}-{time.monotonic_ns()}.jsonl"
        log = AuditLog(_cfg(path, mode), replica="bench")
        await log.start()
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            if work_us:
                _burn(work_us)
            body = record_body(ctx, status=200, upstream_status=200, latency_ms=1.0)
            if log is not None:
                await log.append(body)
            else:
                await asyncio.sleep(0)  # yield like an append would
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    per_batch = 0.0
    if log is not None:
        sink = log.sinks[0]
        assert isinstance(sink, FileSink)
        per_batch = done / max(1, sink.batches)
        await log.close()
    return done / elapsed, per_batch


def _micro(n: int = 20_000) -> dict[str, float]:
    ctx = full_ctx()
    out: dict[str, float] = {}

    def timeit(fn: Callable[[], Any]) -> float:
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n * 1e6

    body = record_body(ctx, status=200, upstream_status=200, latency_ms=1.0)
    rec = {**body, "v": 1, "seq": 1, "ts": "2026-11-25T20:01:02.345678Z", "replica": "gk-0",
           "prev_hash": "sha256:" + "0" * 64}  # fmt: skip
    out["record_body"] = timeit(
        lambda: record_body(ctx, status=200, upstream_status=200, latency_ms=1.0)
    )
    out["canonical"] = timeit(lambda: canonical(rec))
    out["canonical+hash"] = timeit(lambda: chain_hash(rec["prev_hash"], rec))
    small = {**rec, "http": {**rec["http"], "latency_ms": 0.00001}}  # forces the stdlib path
    out["canonical+hash (stdlib fallback)"] = timeit(lambda: chain_hash(rec["prev_hash"], small))
    return out


async def _verify_cost(folder: Path, n: int = 20_000) -> float:
    path = folder / "verify.jsonl"
    log = AuditLog(_cfg(path, "buffered"), replica="bench")
    await log.start()
    ctx = full_ctx()
    for start in range(0, n, 500):
        await asyncio.gather(
            *(
                log.append(record_body(ctx, status=200, upstream_status=200, latency_ms=1.0))
                for _ in range(min(500, n - start))
            )
        )
    await log.close()
    t = time.perf_counter()
    report = verify_files([str(path)])
    assert report.ok and report.records == n
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--work-us", type=float, default=300.0)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    base = Path(args.dir) if args.dir else Path(__file__).resolve().parent
    folder = Path(tempfile.mkdtemp(prefix=".audit-bench-", dir=base))
    try:
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover
            pass
        print(f"audit bench: {args.runs} runs x {args.seconds}s, files in {folder}")
        for title, work in (("raw appends/s", 0.0), (f"requests/s, {args.work_us:.0f}us CPU each",
                                                     args.work_us)):  # fmt: skip
            print(f"\n== {title} (median of {args.runs}; ratio vs noop; records per fsync)")
            print(f"{'concurrency':>11} {'noop':>10} {'buffered':>18} {'fsync':>26}")
            for conc in (1, 16, 64):
                res: dict[str, list[tuple[float, float]]] = {
                    "noop": [],
                    "buffered": [],
                    "fsync": [],
                }
                for _ in range(args.runs):
                    for mode in res:
                        res[mode].append(asyncio.run(_run(folder, mode, conc, args.seconds, work)))
                med = {m: statistics.median(r[0] for r in v) for m, v in res.items()}
                per = statistics.median(r[1] for r in res["fsync"])
                print(
                    f"{conc:>11} {med['noop']:>10.0f} "
                    f"{med['buffered']:>10.0f} ({med['buffered'] / med['noop']:4.2f}) "
                    f"{med['fsync']:>10.0f} ({med['fsync'] / med['noop']:4.2f}) {per:6.1f}/fsync"
                )
        print("\n== per record (µs)")
        for name, us in _micro().items():
            print(f"{name:>34}: {us:6.2f}")
        print(f"{'verify_files per record':>34}: {asyncio.run(_verify_cost(folder)):6.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
