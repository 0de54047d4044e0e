"""Which batch script slurmrestd runs when the request and its first component both carry one.

Read in Slurm's openapi plugins: v0.0.37/38 always put the request's ``script`` on the job; from
v0.0.39 the request's replaces a single job's own ``script``, and a heterogeneous job's first
component's in most releases, while Slurm 23.11.0 and the v0.0.39 plugin keep the component's
there. The gate reads both scripts' ``#SBATCH`` blocks and counts the larger reading, so a body
that declares nothing while the script slurmrestd runs asks for eight GPUs is never zero (the
D:5 view: zero H100s would be forwarded to a D:5-parented tenant).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from multidict import CIMultiDict

from gatekeeper.adapters import measure
from gatekeeper.errors import BadRequest

from ..helpers import CATALOG
from .cases import ENV, INVENTORY, ROUTES, SH, V38, V41

JOB = {**ENV, "time_limit": 60}


def gpus(body: dict[str, Any], path: str = V41) -> float:
    raw = json.dumps(body).encode()
    c = measure(ROUTES["plain"], "POST", path, CIMultiDict(), raw, CATALOG, INVENTORY)
    assert c is not None
    return c.gpus


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # the request's script replaces the job's own: its block counts
        ({"script": SH + "#SBATCH -G 8\n", "job": {**JOB, "script": SH}}, 8.0),
        # ... and where the job's own were kept, that block counts too
        ({"script": SH + "#SBATCH -G 2\n", "job": {**JOB, "script": SH + "#SBATCH -G 6\n"}}, 6.0),
        ({"job": {**JOB, "script": SH + "#SBATCH -G 3\n"}}, 3.0),
        # a heterogeneous job: each component counts the larger of the two scripts' blocks
        (
            {
                "script": SH + "#SBATCH -G 16\n",
                "jobs": [
                    {**JOB, "script": SH + "#SBATCH -G 2\n#SBATCH hetjob\n#SBATCH -G 4\n"},
                    JOB,
                ],
            },
            20.0,
        ),
        # blocks beyond the components: the larger of the two scripts' at each position
        (
            {
                "script": SH + "#SBATCH -G 1\n#SBATCH hetjob -G 5\n#SBATCH hetjob -G 7\n",
                "job": {**JOB, "script": SH + "#SBATCH -G 1\n#SBATCH hetjob -G 3\n"},
            },
            13.0,
        ),
    ],
    ids=["request-replaces", "job-kept", "job-only", "hetjob", "extra-blocks"],
)
def test_both_scripts_are_read(body: dict[str, Any], expected: float) -> None:
    assert gpus(body) == expected


def test_the_same_script_twice_counts_once() -> None:
    text = SH + "#SBATCH -G 1\n#SBATCH hetjob -G 3\n"
    assert gpus({"script": text, "job": {**JOB, "script": text}}) == 4.0


def test_older_plugins_run_the_request_script() -> None:
    body = {"script": SH + "#SBATCH -G 4\n", "job": {**ENV, "time_limit": 60}}
    assert gpus(body, V38) == 4.0


def test_a_script_that_is_not_text_is_refused_naming_it() -> None:
    with pytest.raises(BadRequest) as e:
        gpus({"script": SH, "job": {**JOB, "script": ["#SBATCH -G 8"]}})
    assert e.value.detail == "job.script: expected a string"
