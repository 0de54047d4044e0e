"""No tenant owned from D:5 gets a forwarded Ray request that could reach a controlled GPU.

Every body of the Ray tables that submits work (``test_ray.MEASURED``'s jobs and Serve
applications, whatever GPUs they declare: their code may reserve the cluster's), every body the
adapter refuses, and a job that declares nothing goes through the gate's own decision path
(``gatekeeper check``'s ``decide_offline``, with real tokens, entities and GeoIP) under the
shipped US pack, as ``acme-sg``: a Singapore company whose ultimate parent is headquartered in a
D:5 country. None may be allowed: each measured body is held for a licence (451), each refused
one refused as unmeasurable (400). A US lab is allowed the same job, so the test cannot pass by
refusing everything.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatekeeper.demo import DemoKeys

from .helpers import (
    D5_TENANT,
    D5_TENANT_IP,
    US_LAB,
    US_LAB_IP,
    Ask,
    decide_offline_all,
    us_pack_config,
)
from .test_ray import MEASURED, REFUSED, submits

RAY_ROUTE = {
    "name": "ray",
    "match": {"path_prefix": "/api/"},
    "upstream": "http://127.0.0.1:8265",
    "adapter": "ray",
    "gpu_model": "H100-SXM",
    "max_hours": 48,
    "inventory": "ray-h100",
}
RAY_POOL = {"name": "ray-h100", "scheduler": "ray", "nodes": 2,
            "node": {"accelerators": {"model": "H100-SXM", "count": 8}}}  # fmt: skip


# A job that declares no GPU: its code may still reserve every GPU of the cluster.
UNDECLARED = ("code-only", "POST", "/api/jobs/", {"entrypoint": "python train.py"})


def _bodies() -> list[tuple[str, str, str, Any]]:
    """Every body of the tables that submits work, whatever GPUs it declares: under a Ray pool
    each reaches the cluster's GPUs (``cpu-memory-node`` and ``label-selector`` declare none)."""
    work = [(i, m, p, b) for i, m, p, b, _, _ in MEASURED if submits(m, p)]
    return [*work, *[(i, m, p, b) for i, m, p, b, _ in REFUSED], UNDECLARED]


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ray-d5")
    keys = DemoKeys(tmp)
    config = us_pack_config(
        tmp, keys, 18082, 19092, routes_first=(RAY_ROUTE,), inventory=[RAY_POOL]
    )
    asks: dict[str, Ask] = {i: (D5_TENANT, D5_TENANT_IP, m, p, b) for i, m, p, b in _bodies()}
    _, method, path, body = _bodies()[0]
    asks["control"] = (US_LAB, US_LAB_IP, method, path, body)
    return asyncio.run(decide_offline_all(config, keys, asks))


def test_no_ray_body_reaching_a_gpu_is_allowed(decisions: dict[str, dict[str, Any]]) -> None:
    control = decisions.pop("control")
    assert control["action"] == "allow" and control["compute"]["gpus"] >= 1, control
    assert len(decisions) >= 20
    allowed = {k: d["compute"] for k, d in decisions.items() if d["action"] == "allow"}
    assert allowed == {}
    refused = {i for i, *_ in REFUSED}
    for case_id, d in decisions.items():
        assert d["status"] == (400 if case_id in refused else 451), (case_id, d["reasons"])
    # bodies declaring no GPU are bounded by the pool (two nodes of eight) like any other
    for case_id in ("code-only", "cpu-memory-node", "label-selector"):
        compute = decisions[case_id]["compute"]
        assert compute["gpus"] == 16 and "gpus-from-ray-cluster" in compute["assumptions"]
