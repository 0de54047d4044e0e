"""Where the gate's own time goes, per stage, on the full allow path.

Starts the benchmark stack (nginx upstream, private Redis, a ``workers: 1`` gate with the full
allow path of ``bench/fixtures.py``), sends ``--requests`` submissions at ``--concurrency``, then
reads the gate's own histograms from ``/metrics``: ``gatekeeper_stage_seconds{stage}`` against
``gatekeeper_decision_seconds`` (the gate's time from arrival to durable audit record, without the
upstream). Prints µs per request and the share of the gate's time for each stage. Run: ``.venv/bin/python bench/stage_share.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import CLIENT_IP, SUBMIT_PATH, Stack, job_body

_SAMPLE = re.compile(
    r'^(gatekeeper_(?:stage|decision)_seconds_(?:sum|count))(?:\{stage="([^"]+)"\})? (\S+)$'
)


async def drive(url: str, token: str, n: int, concurrency: int) -> int:
    body = job_body()
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Forwarded-For": CLIENT_IP,
        "Content-Type": "application/json",
    }
    ok = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        while not queue.empty():
            queue.get_nowait()
            async with session.post(url + SUBMIT_PATH, data=body, headers=headers) as r:
                await r.read()
                ok += r.status == 200

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ok


async def scrape(admin: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(admin + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            name, stage, value = m.groups()
            out[f"{name}:{stage or ''}"] = float(value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--registry-size", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gk-stage-") as tmp:
        stack = Stack(Path(tmp))
        try:
            path, cfg = stack.bench_gate_config(
                "stages", workers=1, registry_size=args.registry_size
            )
            stack.start_gate("stages", path, cfg)
            url = f"http://127.0.0.1:{cfg['listen']['port']}"
            admin = f"http://127.0.0.1:{cfg['admin']['port']}"
            token = stack.token()
            asyncio.run(drive(url, token, 300, args.concurrency))  # warm caches
            before = asyncio.run(scrape(admin))
            ok = asyncio.run(drive(url, token, args.requests, args.concurrency))
            after = asyncio.run(scrape(admin))
        finally:
            stack.close()
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    n = delta.get("gatekeeper_decision_seconds_count:", 0.0)
    total = delta.get("gatekeeper_decision_seconds_sum:", 0.0)
    if n <= 0 or total <= 0:
        print("no decisions measured", file=sys.stderr)
        return 1
    print(f"{ok}/{args.requests} answered 200; gate time {total / n * 1e6:.0f} µs per request")
    print(f"{'stage':<10} {'µs/req':>8} {'share':>7}")
    staged = 0.0
    for key, value in sorted(delta.items()):
        if key.startswith("gatekeeper_stage_seconds_sum:"):
            stage = key.split(":", 1)[1]
            count = delta.get(f"gatekeeper_stage_seconds_count:{stage}", 0.0) or 1.0
            staged += value
            print(f"{stage:<10} {value / count * 1e6:>8.1f} {value / total:>7.1%}")
    rest = total - staged
    print(
        f"{'other':<10} {rest / n * 1e6:>8.1f} {rest / total:>7.1%}  (edge, body read, audit wait)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
