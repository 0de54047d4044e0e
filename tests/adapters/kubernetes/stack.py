"""A real gate (the security harness's identity, entities, US pack) with Kubernetes routes in
front of the stand-in API server (``apiserver.py``), and what its audit file says it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from gatekeeper.demo import DemoKeys
from tests.e2e.gate import Gate
from tests.security.harness import US_IP, gate_config
from tests.support import free_port, repo_root, wait_port

NS = "ml"


class ApiServer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.log = tmp / "apiserver.jsonl"
        self.log.touch()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.adapters.kubernetes.apiserver", "--port", str(self.port),
             "--log", str(self.log)],
            cwd=repo_root(),
        )  # fmt: skip
        wait_port(self.port)

    def seen(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def running_stack(tmp_path: Path) -> Iterator[tuple[Gate, DemoKeys, ApiServer]]:
    api = ApiServer(tmp_path)
    keys = DemoKeys(tmp_path)
    cfg = gate_config(tmp_path, keys, f"http://127.0.0.1:{api.port}")
    upstream = f"http://127.0.0.1:{api.port}"
    # The shipped configuration's Kubernetes routes (deploy/config/gatekeeper.yaml), this upstream.
    shipped = yaml.safe_load((repo_root() / "deploy" / "config" / "gatekeeper.yaml").read_text())
    cfg["routes"] = [
        {**r, "upstream": upstream} for r in shipped["routes"] if r["name"].startswith("k8s-")
    ]
    gate = Gate(tmp_path, cfg)
    try:
        yield gate, keys, api
    finally:
        gate.stop()
        api.stop()


def measured(gate: Gate) -> list[tuple[str, str, float | None, str]]:
    """(method, path, gpus, action) of every decision record, in order."""
    audit = Path(gate.config["audit"]["sinks"][0]["path"])
    out = []
    for line in audit.read_text().splitlines():
        rec = json.loads(line)
        if "decision" in rec:
            gpus = rec["compute"]["gpus"] if rec.get("compute") else None
            out.append(
                (rec["http"]["method"], rec["http"]["path"], gpus, rec["decision"]["action"])
            )
    return out


async def send(
    gate: Gate, token: str, method: str, path: str, body: Any, ctype: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    """One request to the gate as a client from the US; (status, JSON body or ``{}``)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": ctype, "X-Forwarded-For": US_IP}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, gate.url + path, data=json.dumps(body), headers=headers) as r,
    ):
        text = await r.read()
        return r.status, json.loads(text) if text else {}
