"""``gatekeeper demo``: the whole product, end to end, on loopback (README.md).

It writes a demo config, a fresh RSA signing key with its JWKS and an Ed25519 audit-seal key into
the output folder, starts the stand-in Slurm scheduler and a real ``gatekeeper serve`` process on
free ports, sends the scenario below through the gate, prints one line per decision, verifies the
audit chain and its seals, and leaves ``audit.jsonl`` and ``metrics.prom`` on disk. The client
plays a trusted load balancer (``X-Forwarded-For``) so each request can come "from" another country.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gatekeeper.ports import free_port

DATA = Path(__file__).resolve().parent / "data"
ISSUER = "https://idp.demo.gatekeeper.invalid/"
AUDIENCE = "gpu-gatekeeper"
KID = "demo-key-1"


@dataclass(frozen=True)
class Step:
    """One scenario request and the outcome the shipped policy packs must give it."""

    title: str
    entity: str | None
    ip: str
    gpus: int
    hours: float
    expect_action: str
    expect_status: int
    path: str = "/slurm/v0.0.41/job/submit"
    token: bool = True
    purpose: str | None = None


SCENARIO: tuple[Step, ...] = (
    Step("US lab trains a model", "frontier-labs", "8.8.8.8", 8, 24, "allow", 200),
    Step("Singapore shell, D:5 parent", "acme-sg", "165.21.83.88", 32, 12, "require_license", 451),
    Step("50%-rule affiliate", "bluewave-my", "103.11.143.1", 16, 8, "deny", 451),
    Step("US lab over a VPN", "frontier-labs", "5.62.60.1", 8, 24, "deny", 451),
    Step("licence covers the job", "orchid-sg", "203.116.1.1", 16, 10, "allow", 200),
    Step("JP military end-user affiliate", "kaiyo-compute", "133.242.0.3", 8, 4, "deny", 451),
    Step("foreign tenant, big job", "fjord-research", "84.208.20.110", 64, 168, "allow", 200),
    Step("affiliate of same parent", "fjord-cloud", "193.75.75.75", 32, 168, "deny", 429),
    Step("from a D:5 country", "frontier-labs", "114.114.114.114", 8, 24, "require_license", 451),
    Step("KYC incomplete", "ghost-co", "8.8.8.8", 8, 24, "deny", 403),
    Step("no token", None, "8.8.8.8", 8, 24, "deny", 401, token=False),
    Step(
        "monitor mode (not enforced)",
        "acme-sg",
        "165.21.83.88",
        32,
        12,
        "require_license",
        200,
        path="/monitor/slurm/v0.0.41/job/submit",
    ),
)


def _wait_port(
    port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


def _policies_dir() -> Path:
    """The shipped policy packs: the repository's policies/ (editable install) or /etc."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "policies",
        Path("/etc/gatekeeper/policies"),
    ):
        if (candidate / "us-remote-access.yaml").exists():
            return candidate
    raise FileNotFoundError("policy packs not found (expected policies/ next to the package)")


class DemoKeys:
    """A fresh RSA signing key (JWKS for the gate) and an Ed25519 audit-seal key."""

    def __init__(self, out: Path) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        jwk.update({"kid": KID, "use": "sig", "alg": "RS256"})
        self.jwks_path = out / "jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [jwk]}, indent=2))
        seal = ed25519.Ed25519PrivateKey.generate()
        self.seal_key_path = out / "audit-seal.key.pem"
        self.seal_key_path.write_bytes(
            seal.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.seal_pub_path = out / "audit-seal.pub.pem"
        self.seal_pub_path.write_bytes(
            seal.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(self, entity: str, *, ttl: float = 3600) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": f"user@{entity}",
            "org_id": entity,
            "entity_id": entity,
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl),
        }
        return jwt.encode(claims, self.rsa, algorithm="RS256", headers={"kid": KID})


