"""Properties of the bound over generated v0.0.41 jobs: it never shrinks when a job asks for more,
fields that grant nothing change nothing, and it never exceeds what the partition holds."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatekeeper.adapters import measure
from gatekeeper.context import ComputeRequest
from gatekeeper.errors import BadRequest

from ..helpers import CATALOG
from .cases import ENV, INVENTORY, PLAIN, V41

FIELDS: dict[str, Any] = {
    "partition": st.sampled_from(["gpu", "a100", "a100,gpu"]),
    "tres_per_node": st.sampled_from(["gres/gpu:1", "gres/gpu:8", "gres/shard:3", "gres/mps:50"]),
    "tres_per_job": st.sampled_from(["gres/gpu:2", "gres/gpu:h100:16", "gres/shard:9"]),
    "tres_per_task": st.sampled_from(["gres/gpu:1", "gres/gpu:2"]),
    "nodes": st.sampled_from(["1", "2", "2-4", "1-64"]),
    "tasks": st.integers(1, 64),
    "tasks_per_node": st.integers(1, 8),
    "ntasks_per_tres": st.integers(1, 4),
    "required_nodes": st.sampled_from(["n[1-3]", "n1,n2", "r[1-2]n[1-2]"]),
    "time_limit": st.integers(1, 10_000),
    "array": st.sampled_from(["0-3", "1,5", "0-15%2"]),
}
JOBS = st.fixed_dictionaries(
    {"partition": FIELDS["partition"]},
    optional={k: v for k, v in FIELDS.items() if k != "partition"},
)


def bound(job: dict[str, Any]) -> ComputeRequest | None:
    raw = json.dumps({"job": {**ENV, **job}}).encode()
    try:
        return measure(PLAIN, "POST", V41, {}, raw, CATALOG, INVENTORY)
    except BadRequest:
        return None


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(JOBS)
def test_neutral_fields_change_nothing(job: dict[str, Any]) -> None:
    extra = {"name": "x", "comment": "y", "standard_output": "/tmp/o", "hold": True}
    assert bound({**job, **extra}) == bound(job)


@SETTINGS
@given(JOBS, st.sampled_from([{"exclusive": "user"}, {"shared": ["none"]}]))
def test_whole_nodes_never_lower_the_bound(job: dict[str, Any], whole: dict[str, Any]) -> None:
    before, after = bound(job), bound({**job, **whole})
    if before is not None and after is not None:
        assert after.gpus >= before.gpus and after.gpu_hours >= before.gpu_hours


@SETTINGS
@given(JOBS)
def test_never_more_than_the_partitions_hold(job: dict[str, Any]) -> None:
    c = bound(job)
    if c is not None:
        per_task_cap = max(p.accelerators for p in INVENTORY.pools)
        arrays = {"0-3": 4, "1,5": 2, "0-15%2": 16}.get(job.get("array", ""), 1)
        assert c.gpus <= per_task_cap * arrays
        assert c.hours <= 168
