"""Open-loop, fixed-rate HTTP/1.1 load generator (wrk cannot hold a fixed rate; wrk2 is not packaged).

    .venv/bin/python bench/openloop.py --url http://127.0.0.1:8080/x --rate 500 --duration 10 \\
        [--method POST --body-file job.json --header 'Authorization: Bearer ...']

Request ``i`` is *scheduled* at ``t0 + i / rate`` and sent then, whether or not earlier requests
have been answered (a free keep-alive connection is taken from the pool, or a new one opened), so
a slow server cannot slow the generator down and hide its own latency (coordinated omission).
Two latencies are recorded per request, both ending when the last response byte arrived:

* ``from_scheduled``: from the scheduled send time (the coordinated-omission-free figure; it
  includes the generator's timer jitter, ≤ ~1 ms, which is the same for every target);
* ``from_sent``: from the moment the request was actually written (service time).

Used by ``bench/run`` (added latency over direct at 500 req/s) and ``bench/soak``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Result:
    """Latencies in milliseconds and counts of one fixed-rate run."""

    rate: float
    duration_s: float
    from_scheduled: list[float] = field(default_factory=list)
    from_sent: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    late_sends: int = 0  # sends more than 1 ms after their scheduled time
    max_connections: int = 0

    def summary(self) -> dict[str, object]:
        return {
            "rate": self.rate,
            "duration_s": self.duration_s,
            "requests": len(self.from_scheduled),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "late_sends": self.late_sends,
            "max_connections": self.max_connections,
            "from_scheduled_ms": percentiles(self.from_scheduled),
            "from_sent_ms": percentiles(self.from_sent),
        }


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)

    def pct(p: float) -> float:
        return round(s[min(len(s) - 1, int(p / 100 * len(s)))], 4)

    return {
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "p99.9": pct(99.9),
        "max": round(s[-1], 4),
        "mean": round(statistics.fmean(s), 4),
    }


def build_request(
    url: str, method: str = "GET", body: bytes = b"", headers: list[str] | None = None
) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += list(headers or [])
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return host, port, raw


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        await reader.readexactly(length)
    elif chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def run(
    url: str,
    *,
    rate: float,
    duration_s: float,
    method: str = "GET",
    body: bytes = b"",
    headers: list[str] | None = None,
    warm_connections: int = 8,
    ssl_context: ssl.SSLContext | None = None,
) -> Result:
    """Send ``rate`` requests per second for ``duration_s`` seconds; see the module docstring."""
    host, port, raw = build_request(url, method, body, headers)
    res = Result(rate=rate, duration_s=duration_s)
    idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = deque()
    open_count = 0
    for _ in range(warm_connections):
        idle.append(await asyncio.open_connection(host, port, ssl=ssl_context))
        open_count += 1
    res.max_connections = open_count
    clock = time.perf_counter
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        nonlocal open_count
        try:
            # A pool's duty: skip idle connections the server has closed (its keep-alive timeout)
            # rather than send on them and count the server's close as an error.
            while idle and (idle[-1][0].at_eof() or idle[-1][1].is_closing()):
                idle.pop()[1].close()
                open_count -= 1
            if idle:
                reader, writer = idle.pop()
            else:
                reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context)
                open_count += 1
                res.max_connections = max(res.max_connections, open_count)
            sent = clock()
            writer.write(raw)
            status = await _read_response(reader)
            done = clock()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            res.errors += 1
            open_count -= 1
            return
        res.from_scheduled.append((done - scheduled) * 1000)
        res.from_sent.append((done - sent) * 1000)
        res.statuses[status] = res.statuses.get(status, 0) + 1
        idle.append((reader, writer))

    total = int(rate * duration_s)
    t0 = clock() + 0.05
    for i in range(total):
        due = t0 + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        scheduled = due
        if clock() - scheduled > 0.001:
            res.late_sends += 1
        task = asyncio.ensure_future(one(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    while idle:
        _, writer = idle.pop()
        writer.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description="open-loop fixed-rate HTTP load generator")
    ap.add_argument("--url", required=True)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--method", default="GET")
    ap.add_argument("--body-file")
    ap.add_argument("--header", action="append", default=[])
    args = ap.parse_args()
    body = open(args.body_file, "rb").read() if args.body_file else b""  # noqa: SIM115
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    res = runner(
        run(
            args.url,
            rate=args.rate,
            duration_s=args.duration,
            method=args.method,
            body=body,
            headers=args.header,
        )
    )
    print(json.dumps(res.summary(), indent=2))
    return 0 if res.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
