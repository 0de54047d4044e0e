"""End-to-end throughput and latency of the gate against nginx and a bare aiohttp proxy, one run.

Run through ``bench/run`` (it installs nginx and wrk first) or directly:

    .venv/bin/python bench/loadbench.py [--duration 10] [--runs 3] [--connections 32] [--quick]

Targets (every one gets the same request: POST of a Slurm job with a bearer token and an
``X-Forwarded-For``, except the read route, which is a GET):

  direct        wrk -> nginx upstream (small JSON)
  nginx         wrk -> nginx proxy_pass (keep-alive pool) -> upstream
  bare-w1/-w2   wrk -> bench/bare_proxy.py (1 / 2 processes) -> upstream
  gate-w1/-w2   wrk -> gatekeeper, full allow path (bench/fixtures.py), workers 1 / 2
                (every -w2 target, bare proxy included, pins each process to a CPU of its own:
                ``worker_cpu_affinity: auto``)
  read-w1/-w2   wrk -> gatekeeper, read route (adapter: none, GET): authn, ownership, geo, policy
  buffered-w2   wrk -> gatekeeper as gate-w2 with ``audit.durability: buffered`` (no fsync): what
                the durable group commit costs, measured in the same run

The rounds are interleaved (round 1 of every target, then round 2, ...) so a slow minute of the
shared machine hits every target alike; each figure is the median of ``--runs`` rounds. Then a
fixed-rate pass (bench/openloop.py, 500 req/s) measures the latency each hop adds over direct.
Results go to ``bench/results/<date>-<host>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openloop
from fixtures import (
    READ_PATH,
    ROOT,
    SUBMIT_PATH,
    Stack,
    add_set_option,
    cpu_seconds,
    job_body,
    machine,
    machine_busy_seconds,
    request_headers,
    result_stem,
    tree_pids,
)
from intervals import median_interval
from latency_budget import BUDGET_PARTS, budget_figures, scrape

LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "GKJSON {\"requests\":%d,\"duration_us\":%d,\"p50\":%d,\"p90\":%d,\"p99\":%d," ..
    "\"p999\":%d,\"max\":%d,\"status_errors\":%d,\"socket_errors\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


def lua_script(tmp: Path, name: str, method: str, headers: list[str], body: bytes) -> Path:
    lines = [f'wrk.method = "{method}"']
    for h in headers:
        k, _, v = h.partition(": ")
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    if body:
        lines.append(f"wrk.body = [==[{body.decode()}]==]")
    path = tmp / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n" + LUA_DONE)
    return path


def wrk(url: str, script: Path, *, threads: int, conns: int, seconds: float) -> dict[str, Any]:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{int(seconds)}s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    for line in out.splitlines():
        if line.startswith("GKJSON "):
            r: dict[str, Any] = json.loads(line[7:])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            return r
    raise RuntimeError(f"wrk printed no result:\n{out}")


def med(values: list[float]) -> float:
    return float(statistics.median(values))


def main() -> int:
    ap = argparse.ArgumentParser(description="gatekeeper end-to-end load benchmark")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk round")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument(
        "--peak-connections", default="64,128",
        help="more wrk connection counts for the goal's pair (bare-w2, gate-w2) in every round; "
        "their peak over all counts is reported beside the fixed --connections figures "
        "('' to skip)",
    )  # fmt: skip
    ap.add_argument(
        "--pairs", type=int, default=8,
        help="short paired rounds of the goal's pair (bare-w2, gate-w2), alternating, for the "
        "median ratio with a 95%% interval (0 to skip)",
    )  # fmt: skip
    ap.add_argument("--pair-seconds", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=500.0, help="fixed-rate pass, req/s")
    ap.add_argument("--rate-duration", type=float, default=10.0)
    ap.add_argument("--registry-size", type=int, default=100_000)
    ap.add_argument("--only", default="", help="comma-separated target names")
    ap.add_argument("--quick", action="store_true", help="1 round of 3 s, 3 s fixed-rate")
    ap.add_argument(
        "--keep", action="store_true", help="keep the working folder (audit files, logs)"
    )
    ap.add_argument("--no-write", action="store_true", help="print only, write no results file")
    add_set_option(ap)
    args = ap.parse_args()
    if args.quick:
        args.duration, args.runs, args.rate_duration, args.pairs = 3.0, 1, 3.0, 2

    tmp = Path(tempfile.mkdtemp(prefix="gk-bench-"))
    stack = Stack(tmp, remove_folder=not args.keep)
    # SIGTERM must run the finally below, or nginx, Redis and the gates outlive the benchmark.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    try:
        return _run(args, stack, tmp, started)
    finally:
        stack.close()


def _run(args: argparse.Namespace, stack: Stack, tmp: Path, started: float) -> int:
    only = {t for t in args.only.split(",") if t}
    want = lambda name: not only or name in only  # noqa: E731
    kept = "kept" if args.keep else "removed at the end; --keep keeps it"
    print(f"bench: working folder {tmp} ({kept})", flush=True)
    print(f"bench: upstream, Redis, inputs (registry {args.registry_size} entities)", flush=True)
    redis_url, inputs = stack.start_backends(args.registry_size)
    token = stack.token()
    body = job_body()
    headers = request_headers(token)
    post = lua_script(tmp, "post", "POST", headers, body)
    get = lua_script(tmp, "get", "GET", headers[:2], b"")

    def affinity(workers: int) -> str:
        # The two-process targets, bare proxy and gates alike, pin each process to a CPU of its
        # own (worker_cpu_affinity: auto; bare_proxy.py --cpu-affinity auto); one process floats.
        return "auto" if workers > 1 else "none"

    targets: list[tuple[str, str, Path]] = []  # name, url, script
    pids: dict[str, int] = {}  # the Python proxy under test, for CPU per request
    admins: dict[str, int] = {}  # a gate target's admin port: its own latency budget
    targets.append(("direct", f"{stack.upstream_url}{SUBMIT_PATH}", post))
    targets.append(("nginx", f"http://127.0.0.1:{stack.nginx_proxy_port}{SUBMIT_PATH}", post))
    for w in (1, 2):
        if want(f"bare-w{w}"):
            port = stack.start_bare(w, cpu_affinity=affinity(w))
            pids[f"bare-w{w}"] = stack.procs[-1].pid
            targets.append((f"bare-w{w}", f"http://127.0.0.1:{port}{SUBMIT_PATH}", post))
    for w in (1, 2):
        if not (want(f"gate-w{w}") or want(f"read-w{w}")):
            continue
        name = f"gate-w{w}"
        print(f"bench: starting {name}", flush=True)
        sets = [f"worker_cpu_affinity={affinity(w)}", *args.set]
        path, cfg = stack.gate_config(name, inputs, workers=w, redis_url=redis_url, sets=sets)
        pids[f"gate-w{w}"] = pids[f"read-w{w}"] = stack.start_gate(name, path, cfg).pid
        admins[f"gate-w{w}"] = admins[f"read-w{w}"] = int(cfg["admin"]["port"])
        base = f"http://127.0.0.1:{cfg['listen']['port']}"
        if want(f"gate-w{w}"):
            targets.append((f"gate-w{w}", base + SUBMIT_PATH, post))
        if want(f"read-w{w}"):
            targets.append((f"read-w{w}", base + READ_PATH, get))
    if want("buffered-w2"):
        # The same two-worker gate without the durable commit (audit.durability: buffered):
        # gate-w2 against it is what the fsync group commit costs in this run.
        print("bench: starting buffered-w2", flush=True)
        sets = [f"worker_cpu_affinity={affinity(2)}", *args.set, "audit.durability=buffered"]
        path, cfg = stack.gate_config(
            "buffered-w2", inputs, workers=2, redis_url=redis_url, sets=sets
        )
        pids["buffered-w2"] = stack.start_gate("buffered-w2", path, cfg).pid
        targets.append(
            ("buffered-w2", f"http://127.0.0.1:{cfg['listen']['port']}{SUBMIT_PATH}", post)
        )
    targets = [t for t in targets if want(t[0])]

    # Correctness first: every target must answer 200 to the exact request measured.
    for name, url, script in targets:
        r = wrk(url, script, threads=1, conns=4, seconds=2)
        if r["status_errors"] or r["socket_errors"] or r["requests"] == 0:
            print(f"bench: {name} failed its warm-up: {r}", file=sys.stderr)
            for log in sorted(tmp.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-2000:]}", file=sys.stderr)
            return 1

    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in targets}
    peak_conns = [int(c) for c in args.peak_connections.split(",") if c.strip()]
    for i in range(args.runs):
        for name, url, script in targets:
            tree = tree_pids(pids[name]) if name in pids else []
            before = sum(cpu_seconds(pid) for pid in tree)
            busy = machine_busy_seconds()
            r = wrk(
                url, script, threads=args.threads, conns=args.connections, seconds=args.duration
            )
            busy = machine_busy_seconds() - busy
            if r["requests"]:
                r["machine_us_per_request"] = round(1e6 * busy / r["requests"], 1)
            if tree and r["requests"]:
                spent = sum(cpu_seconds(pid) for pid in tree) - before
                r["cpu_us_per_request"] = round(1e6 * spent / r["requests"], 1)
            rounds[name].append(r)
            print(
                f"round {i + 1} {name:10s} {r['rps']:9.0f} req/s  p50 {r['p50'] / 1000:6.2f} ms"
                f"  p99 {r['p99'] / 1000:6.2f} ms  errors {r['status_errors']}"
                f"/{r['socket_errors']}",
                flush=True,
            )
            if name in PEAK_TARGETS and peak_conns:
                r["rps_by_connections"] = {args.connections: r["rps"]}
                for c in peak_conns:
                    extra = wrk(url, script, threads=args.threads, conns=c, seconds=args.duration)
                    errors = extra["status_errors"] + extra["socket_errors"]
                    if errors:  # answers that are not 200 are no throughput: left out, said
                        r.setdefault("errors_by_connections", {})[c] = errors
                        print(f"        {name}: {errors} errors at {c} connections", flush=True)
                        continue
                    r["rps_by_connections"][c] = extra["rps"]
                print(
                    f"        {name:10s} "
                    + "  ".join(f"c{c} {v:.0f}" for c, v in r["rps_by_connections"].items()),
                    flush=True,
                )
    summary: dict[str, dict[str, float]] = {}
    for name, rs in rounds.items():
        summary[name] = {
            "rps": med([r["rps"] for r in rs]),
            "p50_ms": med([r["p50"] for r in rs]) / 1000,
            "p99_ms": med([r["p99"] for r in rs]) / 1000,
            "p999_ms": med([r["p999"] for r in rs]) / 1000,
            "errors": float(sum(r["status_errors"] + r["socket_errors"] for r in rs)),
        }
        peaks = [max(r["rps_by_connections"].values()) for r in rs if "rps_by_connections" in r]
        if peaks:
            summary[name]["peak_rps"] = med(peaks)
        for per_request in ("cpu_us_per_request", "machine_us_per_request"):
            values = [r[per_request] for r in rs if per_request in r]
            if values:
                summary[name][per_request] = med(values)

    short = _paired_short_rounds(args, targets)
    fixed = _fixed_rate(args, targets, body, headers, admins)
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "wrk": f"-t{args.threads} -c{args.connections} -d{args.duration:g}s",
            "peak_connections": [args.connections, *peak_conns] if peak_conns else [],
            "runs": args.runs,
            "registry_size": args.registry_size,
            "rate": args.rate,
            "rate_duration_s": args.rate_duration,
            "gate_overrides": args.set,
        },
        "summary": summary,
        "ratios": _ratios(summary),
        "paired_ratios": paired_ratios(rounds),
        "paired_short_rounds": short,
        "rounds": rounds,
        "fixed_rate": fixed,
        "elapsed_s": round(time.time() - started, 1),
    }
    report = render(result)
    print(report)
    if not args.no_write:
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        stem = result_stem(out, f"{datetime.date.today().isoformat()}-{result['machine']['host']}")
        (out / f"{stem}.md").write_text(report)
        (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"bench: wrote bench/results/{stem}.md and .json")
    return 0


def _paired_short_rounds(
    args: argparse.Namespace, targets: list[tuple[str, str, Path]]
) -> dict[str, Any]:
    """``--pairs`` short wrk rounds of gate-w2 and bare-w2 back to back (order alternating), so
    the two rounds of a pair are seconds apart: their median ratio with a distribution-free
    interval says what three long rounds a minute apart cannot (as ``bench/ab.py`` does)."""
    by_name = {name: (url, script) for name, url, script in targets}
    bare, gate = PEAK_TARGETS
    if args.pairs <= 0 or bare not in by_name or gate not in by_name:
        return {}
    ratios: list[float] = []
    for i in range(args.pairs):
        rps: dict[str, float] = {}
        for name in (bare, gate) if i % 2 == 0 else (gate, bare):
            url, script = by_name[name]
            r = wrk(url, script, threads=args.threads, conns=args.connections,
                    seconds=args.pair_seconds)  # fmt: skip
            if r["status_errors"] or r["socket_errors"] or not r["requests"]:
                raise RuntimeError(f"{name}: errors in paired round {i + 1}: {r}")
            rps[name] = r["rps"]
        ratios.append(round(rps[gate] / rps[bare], 3))
        print(f"pair {i + 1} {gate}/{bare} {ratios[-1]:.3f}", flush=True)
    lo, hi = median_interval(ratios)
    return {
        "ratio": f"{gate}/{bare}",
        "pairs": ratios,
        "seconds": args.pair_seconds,
        "median": round(med(ratios), 3),
        "interval_95": [lo, hi] if len(ratios) >= 6 else None,  # fewer: only the range
        "faster": sum(r > 1 for r in ratios),
    }


def _fixed_rate(
    args: argparse.Namespace,
    targets: list[tuple[str, str, Path]],
    body: bytes,
    headers: list[str],
    admins: dict[str, int],
) -> dict[str, Any]:
    """Open-loop pass at ``args.rate`` req/s; added latency of every target over direct, and
    each gate's own budget over the measured run (``latency_budget.budget_figures``)."""
    import uvloop

    out: dict[str, Any] = {}
    for name, url, script in targets:
        if name in ("bare-w2", "read-w2", "buffered-w2"):
            continue
        get = script.stem == "get"
        method, b, h = ("GET", b"", headers[:2]) if get else ("POST", body, headers)
        # a short warm-up at the same rate, then the measured run
        uvloop.run(
            openloop.run(url, rate=args.rate, duration_s=1, method=method, body=b, headers=h)
        )
        before = scrape(admins[name]) if name in admins else None
        res = uvloop.run(
            openloop.run(
                url, rate=args.rate, duration_s=args.rate_duration, method=method, body=b, headers=h
            )
        )
        out[name] = res.summary()
        if before is not None:
            out[name]["gate_budget"] = budget_figures(before, scrape(admins[name]))
        s = out[name]["from_scheduled_ms"]
        print(
            f"fixed {args.rate:g}/s {name:10s} p50 {s['p50']:.3f} ms  p99 {s['p99']:.3f} ms"
            f"  p99.9 {s['p99.9']:.3f} ms  errors {res.errors} statuses {res.statuses}",
            flush=True,
        )
    if "direct" in out:
        base = out["direct"]
        for s in out.values():
            for kind in ("from_scheduled_ms", "from_sent_ms"):
                s[f"added_{kind}"] = {
                    p: round(s[kind][p] - base[kind][p], 4) for p in ("p50", "p99", "p99.9")
                }
    return out


