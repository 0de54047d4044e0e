"""The admission webhook beside the proxy: decisions per second and latency at a fixed rate.

    .venv/bin/python bench/webhook_bench.py [--rate 200] [--duration 10] [--burst-seconds 5]

One ``gatekeeper serve`` with the demo entities and the shipped US pack answers both faces: the
proxy (a Kubernetes route in front of the stand-in upstream of tests/e2e, the client's JWT) and the
webhook (TLS, the namespace mapped to the entity). The same Job (8 GPUs, parallelism 2) is sent to
each: to the proxy as a ``POST`` of the object, to the webhook as an ``AdmissionReview``. Reported
per face: p50/p90/p99 at ``--rate`` (open loop, bench/openloop.py) and the decisions per second a
closed loop of 16 connections gets in ``--burst-seconds``. Both answers are allowed (a US lab),
so both paths run every stage; quota is not involved (the US entity rule sets none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.openloop import run as openloop
from gatekeeper.demo import DemoKeys
from tests.admission.support import review_of, webhook_config
from tests.e2e.gate import Gate, Upstream
from tests.security.harness import US_IP, gate_config
from tests.support import wait_port

JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "train"},
    "spec": {"parallelism": 2, "activeDeadlineSeconds": 3600, "template": {"spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "m", "image": "t", "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}},
}  # fmt: skip


async def burst(
    url: str, raw_headers: list[str], body: bytes, seconds: float, ctx: ssl.SSLContext | None
) -> float:
    """Decisions per second from 16 connections that send the next request as soon as answered."""
    from bench.openloop import _read_response, build_request

    host, port, raw = build_request(url, "POST", body, raw_headers)
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
        while time.perf_counter() < stop:
            writer.write(raw)
            status = await _read_response(reader)
            if status == 200 or status == 201:
                done += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(16)))
    return done / (time.perf_counter() - t0)


async def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    upstream = Upstream(tmp)
    keys = DemoKeys(tmp)
    cfg = gate_config(tmp, keys, upstream.url)
    cfg["routes"] = [{"name": "k8s-write", "match": {"path_prefix": "/apis/"}, "upstream": upstream.url,
                      "adapter": "kubernetes", "gpu_model": "H100-SXM", "max_hours": 24}]  # fmt: skip
    cfg["admission"] = webhook_config(tmp)["admission"]
    cfg["audit"]["sinks"] = [{"type": "file", "path": str(tmp / "audit.jsonl")}]
    gate = Gate(tmp, cfg)
    try:
        wait_port(cfg["admission"]["port"], timeout=30)
        ctx = ssl.create_default_context(cafile=cfg["admission"]["tls"]["cert"])
        proxy_url = f"{gate.url}/apis/batch/v1/namespaces/lab/jobs"
        proxy_headers = [f"Authorization: Bearer {keys.token('frontier-labs')}", f"X-Forwarded-For: {US_IP}",
                         "Content-Type: application/json"]  # fmt: skip
        hook_url = f"https://127.0.0.1:{cfg['admission']['port']}/v1/admission"
        hook_headers = ["Content-Type: application/json"]
        faces = {
            "proxy": (proxy_url, proxy_headers, json.dumps(JOB).encode(), None),
            "webhook": (
                hook_url,
                hook_headers,
                json.dumps(review_of(JOB, namespace="lab")).encode(),
                ctx,
            ),
        }
        out: dict[str, Any] = {}
        for name, (url, headers, body, tls) in faces.items():
            res = await openloop(url, rate=args.rate, duration_s=args.duration, method="POST", body=body,
                                 headers=headers, ssl_context=tls)  # fmt: skip
            summary = res.summary()
            out[name] = {
                "statuses": summary["statuses"],
                "errors": summary["errors"],
                f"latency_ms_at_{args.rate:g}_per_s": summary["from_scheduled_ms"],
                "decisions_per_s_16_connections": round(
                    await burst(url, headers, body, args.burst_seconds, tls), 1
                ),
            }
        return out
    finally:
        gate.stop()
        upstream.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--burst-seconds", type=float, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(args, Path(tmp)))
    print(json.dumps(result, indent=2))
    return 0 if all(face["errors"] == 0 for face in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
