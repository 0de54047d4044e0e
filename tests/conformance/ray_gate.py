"""Real ``gatekeeper serve`` processes in front of the Ray lab, and what they measured.

Both gates route Ray requests as a production gate must: through the Ray adapter, bounded by the
route's Ray pool (``POOL``: one node of ``NUM_GPUS`` H100s, what the lab's ``ray start --head
--num-gpus 8`` declares). ``gate_config`` is an allow-all gate whose ``/unsafe/`` routes also set
``unsafe_ray_without_inventory`` (declarations alone, the prefix stripped before the head sees the
request); ``TenantGate`` runs the demo's gate (real tokens, entity registry, GeoIP) under the US
remote-access pack. What a gate measured is read back from its audit records (``compute``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from gatekeeper.demo import DemoKeys, write_config
from tests.conformance.common import AuditTail
from tests.conformance.ray_lab import NUM_GPUS, RayLab
from tests.e2e.gate import Gate, base_config
from tests.support import free_port, repo_root

POOL: dict[str, Any] = {
    "name": "ray-lab",
    "scheduler": "ray",
    "nodes": 1,
    "node": {"accelerators": {"model": "H100-SXM", "count": NUM_GPUS}},
}
POOL_GPUS = POOL["nodes"] * NUM_GPUS
UNSAFE = "/unsafe"
PROBLEM = "urn:gatekeeper:problem:"


def ray_routes(lab: RayLab, *, unsafe: bool, **extra: Any) -> list[dict[str, Any]]:
    """The job agent's route and the dashboard's, bounded by ``POOL`` (and, when ``unsafe``, a
    dashboard route under ``UNSAFE`` that counts declarations alone)."""
    common = {"adapter": "ray", "gpu_model": "H100", "max_hours": 48, **extra}
    routes = []
    if unsafe:
        routes.append(
            {"name": "ray-unsafe", "match": {"path_prefix": UNSAFE + "/"}, "strip_prefix": UNSAFE,
             "upstream": lab.dashboard_url, "unsafe_ray_without_inventory": True, **common}
        )  # fmt: skip
    pooled = {**common, "inventory": POOL["name"]}
    return [
        *routes,
        {"name": "ray-agent", "match": {"path_prefix": "/api/job_agent/"},
         "upstream": lab.agent_url, **pooled},
        {"name": "ray", "match": {"path_prefix": "/"}, "upstream": lab.dashboard_url, **pooled},
    ]  # fmt: skip


def gate_config(tmp: Path, lab: RayLab) -> dict[str, Any]:
    """Allow-all, unauthenticated: what is compared is the measurement, not the policy."""
    cfg = base_config(tmp, lab.dashboard_url)
    cfg["limits"]["upstream_timeout_s"] = 60
    cfg["inventory"] = [POOL]
    cfg["routes"] = ray_routes(lab, unsafe=True, authenticate=False)
    return cfg


def tenant_config(tmp: Path, lab: RayLab, keys: DemoKeys) -> dict[str, Any]:
    """The demo's gate under the US pack alone, its routes replaced by the Ray routes."""
    path = write_config(tmp, keys, port=free_port(), admin=free_port(), scheduler=lab.dashboard_url)
    cfg: dict[str, Any] = yaml.safe_load(path.read_text())
    cfg["policy"]["files"] = [str(repo_root() / "policies" / "us-remote-access.yaml")]
    cfg.setdefault("limits", {})["upstream_timeout_s"] = 60
    cfg["inventory"] = [POOL]
    cfg["routes"] = ray_routes(lab, unsafe=False)
    return cfg


def send_json(
    method: str, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One JSON request; (status, raw answer) whatever the status."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def measured(record: dict[str, Any]) -> bool:
    """Whether a decision record is of a request the Ray adapter measures (a job submission or
    a Serve deployment), by its method and path."""
    path = str(record["http"]["path"]).split("?", 1)[0].rstrip("/")
    method = record["http"]["method"]
    if method == "POST":
        return path.endswith("/jobs")
    return method == "PUT" and path.endswith("/api/serve/applications")


class RayGate:
    """A running gate in front of the lab and the decision records it has written."""

    def __init__(self, lab: RayLab, tmp: Path, config: dict[str, Any]) -> None:
        self.lab = lab
        self.gate = Gate(tmp, config)
        self.tail = AuditTail(tmp / "audit.jsonl")

    @property
    def url(self) -> str:
        return self.gate.url

    def stop(self) -> None:
        self.gate.stop()

    def measured_records(self) -> list[dict[str, Any]]:
        """Decision records of measured requests written since the last call."""
        return [r for r in self.tail.decisions() if measured(r)]

    def bound(self) -> tuple[float | None, tuple[str, ...]]:
        """``compute.gpus`` and ``compute.assumptions`` of the one measured request made since
        the last call (None: refused before it was measured)."""
        records = self.measured_records()
        assert len(records) == 1, records
        compute = records[0].get("compute")
        if not compute:
            return None, ()
        return float(compute["gpus"]), tuple(compute.get("assumptions") or ())

    def put_serve(
        self, config: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        return send_json("PUT", f"{self.url}/api/serve/applications/", config, headers)


class TenantGate(RayGate):
    """The demo's gate under the US pack in front of the lab, with its tenants' tokens."""

    def __init__(self, lab: RayLab, tmp: Path) -> None:
        self.keys = DemoKeys(tmp)
        super().__init__(lab, tmp, tenant_config(tmp, lab, self.keys))

    def headers(self, tenant: str, ip: str) -> dict[str, str]:
        """A tenant's token, calling from ``ip`` through the gate's trusted proxy (loopback)."""
        return {"Authorization": f"Bearer {self.keys.token(tenant)}", "X-Forwarded-For": ip}


def problem(raw: bytes) -> str:
    """The problem type a gate answered with (``""`` when the answer is not the gate's)."""
    try:
        kind = str(json.loads(raw).get("type", ""))
    except (ValueError, AttributeError):
        return ""
    return kind[len(PROBLEM) :] if kind.startswith(PROBLEM) else ""
