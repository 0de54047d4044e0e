"""Each measurement class on its table of bodies (``cases``), with the test inventory."""

from __future__ import annotations

import json
from typing import Any

import pytest
from multidict import CIMultiDict

from gatekeeper.adapters import measure
from gatekeeper.context import ComputeRequest
from gatekeeper.errors import BadRequest

from ..helpers import CATALOG, check
from .cases import CASES, ENV, INVENTORY, REFUSED, ROUTES, SH, V41


def run(route: str, path: str, body: Any) -> ComputeRequest:
    raw = json.dumps(body).encode()
    c = measure(ROUTES[route], "POST", path, CIMultiDict(), raw, CATALOG, INVENTORY)
    assert c is not None
    return c


@pytest.mark.parametrize(
    ("route", "path", "body", "gpus", "hours", "model", "assumption"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bound(
    route: str,
    path: str,
    body: Any,
    gpus: float,
    hours: float,
    model: str | None,
    assumption: str | None,
) -> None:
    c = run(route, path, body)
    if model is not None and model not in {m.name for m in CATALOG.models}:
        # an uncatalogued model: said so (how it is priced is the catalog's business)
        assert (c.gpus, c.hours, c.gpu_model) == (gpus, hours, model), c
        assert not c.model_known, c
    else:
        check(c, gpus, hours, model)
    if assumption is not None:
        assert assumption in c.assumptions, c


@pytest.mark.parametrize(
    ("route", "path", "body", "reason", "text"),
    [r[1:] for r in REFUSED],
    ids=[r[0] for r in REFUSED],
)
def test_refused(route: str, path: str, body: Any, reason: str, text: str) -> None:
    with pytest.raises(BadRequest) as exc:
        run(route, path, body)
    assert exc.value.reason == reason
    assert exc.value.status == 400
    assert text in exc.value.detail, exc.value.detail


def test_script_and_body_readings_take_the_larger() -> None:
    # slurmrestd schedules the body (2 GPUs, 1 h); sbatch's reading would add the script's 8
    # GPUs per node: the bound holds either way.
    body = {
        "job": {
            "environment": ["A=1"],
            "partition": "gpu",
            "tres_per_job": "gres/gpu:2",
            "time_limit": 60,
            "script": "#!/bin/sh\n#SBATCH --gpus-per-node=8 -N 2 -t 10:00:00\nsrun x\n",
        }
    }
    c = run("plain", "/slurm/v0.0.41/job/submit", body)
    assert (c.gpus, c.hours) == (16, 1)


def test_body_tres_replaces_script_options_of_its_unit() -> None:
    body = {
        "job": {
            "environment": ["A=1"],
            "tres_per_node": "gres/gpu:2",
            "nodes": "1",
            "time_limit": 60,
            "script": "#!/bin/sh\n#SBATCH --gres=gpu:8\n#SBATCH --gpus-per-node=4\n",
        }
    }
    assert run("plain", "/slurm/v0.0.41/job/submit", body).gpus == 2


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("tres_per_node", "gres/vgpu:8", "vgpu"),
        ("tres_per_job", "gres/gpu_h100:8", "gpu_h100"),
        ("tres_per_task", "gres/gpus:2", "gpus"),
        ("tres_per_node", "gres/gpu/h100:8", "gpu/h100"),
        ("tres_per_job", "gres/nvidia.com/gpu:8", "nvidia.com/gpu"),
        ("tres_per_node", "gres/\uff47pu:8", "\uff47pu"),  # a full-width look-alike
        ("tres_per_node", "cpu=4,gres/npu:8", "npu"),
        ("tres_per_node", "gres/h100:8", "h100"),  # a GRES named after a catalogued model
        ("tres_per_job", "gres:a100:4", "a100"),
    ],
)
def test_generic_resource_that_may_be_an_accelerator_is_refused(
    field: str, value: str, name: str
) -> None:
    """A generic resource other than gpu/shard/mps is granted only where gres.conf declares it,
    and gres.conf can bind GPU devices to any name: one that looks like an accelerator is not
    counted as none."""
    body = {"job": {"partition": "h100", **ENV, field: value}, "script": SH}
    with pytest.raises(BadRequest) as exc:
        run("pooled", V41, body)
    assert (exc.value.reason, exc.value.detail) == (
        "unmeasurable-request",
        f"job.{field}: generic resource {name!r} may be an accelerator the gate has no count for",
    )


def test_other_generic_resources_and_licenses_grant_nothing() -> None:
    body = {"job": {"partition": "h100", **ENV,
                    "tres_per_node": "gres/nic:1,license/gpu_seats:2,cpu=4"}, "script": SH}  # fmt: skip
    assert run("pooled", V41, body).gpus == 0
