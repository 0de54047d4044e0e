"""The Slurm lab itself: a GPU job submitted to the real slurmrestd reads back with its GPUs."""

from __future__ import annotations

import shutil

import pytest

from tests.conformance.slurm_lab import (
    GPUS_PER_NODE,
    SlurmLab,
    missing_binaries,
    parse_gres_detail,
    parse_tres,
)

SCRIPT = "#!/bin/sh\nsleep 300\n"
BASE = {"name": "smoke", "current_working_directory": "/tmp", "environment": {"PATH": "/bin"}}


def submit(lab: SlurmLab, **job: object) -> int:
    """Submit ``job`` (over BASE) straight to slurmrestd; its job id."""
    status, answer = lab.submit_via(lab.rest_url, {"job": {**BASE, **job}, "script": SCRIPT})
    job_id = lab.job_id(answer)
    assert status == 200 and job_id is not None, answer
    return job_id


def test_a_held_gpu_job_reads_back_its_requested_gpus(slurm_lab: SlurmLab) -> None:
    job_id = submit(slurm_lab, gpus=3, hold=True)
    got = slurm_lab.granted(job_id)
    assert (got.gpus, got.nodes, got.source, got.state) == (3, 1, "tres_req_str", "PENDING")
    slurm_lab.cancel_all()


def test_an_allocated_job_reads_back_the_gpus_of_its_nodes(slurm_lab: SlurmLab) -> None:
    job_id = submit(slurm_lab, nodes=2, gpus_per_node=2, partition="shared")
    got = slurm_lab.wait_allocated(job_id)
    assert (got.gpus, got.nodes, got.model, got.source) == (4, 2, "h100", "gres_detail")
    slurm_lab.cancel_all()


def test_an_array_job_counts_every_task(slurm_lab: SlurmLab) -> None:
    job_id = submit(slurm_lab, gpus=2, array="0-4", hold=True)
    assert slurm_lab.granted(job_id).gpus == 10
    slurm_lab.cancel_all()


def test_the_readers_of_slurm_strings() -> None:
    assert parse_tres("cpu=1,mem=500G,node=2,billing=1,gres/gpu=4") == {
        "cpu": 1, "node": 2, "billing": 1, "gres/gpu": 4,
    }  # fmt: skip
    assert parse_gres_detail(f"gpu:h100:{GPUS_PER_NODE}(IDX:0-7),shard:4(8/32,0/32)") == (
        GPUS_PER_NODE, 4, "h100",
    )  # fmt: skip
    assert parse_gres_detail("shard:4(IDX:0)") == (0, 4, None)


def test_stopping_leaves_no_process_behind() -> None:
    # with a private MariaDB, as on a machine that has none on 127.0.0.1:3306
    missing = missing_binaries() + ([] if shutil.which("mariadbd") else ["mariadbd"])
    if missing:  # as the slurm_lab fixture does: this test starts a lab of its own
        pytest.skip(
            f"SLURM CONFORMANCE NOT RUN: missing {', '.join(missing)} "
            "(install: make conformance-tools)"
        )
    lab = SlurmLab(private_database=True).start()
    assert lab.db_port != 3306 and "mariadbd" in lab.procs
    job_id = submit(lab, gpus=1)
    assert lab.wait_allocated(job_id).gpus == 1  # runs on n1: a slurmstepd and a script
    assert submit(lab, gpus=2, hold=True) and lab.granted(job_id + 1).gpus == 2  # accounting
    pids = [p.pid for p in lab.procs.values()]
    lab.stop()
    assert lab.leftovers() == []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().split()[2]
        except OSError:
            continue
        assert state == "Z", f"daemon {pid} still running"
    assert not lab.dir.exists()
