"""Where the gate's added latency goes at a fixed rate: the client's view beside the gate's own.

Starts the benchmark stack of ``bench/fixtures.py`` (nginx upstream, private Redis, the full allow
path, fsync audit with seals) and, per round, drives direct, the bare proxy and the gate at
``--rate`` req/s with ``bench/openloop.py`` (latency from the moment each request was written).
For the gate it also reads ``/metrics`` before and after the round and prints, from the gate's
own histograms: the mean time per pipeline stage, the decision time (authn to a durable audit
record), the audit group commit, the file sink's write as the event loop waits for it and the
write + fsync on the sink's thread (mean, and p50/p99 interpolated in the buckets as Prometheus'
``histogram_quantile`` does), lines per commit, and the upstream time.

Run: ``.venv/bin/python bench/latency_budget.py [--rate 500] [--duration 6] [--rounds 3]
[--workers 1] [--set audit.signing_key=null]``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openloop
from fixtures import SUBMIT_PATH, Stack, add_set_option, job_body, request_headers

_SAMPLE = re.compile(r"^(gatekeeper_[a-z_]+)(\{[^}]*\})? (\S+)$")
_WATCHED = (
    "decision",
    "stage",
    "upstream",
    "audit_commit",
    "audit_write",
    "audit_fsync",
    "audit_b",
)

Samples = dict[tuple[str, str], float]


def scrape(port: int) -> Samples:
    """The gate's histogram samples (name, label text) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: Samples = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and any(f"gatekeeper_{w}" in m.group(1) for w in _WATCHED):
            out[m.group(1), m.group(2) or ""] = float(m.group(3))
    return out


def _labels(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', text))


def histogram(delta: Samples, name: str, **match: str) -> tuple[int, float, float, float]:
    """Count, mean, p50 and p99 over the round (seconds) of every series of ``name`` whose labels
    include ``match``, summed as Prometheus' ``sum by (le)`` would (e.g. all routes)."""
    count = total = 0.0
    cumulative: dict[float, float] = {}
    for (sample, text), value in delta.items():
        labels = _labels(text)
        if any(labels.get(k) != v for k, v in match.items()):
            continue
        if sample == f"{name}_count":
            count += value
        elif sample == f"{name}_sum":
            total += value
        elif sample == f"{name}_bucket":
            le = float(labels["le"])
            cumulative[le] = cumulative.get(le, 0.0) + value
    buckets = sorted(cumulative.items())
    p50, p99 = (quantile(q, buckets) for q in (0.5, 0.99))
    return int(count), (total / count if count else 0.0), p50, p99


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Linear interpolation inside the bucket holding rank q (Prometheus' histogram_quantile)."""
    if not buckets or buckets[-1][1] <= 0:
        return 0.0
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (
                (rank - lower_count) / (cumulative - lower_count) if cumulative > lower_count else 1
            )
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, cumulative
    return lower_bound


# (title, histogram, labels) of the gate's own time, in the order a request meets them.
BUDGET_PARTS = (
    ("decision (authn to durable record)", "gatekeeper_decision_seconds", {}),
    ("audit group commit", "gatekeeper_audit_commit_seconds", {}),
    ("audit file write, as the loop waits", "gatekeeper_audit_write_seconds", {"sink": "file"}),
    ("  of which write + fsync (its thread)", "gatekeeper_audit_fsync_seconds", {}),
    ("upstream (to the answer's end)", "gatekeeper_upstream_seconds", {}),
)


def budget_figures(before: Samples, after: Samples) -> dict[str, Any]:
    """The gate's own latency budget between two scrapes: µs per stage and per part, lines/commit."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    stages = sorted({_labels(t)["stage"] for (s, t) in delta if s.endswith("stage_seconds_count")})
    us = 1e6
    out: dict[str, Any] = {
        "stage_mean_us": {
            stage: round(histogram(delta, "gatekeeper_stage_seconds", stage=stage)[1] * us, 1)
            for stage in stages
        }
    }
    for title, name, match in BUDGET_PARTS:
        n, mean, p50, p99 = histogram(delta, name, **match)
        out[title.strip()] = {
            "n": n,
            "mean_us": round(mean * us),
            "p50_us": round(p50 * us),
            "p99_us": round(p99 * us),
        }
    n, mean, _, _ = histogram(delta, "gatekeeper_audit_batch_records")
    out["lines_per_commit"] = round(mean, 2)
    out["commits"] = n
    return out


def budget(before: Samples, after: Samples) -> str:
    """``budget_figures`` as indented text lines."""
    fig = budget_figures(before, after)
    stages = ", ".join(f"{k} {v:.0f}" for k, v in fig["stage_mean_us"].items())
    lines = [f"  stages (mean µs): {stages}"]
    for title, _, _ in BUDGET_PARTS:
        f = fig[title.strip()]
        lines.append(
            f"  {title:38s} mean {f['mean_us']:6.0f} µs  p50 {f['p50_us']:6.0f}  "
            f"p99 {f['p99_us']:6.0f}  (n={f['n']})"
        )
    lines.append(
        f"  lines per group commit: {fig['lines_per_commit']:.2f} ({fig['commits']} commits)"
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--duration", type=float, default=6, help="seconds per target per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--registry-size", type=int, default=1000)
    add_set_option(ap)
    args = ap.parse_args()

    def fixed_rate(url: str, seconds: float) -> dict[str, float]:
        result = uvloop.run(
            openloop.run(
                url, rate=args.rate, duration_s=seconds, method="POST", body=body, headers=headers
            )
        )
        summary: dict[str, float] = result.summary()["from_sent_ms"]
        return summary

    with tempfile.TemporaryDirectory(prefix="gk-latency-") as folder:
        stack = Stack(Path(folder))
        try:
            path, cfg = stack.bench_gate_config(
                "gate", workers=args.workers, registry_size=args.registry_size, sets=args.set
            )
            headers = request_headers(stack.token())
            body = job_body()
            stack.start_gate("gate", path, cfg)
            admin = int(cfg["admin"]["port"])
            urls = {
                "direct": f"{stack.upstream_url}{SUBMIT_PATH}",
                f"bare-w{args.workers}": f"http://127.0.0.1:{stack.start_bare(args.workers)}"
                f"{SUBMIT_PATH}",
                f"gate-w{args.workers}": f"http://127.0.0.1:{cfg['listen']['port']}{SUBMIT_PATH}",
            }
            for url in urls.values():
                fixed_rate(url, 1.0)  # warm-up at the same rate
            print(f"{args.rate:g} req/s, {args.duration:g} s per target, latency from the send")
            for round_no in range(1, args.rounds + 1):
                row, detail = [], ""
                for name, url in urls.items():
                    before = scrape(admin) if name.startswith("gate") else {}
                    s = fixed_rate(url, args.duration)
                    row.append(f"{name} p50 {s['p50']:.3f} p99 {s['p99']:.3f} ms")
                    if before:
                        detail = budget(before, scrape(admin))
                print(f"round {round_no}: " + " | ".join(row))
                print(detail, flush=True)
        finally:
            stack.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
