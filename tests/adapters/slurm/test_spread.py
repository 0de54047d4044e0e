"""A per-job GPU count beside per-node counts: slurmctld spreads the job over more nodes.

Each body below was submitted to a real slurmctld (Slurm 22.05, openapi v0.0.38, through the
conformance lab in ``tests/conformance``), which recorded the requested ``gres/gpu`` count
written beside it: it places the per-job GPUs at the smallest per-node count, on as many nodes as
that takes, and gives each of those nodes its per-node GPUs. The gate must never measure less.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from multidict import CIMultiDict

from gatekeeper.adapters import measure

from ..helpers import CATALOG
from .cases import INVENTORY, ROUTES, V38

BASE = {"name": "conformance", "current_working_directory": "/tmp", "environment": {"A": "b"}}

RECORDED: list[tuple[str, dict[str, Any], int]] = [
    ("gpus-2-per-node-6-gres-1", {"gpus": 2, "gpus_per_node": 6, "gres": "gpu:1"}, 12),
    (
        "gpus-16-per-node-4-gres-2",
        {"gpus": 16, "gpus_per_node": 4, "gres": "gres:gpu:2", "sockets_per_node": 2},
        32,
    ),
    (
        "gpus-12-per-node-3-gres-1",
        {"Gpus_Per_Node": 3, "gpus": 12, "gres": "gpu:1", "sockets_per_node": 1},
        36,
    ),
    (
        "gpus-12-per-node-3-gres-2",
        {"Gpus_Per_Node": 3, "gpus": 12, "gres": "gpu:2", "sockets_per_node": 1},
        18,
    ),
]


@pytest.mark.parametrize(("fields", "recorded"), [pytest.param(f, r, id=i) for i, f, r in RECORDED])
def test_never_below_what_slurmctld_records(fields: dict[str, Any], recorded: int) -> None:
    body = json.dumps({"job": {**BASE, "partition": "gpu", **fields}, "script": "#!/bin/sh\n"})
    c = measure(ROUTES["plain"], "POST", V38, CIMultiDict(), body.encode(), CATALOG, INVENTORY)
    assert c is not None and c.gpus >= recorded, c


def test_a_whole_node_job_is_whole_on_every_node_it_spreads_to() -> None:
    """slurmctld recorded 67 for this heterogeneous job (64: every GPU of the 8-node partition
    for the exclusive component, spread over as many nodes as 16 GPUs at 1 per node need; 3)."""
    first = {**BASE, "exclusive": "exclusive", "gpus": 16, "gpus_per_node": 1, "gres": "gres:gpu:2"}
    body = json.dumps({"jobs": [first, {**BASE, "gpus": 3}], "script": "#!/bin/sh\n"})
    c = measure(
        ROUTES["pooled"],
        "POST",
        V38.replace("v0.0.38", "v0.0.37"),
        CIMultiDict(),
        body.encode(),
        CATALOG,
        INVENTORY,
    )
    # the test inventory's pool holds 16 nodes of 8: 16 whole nodes and the second part's 3
    assert c is not None and c.gpus >= 16 * 8 + 3, c
