"""Slurm adapter: table of real-shaped slurmrestd bodies with expected GPU-hours and TPP-hours."""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper.errors import BadRequest

from .helpers import CATALOG, check, route, run

R = route("slurm")
PATH = "/slurm/v0.0.41/job/submit"
ENV = {"environment": ["PATH=/bin:/usr/bin"], "current_working_directory": "/home/alice"}


def job(**fields: Any) -> dict[str, Any]:
    return {"job": {**ENV, "name": "train", **fields}}


SCRIPT_HDR = "#!/bin/bash\n"

# (id, body, gpus, hours, model)
CASES: list[tuple[str, Any, float, float, str | None]] = [
    # tres_per_node x node count (max of a range), time_limit struct in minutes.
    (
        "domain-tres-per-node-range",
        job(
            tres_per_node="gres/gpu:h100:8",
            nodes="2-4",
            time_limit={"set": True, "infinite": False, "number": 720},
        ),
        32,
        12,
        "H100-SXM",
    ),
    ("tres-per-job-untyped", job(tres_per_job="gres/gpu:8", time_limit=60), 8, 1, "H100-SXM"),
    ("tres-per-job-typed-a100", job(tres_per_job="gres/gpu:a100:4", time_limit=90), 4, 1.5, "A100"),
    (
        "tres-per-task",
        job(tres_per_task="gres/gpu:1", tasks=16, time_limit=120),
        16,
        2,
        "H100-SXM",
    ),
    (
        "tres-per-task-tasks-per-node",
        job(tres_per_task="gres/gpu:b200:1", tasks_per_node=8, nodes="2", time_limit=30),
        16,
        0.5,
        "B200",
    ),
    (
        "tres-equals-syntax",
        job(tres_per_node="cpu=8,gres/gpu:h200=4", time_limit=60),
        4,
        1,
        "H200-SXM",
    ),
    ("legacy-gres-colon", job(tres_per_node="gres:gpu:2", time_limit=60), 2, 1, "H100-SXM"),
    (
        "infinite-time",
        job(tres_per_job="gres/gpu:2", time_limit={"set": True, "infinite": True}),
        2,
        168,
        "H100-SXM",
    ),
    ("missing-time", job(tres_per_job="gres/gpu:2"), 2, 168, "H100-SXM"),
    (
        "unset-time",
        job(tres_per_job="gres/gpu:2", time_limit={"set": False, "number": 5}),
        2,
        168,
        "H100-SXM",
    ),
    (
        "longer-than-max-is-kept",
        job(tres_per_job="gres/gpu:1", time_limit=20160),
        1,
        336,
        "H100-SXM",
    ),
    (
        "array-range-multiplies",
        job(tres_per_node="gres/gpu:h100:8", array="0-3", time_limit=60),
        32,
        1,
        "H100-SXM",
    ),
    ("array-list", job(tres_per_job="gres/gpu:2", array="1,5,7", time_limit=60), 6, 1, "H100-SXM"),
    (
        "array-limit-percent",
        job(tres_per_job="gres/gpu:1", array="0-15%4", time_limit=60),
        16,
        1,
        "H100-SXM",
    ),
    ("array-step", job(tres_per_job="gres/gpu:1", array="0-15:2", time_limit=60), 8, 1, "H100-SXM"),
    (
        "partition-names-model",
        job(tres_per_job="gres/gpu:4", partition="mi300x", time_limit=60),
        4,
        1,
        "MI300X",
    ),
    (
        "partition-list-most-capable",
        job(tres_per_job="gres/gpu:4", partition="a100,b300", time_limit=60),
        4,
        1,
        "B300",
    ),
    (
        # an uncatalogued partition is priced as the catalog's most capable part
        "partition-list-unknown-counts-as-top",
        job(tres_per_job="gres/gpu:4", partition="a100,b300,debug", time_limit=60),
        4,
        1,
        "debug",
    ),
    ("uncontrolled-h20", job(tres_per_job="gres/gpu:h20:8", time_limit=60), 8, 1, "H20"),
    ("no-gpus", job(time_limit=60, tasks=4), 0, 1, None),
    ("gres-none", job(tres_per_node="gres/gpu:0", time_limit=60), 0, 1, None),
    # heterogeneous job: components are summed
    (
        "hetjob-sum",
        {
            "jobs": [
                {**ENV, "tres_per_job": "gres/gpu:h100:8", "time_limit": 60},
                {**ENV, "tres_per_job": "gres/gpu:h100:4", "time_limit": 60},
            ]
        },
        12,
        1,
        "H100-SXM",
    ),
    # #SBATCH lines inside the script
    (
        "sbatch-gres-nodes-time",
        job(
            time_limit=720,
            script=SCRIPT_HDR
            + "#SBATCH --gres=gpu:h100:8\n#SBATCH -N 2\n#SBATCH --time=12:00:00\nsrun python train.py\n",
        ),
        16,
        12,
        "H100-SXM",
    ),
    (
        "sbatch-gpus-short-G-days",
        job(time_limit="1-12", script=SCRIPT_HDR + "#SBATCH -G 4\n#SBATCH -t 1-12\nsrun x\n"),
        4,
        36,
        "H100-SXM",
    ),
    (
        "sbatch-gpus-per-node-range-array",
        job(
            time_limit=90,
            script=SCRIPT_HDR
            + "#SBATCH --gpus-per-node=a100:4 --nodes=1-2\n#SBATCH --array=0-1\n#SBATCH -t 90\n",
        ),
        16,
        1.5,
        "A100",
    ),
    (
        "sbatch-gpus-per-task",
        job(
            time_limit=30,
            script=SCRIPT_HDR
            + "#SBATCH --ntasks=4\n#SBATCH --gpus-per-task=2\n#SBATCH --time=30:00\n",
        ),
        8,
        0.5,
        "H100-SXM",
    ),
    # sbatch reads options in order: a repeated option ends with its last value
    (
        "sbatch-repeated-last-wins",
        job(time_limit=60, script=SCRIPT_HDR + "#SBATCH --gpus=8\n#SBATCH --gpus=1\n"),
        1,
        1,
        "H100-SXM",
    ),
    # the body alone asks for nothing, so the script's reading decides (59:01 rounds up)
    (
        "sbatch-time-m-s-rounds-up",
        job(script=SCRIPT_HDR + "#SBATCH --gpus=1\n#SBATCH -t 59:01\n"),
        1,
        1,
        "H100-SXM",
    ),
    (
        "sbatch-unlimited",
        job(script=SCRIPT_HDR + "#SBATCH --gpus=1\n#SBATCH --time=UNLIMITED\n"),
        1,
        168,
        "H100-SXM",
    ),
    (
        "body-wins-over-script",
        job(
            tres_per_node="gres/gpu:2",
            time_limit=60,
            script=SCRIPT_HDR + "#SBATCH --gpus-per-node=8\n#SBATCH -t 10:00:00\n",
        ),
        2,
        1,
        "H100-SXM",
    ),
    (
        "top-level-script-old-api",
        {"script": SCRIPT_HDR + "#SBATCH --gres=gpu:l40s:2\n#SBATCH -t 2:00:00\n", "job": ENV},
        2,
        2,
        "L40S",
    ),
    (
        "script-gpus-body-time",
        {"script": SCRIPT_HDR + "#SBATCH --gres=gpu:l40s:2\n", "job": {**ENV, "time_limit": 30}},
        2,
        0.5,
        "L40S",
    ),
    (
        "commented-out-directive-ignored",
        job(time_limit=60, script=SCRIPT_HDR + "##SBATCH --gpus=64\n#SBATCH --gpus=2\n"),
        2,
        1,
        "H100-SXM",
    ),
    (
        "uint-struct-tasks",
        job(tres_per_task="gres/gpu:1", tasks={"set": True, "number": 3}, time_limit=60),
        3,
        1,
        "H100-SXM",
    ),
]


