"""No tenant owned from D:5 gets a forwarded Slurm request that could reach a controlled GPU.

Every body of the class tables (``cases``) that slurmctld could give at least one accelerator,
and every body the adapter refuses, goes through the gate's own decision path (``gatekeeper
check``'s ``decide_offline``, with real tokens, entities and GeoIP) under the shipped US pack,
as ``acme-sg``: a Singapore company whose ultimate parent is headquartered in a D:5 country. None
may be allowed: each is held for a licence (451) or refused as unmeasurable (400).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatekeeper.demo import DemoKeys

from ..helpers import (
    D5_TENANT,
    D5_TENANT_IP,
    US_LAB,
    US_LAB_IP,
    Ask,
    decide_offline_all,
    us_pack_config,
)
from .cases import CASES, ENTRIES, controlled_bodies

POOLED_ROUTE = {
    "name": "slurm-pooled",
    "match": {"path_prefix": "/pooled/slurm/", "methods": ["POST"]},
    "upstream": "http://127.0.0.1:6820",
    "adapter": "slurm",
    "strip_prefix": "/pooled",
    "gpu_model": "H100-SXM",
    "max_hours": 168,
    "inventory": "h100",
}


def _inventory() -> list[dict[str, Any]]:
    """The class tables' pools (``cases.ENTRIES``) as configuration."""
    return [
        {
            "name": e.name,
            "scheduler": e.scheduler,
            "nodes": e.nodes,
            "partitions": list(e.partitions),
            "node": {
                "accelerators": {
                    "model": e.node.accelerators.model,
                    "count": e.node.accelerators.count,
                },
                "shards_per_gpu": e.node.shards_per_gpu,
                "mps_per_gpu": e.node.mps_per_gpu,
            },
            **({"max_hours": e.max_hours} if e.max_hours else {}),
        }
        for e in ENTRIES
    ]


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("d5")
    keys = DemoKeys(tmp)
    config = us_pack_config(
        tmp, keys, 18081, 19091, routes_first=(POOLED_ROUTE,), inventory=_inventory()
    )
    asks: dict[str, Ask] = {
        case_id: (
            D5_TENANT,
            D5_TENANT_IP,
            "POST",
            ("/pooled" + path) if route == "pooled" else path,
            body,
        )
        for case_id, route, path, body in controlled_bodies()
    }
    # The control: a US tenant from a US address is allowed the same whole-node job.
    asks["control"] = (US_LAB, US_LAB_IP, "POST", CASES[0][2], CASES[0][3])
    return asyncio.run(decide_offline_all(config, keys, asks))


def test_no_controlled_body_is_allowed(decisions: dict[str, dict[str, Any]]) -> None:
    control = decisions["control"]
    assert control["action"] == "allow" and control["compute"]["gpus"] == 16, control
    tried = {k: d for k, d in decisions.items() if k != "control"}
    assert len(tried) >= 60
    allowed = {k: d["compute"] for k, d in tried.items() if d["action"] == "allow"}
    assert allowed == {}
    for case_id, d in tried.items():
        assert d["status"] in (400, 451), (case_id, d["status"], d["reasons"])
        if d["status"] == 451 and d["compute"]["model_known"]:
            # (a model outside the catalog is the packs' own rule's to decide)
            assert d["rule"] == "d5-headquarters", (case_id, d["rule"])
            assert d["compute"]["controlled"] and d["compute"]["gpus"] >= 1, case_id


def test_assumptions_reach_the_decision(decisions: dict[str, dict[str, Any]]) -> None:
    whole = decisions["exclusive-user-41"]["compute"]
    assert "gpus-per-node-from-inventory" in whole["assumptions"]
    assert whole["gpus"] == 16 and whole["model_known"] is True
    unknown = decisions["unknown-partition-unknown-model"]["compute"]
    assert unknown["model_known"] is False and "unknown-gpu-model" in unknown["assumptions"]


def test_tables_cover_every_class() -> None:
    ids = " ".join(c[0] for c in CASES)
    for word in ("exclusive", "shared", "ntasks-per", "shards", "mps", "hostlist", "nodelist",
                 "partition", "38-", "37-", "hetjob", "array", "sbatch", "update"):  # fmt: skip
        assert word in ids, word
