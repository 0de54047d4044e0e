"""Where a loaded gate spends its CPU: ``py-spy`` samples a ``workers: 1`` gate under wrk load.

Starts the benchmark stack of ``bench/fixtures.py`` (nginx upstream, private Redis, the full allow
path), drives the submit route (or the read route with ``--read``) with wrk for ``--duration``
seconds while ``py-spy record`` samples the gate, then prints the functions with the most samples
(self and cumulative) and writes the raw profile (speedscope JSON) next to it. Needs ``py-spy``
(``pip install py-spy``; not a project dependency: ptrace may be refused in some containers).

Run: ``.venv/bin/python bench/profile_gate.py [--read] [--duration 15] [--top 40]``;
``--bare`` measures ``bench/bare_proxy.py`` the same way (the baseline, for paired rounds).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import (
    READ_PATH,
    SUBMIT_PATH,
    SWITCH_KEYS,
    Stack,
    add_set_option,
    cpu_seconds,
    job_body,
    machine_busy_seconds,
    request_headers,
    thread_cpu,
    tree_pids,
)
from loadbench import lua_script


def summarise(profile: Path, top: int) -> str:
    """Self and cumulative sample counts per function from a speedscope file."""
    data = json.loads(profile.read_text())
    frames = data["shared"]["frames"]
    self_count: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    total = 0
    for prof in data["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            total += weight
            names = [
                f"{frames[i]['name']} ({Path(frames[i].get('file', '?')).name})" for i in stack
            ]
            if names:
                self_count[names[-1]] += weight
            for name in set(names):
                cumulative[name] += weight
    lines = [f"{total} samples", "", "self %  function"]
    lines += [f"{100 * n / total:5.1f}  {name}" for name, n in self_count.most_common(top)]
    lines += ["", "cum %   function"]
    lines += [f"{100 * n / total:5.1f}  {name}" for name, n in cumulative.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--registry-size", type=int, default=0)
    ap.add_argument("--read", action="store_true", help="profile the read route (GET)")
    ap.add_argument(
        "--bare", action="store_true",
        help="measure bench/bare_proxy.py instead (same request, same --workers): the baseline",
    )  # fmt: skip
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-spy", action="store_true", help="only measure, do not profile")
    ap.add_argument(
        "--cpu-affinity", choices=("none", "auto"), default="none",
        help="worker_cpu_affinity of the gate (or --cpu-affinity of the bare proxy)",
    )  # fmt: skip
    add_set_option(ap)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "gate.speedscope")
    args = ap.parse_args()
    if shutil.which("py-spy") is None and not Path(sys.executable).with_name("py-spy").exists():
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="gk-profile-") as tmpdir:
        tmp = Path(tmpdir)
        stack = Stack(tmp)
        try:
            redis_url, inputs = stack.start_backends(args.registry_size)
            if args.bare:
                port = stack.start_bare(args.workers, cpu_affinity=args.cpu_affinity)
                proc = stack.procs[-1]
            else:
                path, cfg = stack.gate_config(
                    "gate", inputs, workers=args.workers, redis_url=redis_url,
                    sets=[f"worker_cpu_affinity={args.cpu_affinity}", *args.set],
                )  # fmt: skip
                proc = stack.start_gate("gate", path, cfg)
                port = int(cfg["listen"]["port"])
            headers = request_headers(stack.token())
            if args.read:
                script = lua_script(tmp, "get", "GET", headers[:2], b"")
                url = f"http://127.0.0.1:{port}{READ_PATH}"
            else:
                script = lua_script(tmp, "post", "POST", headers, job_body())
                url = f"http://127.0.0.1:{port}{SUBMIT_PATH}"
            spy = None if args.no_spy else subprocess.Popen(
                [pyspy, "record", "--pid", str(proc.pid), "--format", "speedscope",
                 "--duration", str(args.duration), "--rate", "250", "--nonblocking",
                 "--output", str(args.out)] + (["--subprocesses"] if args.workers > 1 else []),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            time.sleep(0.5)
            pids = tree_pids(proc.pid)
            redis_pid = stack.redis.proc.pid if stack.redis and stack.redis.proc else None
            before = {pid: cpu_seconds(pid) for pid in pids}
            threads_before = {pid: thread_cpu(pid) for pid in pids}
            redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
            machine_before = machine_busy_seconds()
            out = subprocess.run(
                ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "-s", str(script),
                 url],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            machine_cpu = machine_busy_seconds() - machine_before
            gate_cpu = sum(cpu_seconds(pid) - before[pid] for pid in pids)
            per_thread: dict[str, float] = {}
            for pid in pids:
                for name, secs in thread_cpu(pid).items():
                    spent = secs - threads_before[pid].get(name, 0.0)
                    per_thread[name] = per_thread.get(name, 0.0) + spent
            redis_cpu = (cpu_seconds(redis_pid) - redis_before) if redis_pid else 0.0
            print(out)
            done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
            us = {name: 1e6 * secs / done for name, secs in per_thread.items()}
            print(
                f"{'bare' if args.bare else 'gate'} CPU {gate_cpu:.2f} s = "
                f"{1e6 * gate_cpu / done:.0f} µs/request; "
                f"redis {1e6 * redis_cpu / done:.0f} µs/request; "
                f"whole machine {1e6 * machine_cpu / done:.0f} µs/request"
            )
            print(
                f"  by thread: main {us['main']:.0f} µs, others {us['others']:.0f} µs; "
                f"user {us['user']:.0f} µs, system {us['system']:.0f} µs"
            )
            sw = {k: per_thread[k] / done for k in SWITCH_KEYS}
            print(
                f"  scheduling per request: context switches main {sw['main_voluntary']:.2f} "
                f"voluntary + {sw['main_involuntary']:.2f} involuntary, other threads "
                f"{sw['others_voluntary']:.2f} + {sw['others_involuntary']:.2f}; runnable but "
                f"waiting for a CPU {us['runqueue']:.0f} µs"
            )
            records = seals = 0
            for audit_file in tmp.glob("audit-gate*.jsonl"):
                with audit_file.open("rb") as f:
                    for line in f:
                        if b'"type":"seal"' in line:
                            seals += 1
                        else:
                            records += 1
            if seals:
                print(
                    f"  audit: {records} lines in {seals} group commits ({records / seals:.1f} per commit)"
                )
            if spy is not None:
                spy.wait(args.duration + 30)
                print(summarise(args.out, args.top))
                print(f"\nraw profile: {args.out} (open in https://www.speedscope.app)")
        finally:
            stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
