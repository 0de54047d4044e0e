"""The Slurm adapter's cache of measured one-job submissions (``slurm._measured``).

Whatever was measured before, a job measures to what it would measure to afresh: the cache key
must tell apart every pair of jobs the adapter tells apart (``1``, ``1.0``, ``True`` and ``"1"``;
``{"set": false}`` and ``{"set": 0}``; a field absent and a field ``null``), and a refused job
must stay refused. Hypothesis draws pairs of jobs from values that collide under ``==``.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatekeeper.adapters import slurm
from gatekeeper.errors import BadRequest

from .helpers import CATALOG, route

FIELDS = sorted(slurm._DECIDING_FIELDS)
# Values that are == to each other across types, valid and invalid ones, nested mappings.
VALUES: list[Any] = [
    None, True, False, 0, 1, 1.0, 2, 8, 8.0, "1", "2", "2-4", "8", "h100", "a100,h100", "nope",
    "", "none", "gres/gpu:8", "gres/gpu:h100:4", "gpu:2", "h100:2", "1:00:00", "0-3", "0-3%1",
    {"set": True, "infinite": False, "number": 60}, {"set": True, "infinite": True},
    {"set": False, "number": 2}, {"set": 0, "number": 2}, {"set": 1, "number": 2},
    {"set": True, "number": True}, {"number": 60}, {"number": 60.0}, {}, ["x"], [1],
    {"set": True, "number": {"a": 1}},
]  # fmt: skip
JOBS = st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(VALUES), max_size=6)
SCRIPTS = st.sampled_from([None, "#!/bin/bash\nsrun x\n", "#!/bin/bash\n#SBATCH -N 2\nsrun x\n"])
ROUTES = [route("slurm"), route("slurm", max_hours=24.0), route("slurm", unknown_gpu="deny")]


def _outcome(job: dict[str, Any], script: str | None, r: int) -> Any:
    body: dict[str, Any] = {"job": job}
    if script is not None:
        body["script"] = script
    raw = json.dumps(body).encode()
    try:
        return slurm.measure_slurm(ROUTES[r], "POST", "/", {}, raw, CATALOG)
    except BadRequest as exc:
        return ("refused", exc.reason)


@given(
    first=JOBS, second=JOBS, script=SCRIPTS, r1=st.integers(0, 2), r2=st.integers(0, 2)
)  # fmt: skip
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_job_measures_the_same_whatever_was_measured_before(
    first: dict[str, Any], second: dict[str, Any], script: str | None, r1: int, r2: int
) -> None:
    slurm._measured.clear()
    fresh = _outcome(second, script, r2)  # nothing cached
    slurm._measured.clear()
    _outcome(first, script, r1)  # whatever this leaves in the cache ...
    assert _outcome(second, script, r2) == fresh  # ... does not change the second job's answer
    assert _outcome(second, script, r2) == fresh  # nor does its own entry


_ABSENT = object()
# Pairs of values that are == (or both "nothing") but that the adapter may tell apart.
TWINS: list[tuple[Any, Any]] = [
    (1, True), (1, 1.0), (0, False), (0, 0.0), (1.0, True), (2, 2.0), (None, _ABSENT),
    ({"set": False, "number": 2}, {"set": 0, "number": 2}),
    ({"set": True, "number": 60}, {"set": 1, "number": 60}),
    ({"number": 60}, {"number": 60.0}), ({"number": 1}, {"number": True}),
    ({"set": True, "infinite": False, "number": 60}, {"set": True, "infinite": 0, "number": 60}),
]  # fmt: skip


# Clean jobs around the twin value, so that no other field's refusal hides the difference.
BASES = st.sampled_from(
    [{}, {"tres_per_node": "gres/gpu:8"}, {"partition": "h100", "gpus": 2}, {"nodes": "2"}]
)


@given(
    job=st.one_of(BASES, JOBS),
    field=st.sampled_from(FIELDS),
    twins=st.sampled_from(TWINS),
    swap=st.booleans(),
    script=SCRIPTS,
    r=st.integers(0, 2),
)
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_jobs_that_differ_only_by_a_value_type_are_not_confused(
    job: dict[str, Any],
    field: str,
    twins: tuple[Any, Any],
    swap: bool,
    script: str | None,
    r: int,
) -> None:
    a, b = reversed(twins) if swap else twins
    first, second = dict(job), dict(job)
    for target, value in ((first, a), (second, b)):
        if value is _ABSENT:
            target.pop(field, None)
        else:
            target[field] = value
    slurm._measured.clear()
    fresh = _outcome(second, script, r)
    slurm._measured.clear()
    _outcome(first, script, r)
    assert _outcome(second, script, r) == fresh


def test_the_common_shape_is_served_from_the_cache() -> None:
    slurm._measured.clear()
    job = {"partition": "h100", "tres_per_node": "gres/gpu:h100:8", "nodes": "2",
           "time_limit": {"set": True, "infinite": False, "number": 60}}  # fmt: skip
    first = _outcome({**job, "name": "a", "environment": ["A=1"]}, "#!/bin/bash\nsrun a\n", 0)
    assert len(slurm._measured) == 1
    # another name, environment and script body: the same entry
    again = _outcome({**job, "name": "b", "environment": ["B=2"]}, "#!/bin/bash\nsrun b\n", 0)
    assert again is first and len(slurm._measured) == 1
    assert (first.gpus, first.hours, first.gpu_model) == (16.0, 1.0, "H100-SXM")


def test_uncacheable_jobs_are_measured_every_time() -> None:
    """#SBATCH lines, hetjobs, long text and nested values take the full path (nothing kept)."""
    slurm._measured.clear()
    job = {"tres_per_node": "gres/gpu:8"}
    _outcome(job, "#!/bin/bash\n#SBATCH -N 2\nsrun x\n", 0)
    _outcome({**job, "partition": "h100," * 200}, None, 0)
    raw = json.dumps({"jobs": [job, job]}).encode()
    assert slurm.measure_slurm(ROUTES[0], "POST", "/", {}, raw, CATALOG).gpus == 16.0
    assert slurm._measured == {}