@pytest.mark.parametrize(
    ("body", "gpus", "hours", "model"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_slurm_table(body: Any, gpus: float, hours: float, model: str | None) -> None:
    check(run(R, body, path=PATH), gpus, hours, model)


def test_domain_example_exact_figures() -> None:
    """8 H100 per node on up to 4 nodes for 720 minutes."""
    c = run(R, CASES[0][1], path=PATH)
    assert (c.gpu_hours, c.tpp_hours) == (384.0, 6_079_488.0)
    assert c.eccn == "3A090.a" and c.controlled
    assert c.tpp_hours / 15_832 == 384.0  # H100-equivalent hours


def test_hetjob_mixed_models_sums_tpp_hours() -> None:
    body = {
        "jobs": [
            {"tres_per_job": "gres/gpu:h100:8", "time_limit": 60},
            {"tres_per_job": "gres/gpu:h20:8", "time_limit": 60},
        ]
    }
    c = run(R, body, path=PATH)
    assert c.gpus == 16 and c.gpu_hours == 16
    assert c.tpp_hours == 8 * 15_832 + 8 * 2_368
    assert c.gpu_model == "H100-SXM" and c.tpp == 15_832 and c.eccn == "3A090.a"


def test_hetjob_different_hours() -> None:
    body = {
        "jobs": [
            {"tres_per_job": "gres/gpu:h100:8", "time_limit": 60},
            {"tres_per_job": "gres/gpu:h100:4", "time_limit": 120},
        ]
    }
    c = run(R, body, path=PATH)
    assert (c.gpus, c.hours, c.gpu_hours, c.tpp_hours) == (12, 2, 16, 16 * 15_832)


def test_unknown_type_is_highest_tpp_controlled() -> None:
    c = run(R, job(tres_per_job="gres/gpu:h100pcie:2", time_limit=60), path=PATH)
    assert c.controlled and c.tpp == CATALOG.highest.tpp
    assert c.gpu_model == "h100pcie" and "unknown-gpu-model" in c.assumptions and not c.model_known


def test_unknown_type_denied_when_route_says_so() -> None:
    with pytest.raises(BadRequest) as exc:
        run(route("slurm", unknown_gpu="deny"), job(tres_per_job="gres/gpu:xyz:2"), path=PATH)
    assert exc.value.reason == "unknown-gpu-model"


def test_no_model_anywhere_is_unknown() -> None:
    c = run(
        route("slurm", gpu_model=None), job(tres_per_job="gres/gpu:1", time_limit=60), path=PATH
    )
    assert (
        c.gpu_model is None
        and c.tpp == CATALOG.highest.tpp
        and "unknown-gpu-model" in c.assumptions
        and not c.model_known
    )


def test_gpus_per_socket_without_inventory_is_refused() -> None:
    # Was 4 (two sockets assumed): a node with more sockets would have got more. The socket
    # count is not known here, so without an inventory the request cannot be bounded.
    with pytest.raises(BadRequest) as exc:
        run(R, job(tres_per_socket="gres/gpu:2", time_limit=60), path=PATH)
    assert exc.value.reason == "unmeasurable-request"
    assert "job.tres_per_socket" in exc.value.detail


BAD: list[tuple[str, Any, str]] = [
    ("not-object", [1, 2], "bad-body"),
    ("gres-garbage", job(tres_per_node="gres/gpu:a:b:c"), "unknown-gpu-syntax"),
    ("gres-not-string", job(tres_per_node=8), "unknown-gpu-syntax"),
    ("bad-time", job(tres_per_job="gres/gpu:1", time_limit="1:2:3:4"), "bad-time"),
    ("negative", job(tres_per_job="gres/gpu:1", time_limit=-5), "bad-value"),
    ("bool-tasks", job(tres_per_task="gres/gpu:1", tasks=True), "bad-value"),
    ("bad-nodes", job(tres_per_node="gres/gpu:1", nodes="4-2"), "bad-nodes"),
    ("bad-array", job(tres_per_job="gres/gpu:1", array="0-x"), "bad-array"),
    ("array-too-big", job(tres_per_job="gres/gpu:1", array="0-999999999"), "bad-array"),
    ("sbatch-gpus-no-count", job(script="#SBATCH --gpus=h100\n"), "unknown-gpu-syntax"),
    (
        "huge-count",
        job(tres_per_job="gres/gpu:999999999", nodes="1", array="0-100"),
        "gpu-count-out-of-range",
    ),
    ("script-early-error", job(script="#SBATCH -t 1:x\n" + "x\n" * 100_001), "bad-time"),
    # Directive count: a megabyte of #SBATCH arguments is refused, not read one by one (CPU).
    ("too-many-directives", job(script="#SBATCH -N 1\n" * 1001), "bad-script"),
    (
        "too-many-distinct-directives",
        job(script="".join(f"#SBATCH --gres=gpu:h100:{i % 8 + 1} -t {i}:00\n" for i in range(700))),
        "bad-script",
    ),
]


@pytest.mark.parametrize(("body", "reason"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_slurm_bad_bodies(body: Any, reason: str) -> None:
    with pytest.raises(BadRequest) as exc:
        run(R, body, path=PATH)
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"job": {"tres_per_job": "gres/gpu:0", "tres_per_job": "gres/gpu:8"}}', "duplicate-key"),
        (b'{"job": ', "bad-json"),
        (b'{"job": {"time_limit": NaN}}', "bad-json"),
        (b"\xff\xfe{}", "bad-json"),
        (b"[" * 5000 + b"]" * 5000, "body-too-deep"),
        (b'{"a":' * 100 + b"1" + b"}" * 100, "body-too-deep"),
    ],
)
def test_slurm_hostile_json(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRequest) as exc:
        run(R, raw, path=PATH)
    assert exc.value.reason == reason


def test_long_script_of_few_lines_is_read() -> None:
    script = "#!/bin/bash\n# " + "x" * 200_000 + "\nsrun true\n"
    check(
        run(R, job(tres_per_job="gres/gpu:2", time_limit=60, script=script), path=PATH),
        2,
        1,
        "H100-SXM",
    )


def test_repeated_values_answer_the_same() -> None:
    body = job(
        tres_per_node="gres/gpu:h100:8",
        nodes="2-4",
        time_limit="12:00:00",
        array="0-3",
        script="#SBATCH --gpus-per-node=a100:2\n#SBATCH -N 3 -t 1-00:00:00 --array=1,5\n",
    )
    first = run(R, body, path=PATH)
    assert run(R, body, path=PATH) == first
    check(first, 128, 12, "H100-SXM")
    for _ in range(2):
        with pytest.raises(BadRequest) as exc:
            run(R, job(tres_per_job="gres/gpu:1", time_limit="1:2:3:4"), path=PATH)
        assert exc.value.reason == "bad-time"
        with pytest.raises(BadRequest) as exc:
            run(R, job(script="#SBATCH --gpus=h100\n"), path=PATH)
        assert exc.value.reason == "unknown-gpu-syntax"


def test_many_directive_lines_and_long_lines() -> None:
    # Every directive line is read; a repeated option ends with its last value (i = 79).
    lines = [
        f"#SBATCH --gpus-per-node=h100:{i % 8 + 1} -N {i % 3 + 1} -t {i + 1}" for i in range(80)
    ]
    c = run(R, job(script="\n".join(lines)), path=PATH)
    check(c, 16, 80 / 60, "H100-SXM")
    long_line = "#SBATCH " + "--gres=gpu:a100:2 " * 20 + "-N 2 --time=1:00:00"
    check(run(R, job(script=long_line), path=PATH), 4, 1, "A100")
    for bad in ([*lines, "#SBATCH -t 1:x"], [long_line + " -t 1:x"]):
        with pytest.raises(BadRequest) as exc:
            run(R, job(script="\n".join(bad)), path=PATH)
        assert exc.value.reason == "bad-time"