# The goal's pair, also measured at --peak-connections: a gate that waits for a group commit
# before it forwards needs more requests in flight than a proxy that never waits on the disk
# to reach its throughput (at 32 connections it is bound by the commit's latency, not the CPU).
PEAK_TARGETS = ("bare-w2", "gate-w2")

PAIRED = (("gate-w2", "bare-w2"), ("gate-w1", "bare-w1"), ("buffered-w2", "bare-w2"),
          ("gate-w2", "buffered-w2"))  # fmt: skip


def paired_ratios(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Round i of one target over round i of another, for the goal's pairs: the rounds are
    interleaved, so the two were measured a minute or two apart, and a slow phase of the shared
    machine hits both. Their median moves less than the ratio of medians when a round of one
    side lands in such a phase."""
    out: dict[str, dict[str, Any]] = {}
    for a, b in PAIRED:
        pairs = list(zip(rounds.get(a, []), rounds.get(b, []), strict=False))
        per_round = [round(x["rps"] / y["rps"], 3) for x, y in pairs if y["rps"] > 0]
        if per_round:
            out[f"{a}/{b}"] = {"rounds": per_round, "median": round(med(per_round), 3)}
    peak = [
        round(max(x["rps_by_connections"].values()) / max(y["rps_by_connections"].values()), 3)
        for x, y in zip(rounds.get(PEAK_TARGETS[1], []), rounds.get(PEAK_TARGETS[0], []),
                        strict=False)
        if "rps_by_connections" in x and "rps_by_connections" in y
    ]  # fmt: skip
    if peak:
        out[f"{PEAK_TARGETS[1]}/{PEAK_TARGETS[0]} (peak)"] = {
            "rounds": peak, "median": round(med(peak), 3)
        }  # fmt: skip
    return out


def _ratios(summary: dict[str, dict[str, float]]) -> dict[str, float]:
    r: dict[str, float] = {}

    def ratio(a: str, b: str) -> None:
        if a in summary and b in summary and summary[b]["rps"] > 0:
            r[f"{a}/{b}"] = round(summary[a]["rps"] / summary[b]["rps"], 3)

    gate, bare = (summary.get(t, {}).get("peak_rps") for t in PEAK_TARGETS[::-1])
    if gate and bare:
        r[f"{PEAK_TARGETS[1]}/{PEAK_TARGETS[0]} (peak over connections)"] = round(gate / bare, 3)
    for w in (1, 2):
        ratio(f"gate-w{w}", f"bare-w{w}")
        ratio(f"gate-w{w}", "nginx")
        ratio(f"read-w{w}", f"bare-w{w}")
    ratio("buffered-w2", "bare-w2")
    ratio("gate-w2", "buffered-w2")
    ratio("bare-w1", "nginx")
    ratio("bare-w2", "nginx")
    for w in (1, 2):
        # CPU efficiency: the bare proxy's CPU per request over the gate's (1.0 = as cheap).
        bare, gate = summary.get(f"bare-w{w}", {}), summary.get(f"gate-w{w}", {})
        if bare.get("cpu_us_per_request") and gate.get("cpu_us_per_request"):
            r[f"CPU per request, bare-w{w} over gate-w{w}"] = round(
                bare["cpu_us_per_request"] / gate["cpu_us_per_request"], 3
            )
    ratio("nginx", "direct")
    return r


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    s = res["settings"]
    lines = [
        f"# gatekeeper load benchmark — {res['date']}",
        "",
        f"Machine: {m['host']}, {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, "
        f"Python {m['python']}, aiohttp {m['aiohttp']}, uvloop {m['uvloop']}; {m['nginx']}; "
        f"{m['wrk']}; {m['redis']}.",
        "",
        f"Load generator, upstream and proxy share the machine's cores. wrk `{s['wrk']}`, "
        f"medians of {s['runs']} interleaved rounds; registry {s['registry_size']} generated "
        "entities + the demo registry. Full allow path: RS256 (one token, cached after the first "
        "verification), ownership, geo (X-Forwarded-For from a trusted proxy), Slurm body, US "
        "pack, Redis quota (leases as configured), fsync group-commit audit with seals, "
        "decision + outcome lines. The two-process targets (bare-w2, gate-w2, read-w2, "
        "buffered-w2) pin each process to a CPU of its own (`worker_cpu_affinity: auto`; the "
        "bare proxy's `--cpu-affinity auto`); the one-process targets are not pinned.",
        "",
        "Proxy CPU: user + system time of the proxy's processes and threads (not wrk, nginx or "
        "Redis) over the round, per request answered; steadier than req/s on a shared machine. "
        "Machine CPU: all of the machine's busy time over the round per request (wrk, nginx, "
        "Redis, the kernel's writeback after fsync, ...): on a saturated machine req/s follows it.",
    ]
    if s.get("gate_overrides"):
        lines += ["", f"Gate config overrides: `{'`, `'.join(s['gate_overrides'])}`."]
    lines += [
        "",
        "| target | req/s | p50 ms | p99 ms | p99.9 ms | errors | proxy CPU µs/req "
        "| machine CPU µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, v in res["summary"].items():
        cpu, mach = v.get("cpu_us_per_request"), v.get("machine_us_per_request")
        lines.append(
            f"| {name} | {v['rps']:.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | "
            f"{v['p999_ms']:.2f} | {v['errors']:.0f} | {'-' if cpu is None else f'{cpu:.0f}'} "
            f"| {'-' if mach is None else f'{mach:.0f}'} |"
        )
    by_conns = {
        name: rs for name, rs in res["rounds"].items() if any("rps_by_connections" in r for r in rs)
    }
    if by_conns:
        lines += [
            "",
            f"Throughput by wrk connections (medians; peak = each round's best, median): "
            f"{', '.join(map(str, s['peak_connections']))}",
            "",
        ]
        for name, rs in by_conns.items():
            per_c: dict[str, list[float]] = {}
            for r in rs:
                for c, v in r.get("rps_by_connections", {}).items():
                    per_c.setdefault(str(c), []).append(v)
            lines.append(
                f"- {name}: "
                + ", ".join(f"c{c} {med(v):.0f}" for c, v in per_c.items())
                + f"; peak {res['summary'][name]['peak_rps']:.0f} req/s"
            )
    lines += ["", "Ratios of medians (same run):", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in res["ratios"].items()]
    if res.get("paired_ratios"):
        lines += ["", "Round by round (round i of each; interleaved, so adjacent in time):", ""]
        lines += [
            f"- {k}: {', '.join(f'{x:.3f}' for x in v['rounds'])} (median {v['median']:.3f})"
            for k, v in res["paired_ratios"].items()
        ]
    short = res.get("paired_short_rounds")
    if short:
        ci = short["interval_95"]
        lines += [
            "",
            f"Paired short rounds ({len(short['pairs'])} pairs of {short['seconds']:g} s, the order "
            f"alternating, each pair seconds apart): {short['ratio']} "
            + ", ".join(f"{x:.3f}" for x in short["pairs"])
            + f"; median **{short['median']:.3f}**"
            + (
                f", 95% interval {ci[0]:.3f}-{ci[1]:.3f}"
                if ci
                else " (too few pairs for an interval)"
            )
            + f"; the gate faster in {short['faster']} of {len(short['pairs'])}.",
        ]
    fixed = res["fixed_rate"]
    if fixed:
        lines += [
            "",
            f"Fixed rate {s['rate']:g} req/s for {s['rate_duration_s']:g} s (open loop, latency "
            "from the scheduled send time; 'added' is over direct):",
            "",
            "| target | p50 ms | p99 ms | p99.9 ms | added p50 | added p99 | added p99.9 | "
            "errors | statuses |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, v in fixed.items():
            p = v["from_scheduled_ms"]
            a = v.get("added_from_scheduled_ms", {})
            lines.append(
                f"| {name} | {p['p50']:.3f} | {p['p99']:.3f} | {p['p99.9']:.3f} | "
                f"{a.get('p50', 0):.3f} | {a.get('p99', 0):.3f} | {a.get('p99.9', 0):.3f} | "
                f"{v['errors']} | {v['statuses']} |"
            )
    budgets = {name: v["gate_budget"] for name, v in (fixed or {}).items() if "gate_budget" in v}
    if budgets:
        lines += [
            "",
            "The gates' own time in that pass, from their /metrics (means, µs; "
            "bench/latency_budget.py explains each part):",
            "",
            "| target | stages | decision | audit commit | file write (loop) | write + "
            "fsync (thread) | upstream | lines/commit |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, b in budgets.items():
            parts = " | ".join(f"{b[t.strip()]['mean_us']:.0f}" for t, _, _ in BUDGET_PARTS)
            lines.append(
                f"| {name} | {sum(b['stage_mean_us'].values()):.0f} | {parts} | "
                f"{b['lines_per_commit']:.2f} |"
            )
    lines += ["", f"Elapsed: {res['elapsed_s']} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
