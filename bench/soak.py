"""Soak: the full allow path at a fixed rate for a long time; RSS every 10 s must stay flat (± 5%).

Run through ``bench/soak`` (defaults: 500 req/s for 600 s, workers 1) or directly:

    .venv/bin/python bench/soak.py [--rate 500] [--duration 600] [--workers 1] [--interval 10]

Same processes and request as ``bench/run``'s gate-w1 target (bench/fixtures.py). The load is
open-loop (bench/openloop.py) in back-to-back slices of ``--interval`` seconds; after each slice
the gate's resident set (the process and every process under it: workers)
is sampled.
The first minute is warm-up (caches, allocator arenas, the audit file's page cache): flatness is
judged on the samples after it, against their first, and against their median.
Writes ``bench/results/<date>-<host>-soak.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openloop
import uvloop
from fixtures import (
    ROOT,
    SUBMIT_PATH,
    Stack,
    job_body,
    machine,
    request_headers,
    result_stem,
    tree_pids,
)


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` plus every process under it (workers), in KiB."""
    pids = tree_pids(pid)
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description="gatekeeper soak test (RSS over time)")
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds not judged for flatness")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--registry-size", type=int, default=100_000)
    ap.add_argument(
        "--keep", action="store_true", help="keep the working folder (audit files, logs)"
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gk-soak-"))
    stack = Stack(tmp, remove_folder=not args.keep)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _run(args, stack)
    finally:
        stack.close()


def _run(args: argparse.Namespace, stack: Stack) -> int:
    redis_url, inputs = stack.start_backends(args.registry_size, nginx_workers=1)
    path, cfg = stack.gate_config("soak", inputs, workers=args.workers, redis_url=redis_url)
    gate = stack.start_gate("soak", path, cfg)
    url = f"http://127.0.0.1:{cfg['listen']['port']}{SUBMIT_PATH}"
    body, headers = job_body(), request_headers(stack.token())
    samples: list[dict[str, Any]] = [{"t_s": 0.0, "rss_mib": rss_kib(gate.pid) / 1024}]
    print(f"soak: {args.rate:g} req/s for {args.duration:g} s; RSS at start "
          f"{samples[0]['rss_mib']:.1f} MiB", flush=True)  # fmt: skip
    t0 = time.monotonic()
    errors = 0
    statuses: dict[str, int] = {}
    while time.monotonic() - t0 < args.duration:
        res = uvloop.run(
            openloop.run(
                url, rate=args.rate, duration_s=args.interval, method="POST", body=body,
                headers=headers,
            )
        )  # fmt: skip
        s = res.summary()
        errors += res.errors
        for k, v in s["statuses"].items():  # type: ignore[attr-defined]
            statuses[k] = statuses.get(k, 0) + v
        lat = s["from_scheduled_ms"]
        sample = {
            "t_s": round(time.monotonic() - t0, 1),
            "rss_mib": round(rss_kib(gate.pid) / 1024, 2),
            "p50_ms": lat.get("p50"),  # type: ignore[union-attr]
            "p99_ms": lat.get("p99"),  # type: ignore[union-attr]
            "requests": s["requests"],
            "errors": res.errors,
        }
        samples.append(sample)
        print(
            f"t={sample['t_s']:6.1f}s rss {sample['rss_mib']:8.2f} MiB  p50 {sample['p50_ms']} ms"
            f"  p99 {sample['p99_ms']} ms  errors {res.errors}",
            flush=True,
        )
    judged = [s for s in samples if s["t_s"] >= args.warmup] or samples[1:]
    rss = [s["rss_mib"] for s in judged]
    first, med = rss[0], statistics.median(rss)
    drift = {
        "vs_first_pct": round(100 * (max(rss) - first) / first, 2),
        "min_vs_first_pct": round(100 * (min(rss) - first) / first, 2),
        "max_dev_from_median_pct": round(100 * max(abs(r - med) for r in rss) / med, 2),
    }
    flat = abs(drift["vs_first_pct"]) <= 5 and abs(drift["min_vs_first_pct"]) <= 5
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": vars(args),
        "samples": samples,
        "drift": drift,
        "flat_within_5pct": flat,
        "errors": errors,
        "statuses": statuses,
    }
    lines = [
        f"# gatekeeper soak — {result['date']}",
        "",
        f"{args.rate:g} req/s (open loop) for {args.duration:g} s, workers {args.workers}, "
        f"full allow path (bench/fixtures.py); RSS of the gate every {args.interval:g} s.",
        f"Judged after {args.warmup:g} s of warm-up: max {drift['vs_first_pct']:+.2f}% / min "
        f"{drift['min_vs_first_pct']:+.2f}% vs the first judged sample, max deviation from the "
        f"median {drift['max_dev_from_median_pct']:.2f}% -> "
        f"{'FLAT (within ±5%)' if flat else 'NOT flat'}. Errors: {errors}; statuses {statuses}.",
        "",
        "| t s | RSS MiB | p50 ms | p99 ms |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for s in samples:
        lines.append(f"| {s['t_s']} | {s['rss_mib']:.2f} | {s.get('p50_ms', '')} | "
                     f"{s.get('p99_ms', '')} |")  # fmt: skip
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_write:
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        stem = f"{datetime.date.today().isoformat()}-{result['machine']['host']}-soak"
        if args.duration < 600:
            stem += f"-{int(args.duration)}s"
        stem = result_stem(out, stem)
        (out / f"{stem}.md").write_text(report)
        (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"soak: wrote bench/results/{stem}.md and .json")
    return 0 if flat and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