def write_config(out: Path, keys: DemoKeys, *, port: int, admin: int, scheduler: str) -> Path:
    policies = _policies_dir()
    cfg: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin},
        "trusted_proxies": ["127.0.0.1/32"],
        "identity": {
            "issuers": [
                {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "jwks_file": str(keys.jwks_path),
                    "algorithms": ["RS256"],
                    "claims": {"tenant": "org_id", "entity": "entity_id"},
                }
            ]
        },
        "entities": {"sources": [{"path": str(DATA / "entities.yaml")}]},
        "geoip": {"country_db": "builtin", "anonymous_db": str(DATA / "anonymous-ip.mmdb")},
        "policy": {
            "files": [
                str(policies / "us-remote-access.yaml"),
                str(policies / "cn-dual-use-japan.yaml"),
            ],
            "gpus": str(policies / "gpus.yaml"),
            "default_action": "deny",
        },
        "quota": {"store": "memory"},
        "audit": {
            "durability": "fsync",
            "signing_key": str(keys.seal_key_path),
            "replica": "demo",
            "sinks": [{"type": "file", "path": str(out / "audit.jsonl")}],
        },
        "routes": [
            {
                # SECURITY: every write under /slurm/ is measured, not only ".../job/submit": job
                # updates (POST .../job/{id}) change TRES too, and a path the regex misses
                # (".../job/submit/") would otherwise fall through to the read route unmeasured.
                "name": "slurm-submit",
                "match": {"path_prefix": "/slurm/", "methods": ["POST", "PUT", "PATCH"]},
                "upstream": scheduler,
                "adapter": "slurm",
                "gpu_model": "H100-SXM",
                "max_hours": 168,
            },
            {
                "name": "slurm-submit-monitor",
                "match": {"path_prefix": "/monitor/slurm/", "methods": ["POST"]},
                "upstream": scheduler,
                "adapter": "slurm",
                "mode": "monitor",
                "strip_prefix": "/monitor",
                "gpu_model": "H100-SXM",
                "max_hours": 168,
            },
            {
                "name": "slurm-read",
                "match": {"path_prefix": "/slurm/", "methods": ["GET", "HEAD", "DELETE"]},
                "upstream": scheduler,
            },
        ],
    }
    path = out / "gatekeeper.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def slurm_job(step: Step) -> dict[str, Any]:
    return {
        "job": {
            "name": step.title.lower().replace(" ", "-")[:40],
            "partition": "h100",
            "nodes": "1" if step.gpus <= 8 else str(step.gpus // 8),
            "tres_per_node": f"gres/gpu:h100:{min(step.gpus, 8)}",
            "time_limit": {"set": True, "infinite": False, "number": int(step.hours * 60)},
            "current_working_directory": "/home/demo",
            "environment": ["PATH=/usr/bin"],
        },
        "script": "#!/bin/bash\nsrun python train.py\n",
    }


def step_headers(keys: DemoKeys, step: Step, *, ttl: float = 3600) -> dict[str, str]:
    """The headers a scenario step sends: token, client address (via the trusted proxy), purpose."""
    headers = {"X-Forwarded-For": step.ip, "Content-Type": "application/json"}
    if step.token and step.entity:
        headers["Authorization"] = f"Bearer {keys.token(step.entity, ttl=ttl)}"
    if step.purpose:
        headers["X-Gatekeeper-Purpose"] = step.purpose
    return headers


def write_requests(out: Path, keys: DemoKeys) -> Path:
    """Every scenario step as a ``gatekeeper check`` REQUEST.json (tokens valid for 8 hours)."""
    folder = out / "requests"
    folder.mkdir(exist_ok=True)
    for i, step in enumerate(SCENARIO, 1):
        slug = "".join(c if c.isalnum() else "-" for c in (step.entity or "anonymous"))
        request = {
            "method": "POST",
            "path": step.path,
            "headers": step_headers(keys, step, ttl=8 * 3600),
            "client_ip": "127.0.0.1",
            "body": slurm_job(step),
        }
        (folder / f"{i:02d}-{slug}.json").write_text(json.dumps(request, indent=2))
    return folder


async def _send(
    session: aiohttp.ClientSession, base: str, keys: DemoKeys, step: Step
) -> dict[str, Any]:
    headers = step_headers(keys, step)
    async with session.post(base + step.path, json=slurm_job(step), headers=headers) as r:
        body = await r.json(content_type=None)
        return {
            "status": r.status,
            "decision_id": r.headers.get("X-Gatekeeper-Decision-Id"),
            "body": body,
        }


def _records(audit_path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for line in audit_path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") is None and "decision_id" in rec:
            out[rec["decision_id"]] = rec
    return out


def run_demo(*, serve: bool = False, out_dir: str = "demo-out") -> int:
    out = Path(out_dir).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    keys = DemoKeys(out)
    port, admin, sched_port = free_port(), free_port(), free_port()
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper.demo.scheduler", "--port", str(sched_port)]
    )
    gate: subprocess.Popen[bytes] | None = None
    try:
        _wait_port(sched_port, proc=scheduler)
        write_requests(out, keys)
        config = write_config(
            out, keys, port=port, admin=admin, scheduler=f"http://127.0.0.1:{sched_port}"
        )
        gate = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gatekeeper",
                "--log-level",
                "WARNING",
                "serve",
                "--config",
                str(config),
            ]
        )
        _wait_port(port, proc=gate)
        _wait_port(admin, proc=gate)
        ok = asyncio.run(_scenario(out, keys, port, admin))
        if serve:
            _print_curl(keys, port, admin)
            with contextlib.suppress(KeyboardInterrupt):
                gate.wait()
        return 0 if ok else 1
    finally:
        if gate is not None and gate.poll() is None:
            gate.send_signal(signal.SIGTERM)
            gate.wait(30)
        scheduler.terminate()
        scheduler.wait(10)
        if gate is not None:
            _verify(out, keys)


