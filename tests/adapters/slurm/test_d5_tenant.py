"""No tenant owned from D:5 gets a forwarded Slurm request that could reach a controlled GPU.

Every body of the class tables (``cases``) that slurmctld could give at least one accelerator,
and every body the adapter refuses, goes through the gate's own decision path (``gatekeeper
check``'s ``decide_offline``, with real tokens, entities and GeoIP) under the shipped US pack,
as ``acme-sg``: a Singapore company whose ultimate parent is headquartered in a D:5 country. None
may be allowed: each is held for a licence (451) or refused as unmeasurable (400).
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

from .cases import CASES, ENTRIES, controlled_bodies

TENANT, TENANT_IP = "acme-sg", "165.21.83.88"  # parent headquartered in D:5 (demo entities)


def _config(tmp: Path, keys: DemoKeys) -> Path:
    us = write_config(tmp, keys, port=18081, admin=19091, scheduler="http://127.0.0.1:6820")
    cfg = yaml.safe_load(us.read_text())
    cfg["policy"]["files"] = [str(repo_root() / "policies" / "us-remote-access.yaml")]
    cfg["inventory"] = [
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
    pooled = {
        "name": "slurm-pooled",
        "match": {"path_prefix": "/pooled/slurm/", "methods": ["POST"]},
        "upstream": "http://127.0.0.1:6820",
        "adapter": "slurm",
        "strip_prefix": "/pooled",
        "gpu_model": "H100-SXM",
        "max_hours": 168,
        "inventory": "h100",
    }
    cfg["routes"].insert(0, pooled)
    path = tmp / "us-inventory.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


async def _decide_all(config: Path, keys: DemoKeys) -> dict[str, dict[str, Any]]:
    runtime = Runtime(load_config(str(config)))
    await runtime.start(with_audit=False)
    headers = {"X-Forwarded-For": TENANT_IP, "Authorization": f"Bearer {keys.token(TENANT)}"}
    try:
        out = {}
        for case_id, route, path, body in controlled_bodies():
            payload = {
                "method": "POST",
                "path": ("/pooled" + path) if route == "pooled" else path,
                "headers": headers,
                "client_ip": "127.0.0.1",
                "body": body,
            }
            out[case_id] = await decide_offline(runtime, payload, consume=False)
        # The control: a US tenant from a US address is allowed the same whole-node job.
        payload["path"], payload["body"] = CASES[0][2], CASES[0][3]
        payload["headers"] = {
            "X-Forwarded-For": "8.8.8.8",
            "Authorization": f"Bearer {keys.token('frontier-labs')}",
        }
        out["control"] = await decide_offline(runtime, payload, consume=False)
        return out
    finally:
        await runtime.close()


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("d5")
    keys = DemoKeys(tmp)
    return asyncio.run(_decide_all(_config(tmp, keys), keys))


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
