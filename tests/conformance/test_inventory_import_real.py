"""``gatekeeper inventory import`` against the lab's real slurmrestd: the inventory it prints is
what the lab's slurm.conf and gres.conf declare (cloud nodes, shards, the exclusive partition, the
time limit), and the gate's configuration loader takes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gatekeeper.config import parse_config_text
from gatekeeper.gpus import load_gpu_catalog
from gatekeeper.inventory import build_inventory
from tests.conformance.slurm_gate import gate_config
from tests.conformance.slurm_lab import (
    GPU_MODEL,
    GPUS_PER_NODE,
    PARTITIONS,
    SHARDS_PER_NODE,
    SlurmLab,
)
from tests.e2e.gate import base_config
from tests.support import repo_root

CATALOG = load_gpu_catalog(None)


def gk_import(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JWT"}  # only the token given
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper", "inventory", "import", *args],
        capture_output=True, text=True, timeout=120, cwd=repo_root(), env=env,
    )  # fmt: skip


def declared_hours(max_time: str) -> float | None:
    """slurm.conf's ``MaxTime`` (``INFINITE`` or ``days-hh:mm:ss``) in hours."""
    if max_time == "INFINITE":
        return None
    days, _, clock = max_time.rpartition("-")
    h, m, s = (int(x) for x in clock.split(":"))
    return int(days or 0) * 24 + h + m / 60 + s / 3600


def shown_partitions(lab: SlurmLab) -> dict[str, dict[str, str]]:
    """``scontrol show partition -o``: what slurmctld itself says of each partition."""
    out: dict[str, dict[str, str]] = {}
    for line in lab.run("scontrol", "show", "partition", "-o").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        out[fields["PartitionName"]] = fields
    return out


@pytest.mark.parametrize("version", ["v0.0.37", "v0.0.38"])
def test_import_from_the_real_slurmrestd(slurm_lab: SlurmLab, tmp_path: Path, version: str) -> None:
    token = tmp_path / "token"
    token.write_text(slurm_lab.token() + "\n")
    shown = shown_partitions(slurm_lab)
    # where 22.05's slurmrestd says nothing, the operator says which partitions share nodes
    shared = [a for name, f in shown.items() if f["OverSubscribe"] != "EXCLUSIVE"
              for a in ("--shared", name)]  # fmt: skip
    out = tmp_path / "inventory.yaml"
    proc = gk_import("--slurmrestd", slurm_lab.rest_url, "--version", version, "--user", "root",
                     "--token-file", str(token), *shared, "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    inv = build_inventory(parse_config_text(out.read_text()).inventory, CATALOG)

    model = CATALOG.resolve(GPU_MODEL)
    assert model is not None
    expected = {}
    for part in PARTITIONS:
        hosts = slurm_lab.run("scontrol", "show", "hostnames", part.nodes).split()
        assert str(len(hosts)) == shown[part.name]["TotalNodes"]
        exclusive = "OverSubscribe=EXCLUSIVE" in part.extra
        assert exclusive == (shown[part.name]["OverSubscribe"] == "EXCLUSIVE")
        expected[part.name] = ((part.name,), len(hosts), model.name, GPUS_PER_NODE,
                               SHARDS_PER_NODE // GPUS_PER_NODE, 0,
                               declared_hours(part.max_time), exclusive)  # fmt: skip
    got = {p.name: (p.partitions, p.nodes, p.model.name, p.per_node, p.shards_per_gpu,
                    p.mps_per_gpu, p.max_hours, p.exclusive) for p in inv.pools}  # fmt: skip
    assert got == expected
    assert got["gpu"][1] == 8 and got["whole"][-2:] == (36.0, True)  # cloud nodes, MaxTime

    # the gate runs on it: one GPU on a shared partition is one, on the exclusive one a node's 8
    assert measured(tmp_path, out, "gpu")["gpus"] == 1
    whole = measured(tmp_path, out, "whole")
    assert whole["gpus"] == GPUS_PER_NODE and "hours-from-inventory" in whole["assumptions"]  # type: ignore[operator]

    # the same pools as the hand-written inventory the other conformance tests run the gate with
    hand_written = yaml.safe_dump({"inventory": gate_config(tmp_path, slurm_lab)["inventory"]})
    hand = build_inventory(parse_config_text(hand_written).inventory, CATALOG)
    assert len(hand) == len(inv)
    for pool in hand.pools:
        mine = inv.entry(pool.name.removeprefix("lab-"))
        assert mine is not None
        assert (mine.nodes, mine.model, mine.per_node, mine.shards_per_gpu, mine.exclusive) == (
            pool.nodes, pool.model, pool.per_node, pool.shards_per_gpu, pool.exclusive)  # fmt: skip


def measured(tmp: Path, inventory: Path, partition: str) -> dict[str, object]:
    """``gatekeeper check`` of a one-GPU submission to ``partition`` under a gate whose
    inventory is the imported one: the compute bound the gate would record."""
    cfg = base_config(tmp, "http://127.0.0.1:9")
    cfg["inventory"] = yaml.safe_load(inventory.read_text())["inventory"]
    cfg["routes"] = [{"name": "slurm", "match": {"path_prefix": "/slurm/"},
                      "upstream": "http://127.0.0.1:9", "adapter": "slurm",
                      "authenticate": False, "inventory": "gpu"}]  # fmt: skip
    (tmp / "gk.yaml").write_text(yaml.safe_dump(cfg))
    job = {"partition": partition, "gpus": 1, "environment": {"PATH": "/bin"},
           "current_working_directory": "/tmp"}  # fmt: skip
    request = {"method": "POST", "path": "/slurm/v0.0.38/job/submit",
               "body": {"script": "#!/bin/sh\n", "job": job}}  # fmt: skip
    (tmp / "request.json").write_text(json.dumps(request))
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "check", str(tmp / "request.json"),
         "--config", str(tmp / "gk.yaml")],
        capture_output=True, text=True, timeout=120, cwd=repo_root(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout)["compute"])


def test_without_a_valid_token_the_import_fails_cleanly(
    slurm_lab: SlurmLab, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("not-a-jwt")
    # 22.05 answers a bad token with 500 and its reason, a missing one with 401
    proc = gk_import("--slurmrestd", slurm_lab.rest_url, "--user", "root", "--token-file",
                     str(token))  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert 'HTTP 500 INTERNAL ERROR: "Unspecified error"' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = gk_import("--slurmrestd", slurm_lab.rest_url)
    assert proc.returncode == 2 and "HTTP 401" in proc.stderr
