"""The compose stack's gate, run for real: deploy/config/gatekeeper.yaml with every container path
replaced by what docker-compose.yml mounts there (or what the Dockerfile copies there), a real
Redis for quotas and the audit stream, the stand-in scheduler, and the DEMO keys in deploy/keys.

This is what `docker compose up` would start, minus the container: if a mount, a key, a policy
file, the entity registry or the config itself were wrong, the gate would not become ready or
would refuse the allowed request.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import yaml

from tests.deploy.manifests import (
    COMPOSE,
    DEPLOY_CONFIG,
    DOCKERFILE,
    REPO,
    compose_mounts,
    image_copies,
    parse_dockerfile,
    resolve_in_compose,
)
from tests.support import RedisServer, free_port, wait_port


def _demo_keys() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_keys", REPO / "deploy/keys/demo_keys.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def localize(config: Any, tmp: Path, upstreams: dict[str, str]) -> Any:
    """Container paths -> where compose gets them from; service upstreams -> local ones."""
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = compose_mounts(compose["services"]["gatekeeper"])
    copies = image_copies(parse_dockerfile(DOCKERFILE.read_text()))

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str) and node.startswith(("/etc/gatekeeper", "/var/lib/gatekeeper")):
            where = resolve_in_compose(node, mounts, copies)
            assert where is not None, f"{node} comes from nowhere in docker-compose.yml"
            kind, src = where
            if kind == "volume":
                path = tmp / "volumes" / src / Path(node).relative_to("/var/lib/gatekeeper/audit")
                path.parent.mkdir(parents=True, exist_ok=True)
                return str(path)
            return str(REPO / src)
        if isinstance(node, str) and node.startswith("http"):
            parts = urlsplit(node)
            key = f"{parts.hostname}:{parts.port}"
            return node.replace(key, upstreams[key]) if key in upstreams else node
        return node

    return walk(config)


def _get(url: str, token: str | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def scheduler() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gatekeeper.demo.scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO,
    )
    try:
        wait_port(port, timeout=15)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_compose_gate_starts_serves_and_audits(
    tmp_path: Path, redis_server: RedisServer, scheduler: int
) -> None:
    raw = yaml.safe_load(DEPLOY_CONFIG.read_text())
    cfg = localize(raw, tmp_path, {"scheduler:6820": f"127.0.0.1:{scheduler}"})
    port, admin = free_port(), free_port()
    cfg["listen"] = {"host": "127.0.0.1", "port": port}
    cfg["admin"] = {"host": "127.0.0.1", "port": admin}
    cfg["limits"]["drain_timeout_s"] = 2
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    base = redis_server.url.rsplit("/", 1)[0]
    env = dict(
        os.environ,
        GATEKEEPER_REDIS_URL=f"{base}/0",
        GATEKEEPER_AUDIT_REDIS_URL=f"{base}/1",
        GATEKEEPER_LOG_LEVEL="WARNING",
    )
    stderr = tmp_path / "gate.stderr"
    with open(stderr, "wb") as err:
        gate = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper", "serve", "--config", str(path)],
            cwd=REPO,
            env=env,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        status, body = 0, b""
        while time.monotonic() < deadline:
            assert gate.poll() is None, stderr.read_text()
            try:
                status, body = _get(f"http://127.0.0.1:{admin}/readyz")
            except OSError:
                time.sleep(0.1)
                continue
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, (body, stderr.read_text())
        assert json.loads(body)["ready"] is True

        token = _demo_keys().mint(
            subject="alice@example.com", tenant="frontier", entity="frontier-labs"
        )
        job = json.dumps({"job": {"name": "train", "tres_per_node": "gres/gpu:h100:8", "nodes": 2,
                                  "time_limit": 120, "partition": "gpu"}}).encode()  # fmt: skip
        submit = f"http://127.0.0.1:{port}/slurm/v0.0.41/job/submit"
        status, body = _get(submit, token=token, body=job)
        assert status == 200, body
        assert json.loads(body)["job_id"] >= 1000  # the scheduler answered, through the gate
        status, _ = _get(submit, body=job)
        assert status == 401  # no token
        status, body = _get(f"http://127.0.0.1:{admin}/metrics")
        assert status == 200 and b"gatekeeper_requests_total" in body
    finally:
        gate.send_signal(signal.SIGTERM)
        code = gate.wait(20)
    assert code == 0, stderr.read_text()

    audit = tmp_path / "volumes" / "audit" / "audit.jsonl"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    decisions = [r for r in records if "decision" in r]
    allowed = [r for r in decisions if r["decision"]["rule"] == "us-entity"]
    assert allowed and allowed[0]["principal"]["entity"] == "frontier-labs"
    assert allowed[0]["decision"]["action"] == "allow"
    assert any(r["http"]["status"] == 401 for r in decisions)
    assert any(r.get("type") == "seal" for r in records)
    verify = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "audit", "verify", "--public-key",
         str(REPO / "deploy/keys/audit-seal.pub.pem"), str(audit)],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # The off-host copy went to the audit database (db 1), not to the quota database.
    client = redis.Redis.from_url(f"{base}/1")
    try:
        assert client.xlen("gatekeeper:audit") >= 2
    finally:
        client.close()
