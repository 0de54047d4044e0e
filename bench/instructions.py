"""Instructions per request, counted by ``valgrind --tool=callgrind``: an A/B that noise cannot move.

On a shared 2-core VM the same gate measures 260-400 µs of CPU per request from one wrk round to
the next, so a change worth 3% cannot be seen in req/s or CPU time. Callgrind counts the
instructions the gate's process executes in user space (every thread, Python and C alike), which
is the same from run to run for the same code and input, whatever else the machine is doing.
What it does not count: the kernel's side of syscalls (fsync, socket I/O), cache misses and
contention between processes; for those, ``bench/run``.

The harness starts the benchmark stack of ``bench/fixtures.py`` (nginx upstream, private Redis,
the full allow path, ``workers: 1``) with the gate under callgrind, instrumentation off; sends
``--warmup`` requests (token, Slurm and GeoIP caches filled, quota lease taken), switches
instrumentation on (``callgrind_control -i on``), sends ``--requests`` requests one after another
on one keep-alive connection, switches it off and dumps. Sequential requests make every run do the
same work: each decision record is its own group commit (with a seal), so per-commit costs weigh
more than they do under load.

Run: ``.venv/bin/python bench/instructions.py [--requests 400] [--read] [--set KEY=YAML]``.
For an A/B, run it in two work trees (``git worktree add /tmp/a <rev>``) with the same Python.
Needs ``valgrind`` (Debian package; present on these machines).
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import (
    CLIENT_IP,
    READ_PATH,
    SUBMIT_PATH,
    Stack,
    add_set_option,
    job_body,
)

_TOTALS = re.compile(r"^totals: (\d+)", re.M)


def send(port: int, token: str, n: int, *, read: bool) -> None:
    """``n`` requests on one keep-alive connection; every answer must be 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": CLIENT_IP}
    body = None if read else job_body()
    if not read:
        headers["Content-Type"] = "application/json"
    for _ in range(n):
        conn.request("GET" if read else "POST", READ_PATH if read else SUBMIT_PATH, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"gate answered {resp.status}: {data[:300]!r}")
    conn.close()


def send_concurrently(port: int, token: str, n: int, *, read: bool, clients: int) -> None:
    """``n`` requests in all from ``clients`` keep-alive connections at once (as under load)."""
    if clients <= 1:
        send(port, token, n, read=read)
        return
    errors: list[BaseException] = []

    def one(count: int) -> None:
        try:
            send(port, token, count, read=read)
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)

    share = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=one, args=(count,)) for count in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--read", action="store_true", help="the read route (GET, adapter none)")
    ap.add_argument(
        "--clients", type=int, default=1,
        help="keep-alive connections sending at once (16: one worker's share of bench/run's "
        "32 connections at -w2; group commits then hold many records, as under load)",
    )  # fmt: skip
    add_set_option(ap)
    ap.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "gate.callgrind",
        help="where the dump is kept (callgrind_annotate reads it)",
    )  # fmt: skip
    args = ap.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind not found (apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gk-instr-") as tmpdir:
        tmp = Path(tmpdir)
        stack = Stack(tmp)
        try:
            path, cfg = stack.bench_gate_config("gate", workers=1, registry_size=0, sets=args.set)
            out = tmp / "callgrind.out"
            # The venv's Python (a symlink to the binary, not a shim script: callgrind measures
            # the first program it starts), so that the venv's site-packages are found.
            python = sys.executable
            valgrind = [
                "valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={out}", python,
            ]  # fmt: skip
            proc = stack.start_gate_with(valgrind, "gate", path, cfg, timeout_s=600)
            port = int(cfg["listen"]["port"])
            token = stack.token()
            send(port, token, args.warmup, read=args.read)
            time.sleep(1.0)  # the last outcome line's lazy commit
            control(proc.pid, "-i", "on")
            started = time.monotonic()
            send_concurrently(port, token, args.requests, read=args.read, clients=args.clients)
            time.sleep(1.0)
            control(proc.pid, "-i", "off")
            control(proc.pid, "-d")
            elapsed = time.monotonic() - started
            time.sleep(0.5)
            dumps = sorted(tmp.glob("callgrind.out*"))
            total = sum(int(m) for d in dumps for m in _TOTALS.findall(d.read_text()[-4000:]))
            if dumps:
                shutil.copy(dumps[-1], args.out)
        finally:
            stack.close()
    route = "read" if args.read else "submit"
    print(
        f"{route}: {total / args.requests:,.0f} instructions per request "
        f"({args.requests} requests from {args.clients} connection(s), {total:,} instructions, {elapsed:.0f} s under callgrind)"
    )
    print(f"by function: callgrind_annotate {args.out} | head -60")
    return 0


if __name__ == "__main__":
    sys.exit(main())