async def _scenario(out: Path, keys: DemoKeys, port: int, admin: int) -> bool:
    base = f"http://127.0.0.1:{port}"
    results = []
    async with aiohttp.ClientSession() as session:
        for step in SCENARIO:
            results.append((step, await _send(session, base, keys, step)))
        async with session.get(f"http://127.0.0.1:{admin}/metrics") as r:
            (out / "metrics.prom").write_text(await r.text())
    await asyncio.sleep(0.2)
    records = _records(out / "audit.jsonl")
    header = (
        f"{'#':>2}  {'scenario':<30} {'who':<15} {'from':<9} {'GPUs':>4}  "
        f"{'decision':<16} {'rule':<22} {'status':>6}"
    )
    print(header)
    print("-" * len(header))
    all_ok = True
    for i, (step, res) in enumerate(results, 1):
        rec = records.get(res["decision_id"] or "", {})
        decision = rec.get("decision") or {}
        action = decision.get("action") or "?"
        rule = decision.get("rule") or (
            res["body"].get("rule") if isinstance(res["body"], dict) else None
        )
        geo = rec.get("geo") or {}
        where = f"{geo.get('country') or '?'}"
        if geo.get("anonymous"):
            where += " (anon)"
        ok = action == step.expect_action and res["status"] == step.expect_status
        all_ok &= ok
        mark = "ok" if ok else f"UNEXPECTED (wanted {step.expect_action}/{step.expect_status})"
        print(
            f"{i:>2}  {step.title:<30} {step.entity or '-':<15} {where:<9} {step.gpus:>4}  "
            f"{action:<16} {rule or '-':<22} {res['status']:>6}  {mark}"
        )
    print()
    print(f"audit trail:      {out / 'audit.jsonl'}")
    print(f"metrics snapshot: {out / 'metrics.prom'}")
    example = out / "requests" / "02-acme-sg.json"
    print(f"requests to try:  gatekeeper check {example} --config {out / 'gatekeeper.yaml'}")
    return all_ok


def _verify(out: Path, keys: DemoKeys) -> None:
    from ..audit.verify import verify_files

    report = verify_files([str(out / "audit.jsonl")], public_key=str(keys.seal_pub_path))
    print(f"audit verify:     {report.summary()}")


def _print_curl(keys: DemoKeys, port: int, admin: int) -> None:
    token = keys.token("frontier-labs", ttl=8 * 3600)
    job = json.dumps(slurm_job(SCENARIO[0]))
    print(
        "\nThe gate and the stand-in scheduler keep running (Ctrl-C stops them). Try:\n\n"
        f"  TOKEN='{token}'\n\n"
        f"  curl -s -X POST http://127.0.0.1:{port}/slurm/v0.0.41/job/submit \\\n"
        "       -H \"Authorization: Bearer $TOKEN\" -H 'X-Forwarded-For: 8.8.8.8' \\\n"
        f"       -H 'Content-Type: application/json' -d '{job}'\n\n"
        f"  curl -s -X POST http://127.0.0.1:{port}/slurm/v0.0.41/job/submit \\\n"
        "       -H \"Authorization: Bearer $TOKEN\" -H 'X-Forwarded-For: 5.62.60.9' \\\n"
        f"       -H 'Content-Type: application/json' -d '{job}'\n\n"
        f"  curl -s http://127.0.0.1:{admin}/metrics | grep ^gatekeeper_requests_total\n"
        f"  curl -s http://127.0.0.1:{admin}/readyz\n"
        f"  gatekeeper audit tail --config {Path('demo-out/gatekeeper.yaml')}\n",
        flush=True,
    )
    os.environ.setdefault("GATEKEEPER_DEMO", "1")
