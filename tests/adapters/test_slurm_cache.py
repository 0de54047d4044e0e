"""The Slurm adapter's cache of measured one-job submissions (``slurm._measured``).

Whatever was measured before, a job measures to what it would measure to afresh: the cache key
must tell apart every pair of jobs the adapter tells apart (``1``, ``1.0``, ``True`` and ``"1"``;
``{"set": false}`` and ``{"set": 0}``; a field absent and a field ``null``), and a refused job
must stay refused. Hypothesis draws pairs of jobs from values that collide under ``==``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
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
# Scripts whose #SBATCH options overlap the body fields and each other (the body wins; the
# script's shape is part of the cache key), with counts that differ only by type or by unit.
SCRIPT_TEXTS: list[str | None] = [
    None,
    "#!/bin/bash\nsrun x\n",
    "#!/bin/bash\n#SBATCH -N 2\nsrun x\n",
    "#!/bin/bash\n#SBATCH -N 4\nsrun x\n",
    "#SBATCH --gres=gpu:h100:4\n#SBATCH --time=2:00:00\n",
    "#SBATCH --gres=gpu:h100:4\n#SBATCH --time=120\n",
    "#SBATCH --gres=gpu:h100:4\n#SBATCH --time=30\n",
    "#SBATCH --gres=gpu:h100:4\n",
    "#SBATCH --gres=gpu:h100:2\n",
    "#SBATCH --gres=gpu:a100:4\n",
    "#SBATCH --gpus=8\n#SBATCH --partition=h100\n",
    "#SBATCH --gpus-per-node=8\n#SBATCH --nodes=2\n",
    "#SBATCH --gpus-per-task=1\n#SBATCH --ntasks=8\n#SBATCH --array=0-3\n",
    "#SBATCH --gres=gpu:a100:2\n#SBATCH --gres=gpu:h100:2\n",
    "#SBATCH --time=1-00:00:00\n#SBATCH -p a100\n",
    "#SBATCH --gres=gpu:8\n#SBATCH --time=nope\n",
    "#SBATCH --gres=gpu:h100:4\n#SBATCH --time=UNLIMITED\n",
    "#SBATCH --gres=gpu:h100:4\n#SBATCH -N 2\n",
    "#SBATCH --gres=gpu:h100:4\n#SBATCH --ntasks-per-node=4\n",
    "#SBATCH --gpus=8\n#SBATCH --partition=a100\n",
    "#SBATCH --gpus=8\n",
    "#SBATCH --gpus-per-task=1\n#SBATCH --ntasks=8\n",
    "#SBATCH --gpus-per-task=1\n#SBATCH --ntasks=4\n#SBATCH --array=0-3\n",
    "#SBATCH --gpus-per-task=1\n#SBATCH --ntasks=4\n#SBATCH --array=0-7\n",
    "#SBATCH --gpus-per-task=1\n#SBATCH --ntasks-per-node=4\n",
    "#SBATCH --gpus-per-task=1\n#SBATCH --ntasks-per-node=2\n",
    "#SBATCH --gpus-per-socket=2\n#SBATCH --sockets-per-node=2\n",
    "#SBATCH --gpus-per-socket=2\n",
    "#SBATCH --gres=gpu:h100:4\n#SBATCH --time=0\n",
]
SCRIPTS = st.sampled_from(SCRIPT_TEXTS)
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
    first=JOBS, second=JOBS, script1=SCRIPTS, script2=SCRIPTS,
    same_job=st.booleans(), r1=st.integers(0, 2), r2=st.integers(0, 2),
)  # fmt: skip
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_job_measures_the_same_whatever_was_measured_before(
    first: dict[str, Any],
    second: dict[str, Any],
    script1: str | None,
    script2: str | None,
    same_job: bool,
    r1: int,
    r2: int,
) -> None:
    if same_job:
        first = second  # only the scripts differ: their shapes must tell the entries apart
    slurm._measured.clear()
    fresh = _outcome(second, script2, r2)  # nothing cached
    slurm._measured.clear()
    _outcome(first, script1, r1)  # whatever this leaves in the cache ...
    assert _outcome(second, script2, r2) == fresh  # ... does not change the second job's answer
    assert _outcome(second, script2, r2) == fresh  # nor does its own entry


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


@pytest.mark.parametrize("job", [{}, {"partition": "h100"}, {"nodes": 2, "time_limit": 60}])
def test_every_pair_of_scripts_is_told_apart(job: dict[str, Any]) -> None:
    """Each script measured after each other one (same job, every route) measures as afresh."""
    fresh = {(i, r): _fresh(job, text, r) for i, text in enumerate(SCRIPT_TEXTS) for r in range(3)}
    for before in SCRIPT_TEXTS:
        for j, after in enumerate(SCRIPT_TEXTS):
            for r in range(3):
                slurm._measured.clear()
                _outcome(job, before, r)
                assert _outcome(job, after, r) == fresh[j, r], (before, after, r)


def _fresh(job: dict[str, Any], script: str | None, r: int) -> Any:
    slurm._measured.clear()
    return _outcome(job, script, r)


def test_a_script_shape_is_served_from_the_cache() -> None:
    """#SBATCH options are part of the key: the same options hit, other options miss."""
    slurm._measured.clear()
    job = {"partition": "h100", "name": "a"}
    four = "#!/bin/bash\n#SBATCH --gres=gpu:h100:4\n#SBATCH --time=2:00:00\nsrun a\n"
    first = _outcome(job, four, 0)
    assert len(slurm._measured) == 1 and (first.gpus, first.hours) == (4.0, 2.0)
    again = _outcome({**job, "name": "b"}, four.replace("srun a", "srun b"), 0)
    assert again is first and len(slurm._measured) == 1
    eight = _outcome(job, four.replace("h100:4", "h100:8"), 0)
    assert eight.gpus == 8.0 and len(slurm._measured) == 2
    # the body wins over the script for the same option, and the cache keeps that
    body_time = _outcome({**job, "time_limit": 30}, four, 0)
    assert (body_time.gpus, body_time.hours) == (4.0, 0.5)


def test_uncacheable_jobs_are_measured_every_time() -> None:
    """Hetjobs, long text, nested values and scripts with many GPU options take the full path."""
    slurm._measured.clear()
    job = {"tres_per_node": "gres/gpu:8"}
    _outcome({**job, "partition": "h100," * 200}, None, 0)
    _outcome({**job, "comment": "x"}, "#SBATCH --partition=" + "h100," * 200 + "\n", 0)
    many = "#SBATCH --gres=" + ",".join(f"gpu:t{n}:1" for n in range(10)) + "\n"
    _outcome({}, many, 0)
    raw = json.dumps({"jobs": [job, job]}).encode()
    assert slurm.measure_slurm(ROUTES[0], "POST", "/", {}, raw, CATALOG).gpus == 16.0
    assert slurm._measured == {}
