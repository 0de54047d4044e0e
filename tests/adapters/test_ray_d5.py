"""No tenant owned from D:5 gets a forwarded Ray request that could reach a controlled GPU.

Every body of the Ray tables (``test_ray.MEASURED`` with at least one GPU, every body the adapter
refuses, and a job that declares no GPU while its code may reserve the cluster's) goes through the gate's own decision path (``gatekeeper check``'s
``decide_offline``, with real tokens, entities and GeoIP) under the shipped US pack, as
``acme-sg``: a Singapore company whose ultimate parent is headquartered in a D:5 country. None
may be allowed: each is held for a licence (451) or refused as unmeasurable (400). A US lab is
allowed the same job, so the test cannot pass by refusing everything.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatekeeper.check import decide_offline
from gatekeeper.config import load_config
from gatekeeper.demo import DemoKeys, write_config
from gatekeeper.runtime import Runtime
from tests.support import repo_root

from .test_ray import MEASURED, REFUSED

TENANT, TENANT_IP = "acme-sg", "165.21.83.88"  # parent headquartered in D:5 (demo entities)
CONTROL, CONTROL_IP = "frontier-labs", "8.8.8.8"


def _config(tmp: Path, keys: DemoKeys) -> Path:
    base = write_config(tmp, keys, port=18082, admin=19092, scheduler="http://127.0.0.1:6820")
    cfg = yaml.safe_load(base.read_text())
    cfg["policy"]["files"] = [str(repo_root() / "policies" / "us-remote-access.yaml")]
    ray = {
        "name": "ray",
        "match": {"path_prefix": "/api/"},
        "upstream": "http://127.0.0.1:8265",
        "adapter": "ray",
        "gpu_model": "H100-SXM",
        "max_hours": 48,
        "inventory": "ray-h100",
    }
    cfg["inventory"] = [
        {"name": "ray-h100", "scheduler": "ray", "nodes": 2,
         "node": {"accelerators": {"model": "H100-SXM", "count": 8}}}
    ]  # fmt: skip
    cfg["routes"].insert(0, ray)
    path = tmp / "ray-us.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# A job that declares no GPU: its code may still reserve every GPU of the cluster.
UNDECLARED = ("code-only", "POST", "/api/jobs/", {"entrypoint": "python train.py"})


def _bodies() -> list[tuple[str, str, str, Any]]:
    gpus = [(i, m, p, b) for i, m, p, b, n, _ in MEASURED if n > 0 and m in ("POST", "PUT")]
    return [*gpus, *[(i, m, p, b) for i, m, p, b, _ in REFUSED], UNDECLARED]


async def _decide_all(config: Path, keys: DemoKeys) -> dict[str, dict[str, Any]]:
    runtime = Runtime(load_config(str(config)))
    await runtime.start(with_audit=False)

    def payload(who: str, ip: str, method: str, path: str, body: Any) -> dict[str, Any]:
        headers = {"X-Forwarded-For": ip, "Authorization": f"Bearer {keys.token(who)}"}
        return {"method": method, "path": path, "headers": headers, "client_ip": "127.0.0.1",
                "body": body}  # fmt: skip

    try:
        out = {}
        for case_id, method, path, body in _bodies():
            out[case_id] = await decide_offline(
                runtime, payload(TENANT, TENANT_IP, method, path, body), consume=False
            )
        _, method, path, body = _bodies()[0]
        out["control"] = await decide_offline(
            runtime, payload(CONTROL, CONTROL_IP, method, path, body), consume=False
        )
        return out
    finally:
        await runtime.close()


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ray-d5")
    keys = DemoKeys(tmp)
    return asyncio.run(_decide_all(_config(tmp, keys), keys))


def test_no_ray_body_reaching_a_gpu_is_allowed(decisions: dict[str, dict[str, Any]]) -> None:
    control = decisions.pop("control")
    assert control["action"] == "allow" and control["compute"]["gpus"] >= 1, control
    assert len(decisions) >= 20
    allowed = {k: d["compute"] for k, d in decisions.items() if d["action"] == "allow"}
    assert allowed == {}
    for case_id, d in decisions.items():
        assert d["status"] in (400, 451), (case_id, d["status"], d["reasons"])
    code_only = decisions["code-only"]["compute"]
    assert code_only["gpus"] == 16 and "gpus-from-ray-cluster" in code_only["assumptions"]
