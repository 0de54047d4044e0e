"""An exclusive pool (Slurm ``OverSubscribe=EXCLUSIVE``): every job gets whole nodes.

slurmctld gives a job on such a partition every node it runs on, whatever the job asks (even
``--oversubscribe``), and with the node every GPU on it. A job that asks for one GPU, or none,
can use all of them. The D:5 view: a CPU-only job on an exclusive H100 partition is a job on
eight H100s, which the D:5-parented ``acme-sg`` may not be forwarded.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from gatekeeper.adapters import measure
from gatekeeper.config import (
    InventoryAccelerators,
    InventoryEntry,
    InventoryNode,
    parse_config_text,
)
from gatekeeper.demo import DemoKeys
from gatekeeper.errors import ConfigError
from gatekeeper.inventory import build_inventory

from ..helpers import (
    CATALOG,
    D5_TENANT,
    D5_TENANT_IP,
    US_LAB,
    US_LAB_IP,
    decide_offline_all,
    route,
    us_pack_config,
)
from .cases import ENV, SH, V41

NODE = InventoryNode(accelerators=InventoryAccelerators(model="H100-SXM", count=8))
ENTRIES = (
    InventoryEntry("excl", "slurm", 4, NODE, partitions=("excl",), exclusive=True),
    InventoryEntry("shared", "slurm", 4, NODE, partitions=("shared",)),
)
INVENTORY = build_inventory(ENTRIES, CATALOG)
ROUTE = route("slurm", inventory="shared")


def gpus(partition: str, **fields: Any) -> float:
    body = {"job": {**ENV, "partition": partition, "time_limit": 60, **fields}, "script": SH}
    c = measure(ROUTE, "POST", V41, CIMultiDict(), json.dumps(body).encode(), CATALOG, INVENTORY)
    assert c is not None
    return c.gpus


@pytest.mark.parametrize(
    ("fields", "shared", "exclusive"),
    [
        ({}, 0.0, 8.0),  # no GPU asked: the node's GPUs all the same
        ({"tres_per_job": "gres/gpu:1"}, 1.0, 8.0),
        ({"minimum_nodes": 2, "maximum_nodes": 2, "tres_per_node": "gres/gpu:1"}, 2.0, 16.0),
        ({"tres_per_job": "gres/gpu:12"}, 12.0, 16.0),  # two nodes' worth
        ({"shared": ["oversubscribe"], "tres_per_job": "gres/gpu:1"}, 1.0, 8.0),
        ({"tres_per_job": "gres/gpu:64"}, 32.0, 32.0),  # capped by the pool either way
    ],
)
def test_every_job_on_an_exclusive_pool_gets_whole_nodes(
    fields: dict[str, Any], shared: float, exclusive: float
) -> None:
    assert gpus("shared", **fields) == shared
    assert gpus("excl", **fields) == exclusive
    assert gpus("shared,excl", **fields) == exclusive  # the larger of the two places


def test_exclusive_changes_the_inventory_digest() -> None:
    plain = (InventoryEntry("excl", "slurm", 4, NODE, partitions=("excl",)), ENTRIES[1])
    assert build_inventory(plain, CATALOG).digest != INVENTORY.digest


@pytest.mark.parametrize("scheduler", ["kubernetes", "ray"])
def test_only_slurm_pools_are_exclusive(scheduler: str) -> None:
    text = f"""
inventory:
  - {{name: p, scheduler: {scheduler}, nodes: 2, exclusive: true,
     node: {{accelerators: {{model: H100-SXM, count: 8}}}}}}
"""
    with pytest.raises(ConfigError, match=r"inventory\[0\]\.exclusive: only slurm entries"):
        parse_config_text(text, "<test>", ".")


def test_exclusive_is_read_from_the_configuration() -> None:
    text = """
inventory:
  - {name: p, scheduler: slurm, partitions: [excl], nodes: 2, exclusive: true,
     node: {accelerators: {model: H100-SXM, count: 8}}}
"""
    assert parse_config_text(text, "<test>", ".").inventory[0].exclusive is True


# ----------------------------------------------------------------------------- the D:5 view


def _config(tmp: Path, keys: DemoKeys) -> Path:
    pool = {"name": "excl", "scheduler": "slurm", "nodes": 4, "partitions": ["excl"],
            "exclusive": True, "node": {"accelerators": {"model": "H100-SXM", "count": 8}}}  # fmt: skip
    return us_pack_config(tmp, keys, 18083, 19093, inventory=[pool])


def test_a_cpu_only_job_on_an_exclusive_gpu_pool_is_not_forwarded_to_d5(tmp_path: Path) -> None:
    keys = DemoKeys(tmp_path)
    cpu_only = {"job": {**ENV, "partition": "excl", "time_limit": 60}, "script": SH}
    asks = {
        who: (who, ip, "POST", V41, cpu_only)
        for who, ip in ((D5_TENANT, D5_TENANT_IP), (US_LAB, US_LAB_IP))
    }
    decisions = asyncio.run(decide_offline_all(_config(tmp_path, keys), keys, asks))
    acme = decisions[D5_TENANT]
    assert acme["action"] != "allow" and acme["status"] == 451, acme
    assert acme["compute"]["gpus"] == 8 and acme["compute"]["controlled"]
    lab = decisions[US_LAB]
    assert lab["action"] == "allow" and lab["compute"]["gpus"] == 8, lab
