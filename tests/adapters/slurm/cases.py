"""The Slurm measurement classes as tables of bodies, with what slurmctld could allocate.

Each expected figure is the largest allocation Slurm could make for the body on the test
inventory (``INVENTORY``): partitions ``gpu``/``h100`` hold 16 nodes of 8 H100 (4 shards and 100
MPS units per GPU, 72 h at most); ``a100`` holds 4 nodes of 4 A100 with no time limit. Shared by
the adapter tests and the end-to-end test that no D:5-parented tenant gets any of them forwarded.
"""

from __future__ import annotations

import json
from typing import Any

from gatekeeper.config import InventoryAccelerators, InventoryEntry, InventoryNode, RouteConfig
from gatekeeper.inventory import Inventory, build_inventory
from tests.support import repo_root

from ..helpers import CATALOG, route

ENTRIES = (
    InventoryEntry(
        name="h100",
        scheduler="slurm",
        nodes=16,
        node=InventoryNode(InventoryAccelerators("H100-SXM", 8), shards_per_gpu=4, mps_per_gpu=100),
        partitions=("gpu", "h100"),
        max_hours=72.0,
    ),
    InventoryEntry(
        name="a100",
        scheduler="slurm",
        nodes=4,
        node=InventoryNode(InventoryAccelerators("A100", 4)),
        partitions=("a100",),
    ),
)
INVENTORY: Inventory = build_inventory(ENTRIES, CATALOG)
PLAIN = route("slurm")  # no route inventory entry: a request without a known partition
POOLED = route("slurm", inventory="h100")  # the route's own entry bounds unknown partitions
ROUTES: dict[str, RouteConfig] = {"plain": PLAIN, "pooled": POOLED}

ENV = {"environment": ["PATH=/bin:/usr/bin"], "current_working_directory": "/tmp"}
V37, V38, V39, V40, V41, V42 = (f"/slurm/v0.0.{n}/job/submit" for n in range(37, 43))
SH = "#!/bin/bash\n"
_DATA = repo_root() / "tests" / "data" / "slurm"
TESTSUITE = json.loads((_DATA / "testsuite_v0.0.41.json").read_text())


def job(**fields: Any) -> dict[str, Any]:
    return {"job": {**ENV, **fields}}


def script_job(script: str, **fields: Any) -> dict[str, Any]:
    return {"job": {**ENV, "script": SH + script, **fields}}


# v0.0.37/38 bodies as slurmrestd 22.05 takes them: the environment an object, the script beside
# the job (the conformance suite sends these to a real slurmrestd).
ENV38 = {"environment": {"PATH": "/bin:/usr/bin"}, "current_working_directory": "/tmp"}
SCRIPT38 = SH + "sleep 600\n"


def job38(**fields: Any) -> dict[str, Any]:
    return {"job": {**ENV38, **fields}, "script": SCRIPT38}


# (id, route, path, body, gpus, hours, model, an assumption the bound must name or None)
Case = tuple[str, str, str, Any, float, float, str | None, str | None]
H100, A100 = "H100-SXM", "A100"
CASES: list[Case] = [
    # --- whole-node jobs: every GPU of their nodes (nodes x GPUs per node from the inventory)
    ("exclusive-user-41", "plain", V41, job(partition="gpu", nodes="2", exclusive="user",
     time_limit=60), 16, 1, H100, "gpus-per-node-from-inventory"),
    ("exclusive-true-40", "plain", V40, job(partition="gpu", exclusive=True, time_limit=60),
     8, 1, H100, "gpus-per-node-from-inventory"),
    ("shared-none-41", "plain", V41, job(partition="gpu", shared=["none"], time_limit=60),
     8, 1, H100, None),
    ("shared-topo-42", "plain", V42, job(partition="gpu", shared=["topo"], nodes="3",
     time_limit=60), 24, 1, H100, None),
    ("shared-oversubscribe-is-not-whole", "plain", V42, job(partition="gpu",
     shared=["oversubscribe"], tres_per_node="gres/gpu:1", time_limit=60), 1, 1, H100, None),
    ("exclusive-38", "plain", V38, job38(partition="gpu", exclusive="exclusive", time_limit=60),
     8, 1, H100, None),
    ("exclusive-mcs-37", "plain", V37, job38(partition="a100", exclusive="mcs", nodes="2-3",
     time_limit=60), 12, 1, A100, None),
    ("core-spec-is-whole-node", "plain", V41, job(partition="gpu", core_specification=2,
     time_limit=60), 8, 1, H100, None),
    ("sbatch-exclusive", "plain", V41, script_job("#SBATCH --exclusive\n#SBATCH -N 2\n",
     partition="gpu", time_limit=60), 16, 1, H100, None),
    ("exclusive-route-entry", "pooled", V41, job(partition="debug", exclusive="user",
     time_limit=60), 8, 1, H100, None),
    ("exclusive-per-job-gpus-span-nodes", "plain", V41, job(partition="gpu", exclusive="user",
     tres_per_job="gres/gpu:9", time_limit=60), 16, 1, H100, None),
    ("exclusive-array", "plain", V41, job(partition="gpu", exclusive="user", array="0-3",
     time_limit=60), 32, 1, H100, None),
    # --- GPUs derived from task counts
    ("ntasks-per-tres", "plain", V41, job(partition="gpu", tasks=16, ntasks_per_tres=2,
     nodes="2", time_limit=60), 8, 1, H100, "gpus-from-tasks"),
    ("ntasks-per-tres-tasks-per-node", "plain", V42, job(partition="gpu", tasks_per_node=4,
     nodes="2", ntasks_per_tres=1, time_limit=60), 8, 1, H100, None),
    ("ntasks-per-gpu-38", "plain", V38, job38(partition="gpu", ntasks=6, ntasks_per_gpu=2,
     time_limit=60), 3, 1, H100, None),
    ("sbatch-ntasks-per-gpu", "plain", V41, script_job("#SBATCH --ntasks-per-gpu=4 -n 8 -N 1\n",
     partition="gpu", time_limit=60), 2, 1, H100, None),
    ("ntasks-per-tres-open-tasks", "plain", V41, job(partition="gpu", tasks_per_socket=2,
     ntasks_per_tres=1, nodes="2", time_limit=60), 16, 1, H100, None),
    # --- GPU shares land on physical GPUs
    ("shards-per-node", "plain", V41, job(partition="gpu", tres_per_node="gres/shard:4",
     nodes="1", time_limit=60), 4, 1, H100, "gpus-from-shards"),
    ("shards-capped-by-node", "plain", V41, job(partition="gpu", tres_per_node="gres/shard:64",
     nodes="1", time_limit=60), 8, 1, H100, None),
    ("mps-sbatch", "plain", V41, script_job("#SBATCH --gres=mps:100\n", partition="gpu",
     nodes="1", time_limit=60), 8, 1, H100, None),
    ("shards-per-job-spread-over-nodes", "plain", V41, job(partition="gpu",
     tres_per_job="gres/shard:200", time_limit=60), 128, 1, H100, None),
    ("shards-per-job-on-one-node", "plain", V41, job(partition="gpu",
     tres_per_job="gres/mps:200", nodes="1", time_limit=60), 8, 1, H100, None),
    ("shards-no-inventory", "plain", V41, job(tres_per_job="gres/shard:2", time_limit=60),
     2, 1, H100, "gpus-from-shards"),
    ("shards-37-gres", "plain", V37, job38(partition="gpu", gres="shard:2", nodes="2",
     time_limit=60), 4, 1, H100, None),
    ("shards-plus-gpus", "plain", V41, job(partition="gpu",
     tres_per_node="gres/gpu:2,gres/shard:2", nodes="1", time_limit=60), 4, 1, H100, None),
    # --- a host list sets the node count
    ("required-nodes-hostlist", "plain", V41, job(partition="gpu",
     required_nodes="gpu[01-04,07]", tres_per_node="gres/gpu:8", time_limit=60),
     40, 1, H100, "nodes-from-hostlist"),
    ("required-nodes-list", "plain", V42, job(partition="gpu", required_nodes=["gpu01", "gpu02"],
     tres_per_node="gres/gpu:8", time_limit=60), 16, 1, H100, None),
    ("nodelist-38", "plain", V38, job38(partition="gpu", nodelist="gpu[1-3]", gpus_per_node="2",
     time_limit=60), 6, 1, H100, None),
    ("sbatch-nodelist-short", "plain", V41, script_job("#SBATCH -w gpu[01-02] "
     "--gpus-per-node=8\n", partition="gpu", time_limit=60), 16, 1, H100, None),
    ("hostlist-capped-by-partition", "plain", V41, job(partition="gpu",
     required_nodes="n[1-100]", tres_per_node="gres/gpu:8", time_limit=60), 128, 1, H100, None),
    ("hostlist-cartesian", "plain", V41, job(partition="gpu", required_nodes="r[1-2]n[1-3]",
     tres_per_node="gres/gpu:1", time_limit=60), 6, 1, H100, None),
    # --- the partition names the model; caps from what it holds
    ("unknown-partition-unknown-model", "plain", V41, job(partition="l4x",
     tres_per_job="gres/gpu:2", time_limit=60), 2, 1, "l4x", "unknown-gpu-model"),
    ("inventory-partition-model", "plain", V41, job(partition="a100",
     tres_per_job="gres/gpu:4", time_limit=60), 4, 1, A100, None),
    ("pool-model-whatever-type-named", "plain", V41, job(partition="gpu",
     tres_per_job="gres/gpu:tesla:2", time_limit=60), 2, 1, H100, None),
    ("capped-by-partition", "plain", V41, job(partition="gpu", tres_per_job="gres/gpu:200",
     time_limit=60), 128, 1, H100, None),
    ("capped-by-max-nodes", "plain", V41, job(partition="a100", tres_per_job="gres/gpu:16",
     nodes="1", time_limit=60), 4, 1, A100, None),
    ("hours-capped-by-pool", "plain", V41, job(partition="gpu", tres_per_job="gres/gpu:1",
     time_limit=10_000), 1, 72, H100, None),
    ("hours-from-pool", "plain", V41, job(partition="gpu", tres_per_job="gres/gpu:1"),
     1, 72, H100, "hours-from-inventory"),
    ("hours-from-route-max", "plain", V41, job(partition="a100", tres_per_job="gres/gpu:1"),
     1, 168, A100, "hours-from-route-max"),
    ("per-socket-from-inventory", "plain", V41, job(partition="gpu",
     tres_per_socket="gres/gpu:1", nodes="2", time_limit=60), 16, 1, H100, None),
    ("partition-list-takes-larger", "plain", V41, job(partition="a100,gpu", exclusive="user",
     time_limit=60), 8, 1, H100, None),
    # --- v0.0.37/38: keys without regard to case, the last repeat wins, job before jobs
    ("38-case-and-last-wins", "plain", V38, job38(Tasks=2, GPUS_PER_TASK="2", ntasks=8,
     time_limit=60), 16, 1, H100, None),
    ("37-last-wins-down", "plain", V37, job38(ntasks=8, tasks=2, gpus_per_task=1,
     time_limit=60), 2, 1, H100, None),
    ("38-job-before-jobs", "plain", V38, {"jobs": [{**ENV38, "gpus": 64}],
     **job38(gpus="2", time_limit=60)}, 2, 1, H100, None),
    ("38-job-list-is-hetjob", "plain", V38, {"job": [{**ENV38, "gpus": 2, "time_limit": 60},
     {**ENV38, "gpus": 3, "time_limit": 60}], "script": SCRIPT38}, 5, 1, H100, None),
    ("37-nodes-pair", "plain", V37, job38(nodes=[1, 3], gpus_per_node="h100:2", time_limit=60),
     6, 1, H100, None),
    # --- heterogeneous jobs sum, arrays multiply (every index, whatever the % limit)
    ("hetjob-whole-plus-gpus", "plain", V41, {"jobs": [
        {**ENV, "partition": "gpu", "exclusive": "user", "time_limit": 60},
        {**ENV, "partition": "gpu", "tres_per_job": "gres/gpu:2", "time_limit": 60}]},
     10, 1, H100, None),
    ("allocate-hetjob-42", "plain", "/slurm/v0.0.42/job/allocate", {"hetjob": [
        {**ENV, "partition": "gpu", "tres_per_node": "gres/gpu:4", "nodes": "2", "time_limit": 60},
        {**ENV, "partition": "gpu", "shared": ["user"], "time_limit": 60}]},
     16, 1, H100, None),
    ("array-limit-counts-all", "plain", V41, job(partition="gpu", tres_per_node="gres/gpu:8",
     nodes="1", array="0-15%4", time_limit=60), 128, 1, H100, None),
    # --- #SBATCH forms
    ("sbatch-prefix", "plain", V41, script_job("#SBATCH --gpus-per-nod=8 -N2\n", partition="gpu",
     time_limit=60), 16, 1, H100, None),
    ("sbatch-prefix-ntasks-per-g", "plain", V41, script_job("#SBATCH --ntasks-per-g=2 -n 8 "
     "-N 1\n", partition="gpu", time_limit=60), 4, 1, H100, None),
    ("sbatch-tres-per-task", "plain", V41, script_job("#SBATCH --tres-per-task=gres/gpu:2 -n 3\n",
     partition="gpu", time_limit=60), 6, 1, H100, None),
    ("sbatch-block-ends-at-command", "plain", V41, script_job("#SBATCH --gpus=2\nsrun x\n"
     "#SBATCH --gpus=64\n", time_limit=60), 2, 1, H100, None),
    ("sbatch-indented-is-comment", "plain", V41, script_job("  #SBATCH --gpus=64\n#SBATCH -G 1\n",
     time_limit=60), 1, 1, H100, None),
    ("sbatch-quotes-and-comment", "plain", V41, script_job('#SBATCH --gres="gpu:h100:4" '
     "# --gpus=99\n", time_limit=60), 4, 1, H100, None),
    ("sbatch-short-cluster", "plain", V41, script_job("#SBATCH -HN2 --gpus-per-node=4\n",
     time_limit=60), 8, 1, H100, None),
    ("sbatch-value-next-line", "plain", V41, script_job("#SBATCH --gpus\n#SBATCH 3\n",
     time_limit=60), 3, 1, H100, None),
    ("sbatch-spread-job", "plain", V41, script_job("#SBATCH --spread-job --gpus-per-node=1\n",
     partition="gpu", time_limit=60), 16, 1, H100, "nodes-from-inventory"),
    ("sbatch-hetjob-blocks-add-components", "plain", V41, script_job(
        "#SBATCH -G 1\n#SBATCH hetjob -G 8 -t 60\n", time_limit=60), 9, 1, H100, None),
    ("sbatch-hetjob-blocks-per-component", "plain", V41, {
        "script": SH + "#SBATCH -G 2\n#SBATCH hetjob\n#SBATCH -G 4\n",
        "jobs": [{**ENV, "tres_per_job": "gres/gpu:1", "time_limit": 60},
                 {**ENV, "time_limit": 60}]}, 5, 1, H100, None),
    ("slurm-magic-word", "plain", V41, script_job("#SLURM --gpus=5\n", time_limit=60),
     5, 1, H100, None),
    ("sbatch-blank-and-comment-lines", "plain", V41, script_job("\n# setup\n\n#SBATCH -G 6\n",
     time_limit=60), 6, 1, H100, None),
    # --- job updates: the job they produce (the current job is not known: the pool bounds it)
    ("update-time-41", "pooled", "/slurm/v0.0.41/job/123", {"time_limit": 600},
     128, 10, H100, "update-bounded-by-inventory"),
    ("update-nodes-38", "plain", "/slurm/v0.0.38/job/7", {"nodes": "2", "partition": "gpu",
     "time_limit": 60}, 16, 1, H100, None),
    ("update-testsuite-partition", "plain", "/slurm/v0.0.41/job/9", TESTSUITE["update"],
     128, 72, H100, None),
    ("update-neutral-only", "plain", "/slurm/v0.0.41/job/9", {"name": "x", "comment": "y",
     "priority": {"set": True, "number": 0}}, 0, 0, None, None),
    # --- Slurm's own test bodies
    ("testsuite-submit", "plain", V41, TESTSUITE["submit"], 0, 72, None, None),
    ("testsuite-held", "plain", V41, TESTSUITE["submit_held"], 0, 72, None, None),
    ("empty-clusters-is-local", "plain", V41, job(clusters="", partition="gpu",
     tres_per_job="gres/gpu:1", time_limit=60), 1, 1, H100, None),
]  # fmt: skip

# (id, route, path, body, reason, text the message must hold)
Refusal = tuple[str, str, str, Any, str, str]
REFUSED: list[Refusal] = [
    ("exclusive-without-inventory", "plain", V41, job(partition="cpu", exclusive="user"),
     "unmeasurable-request", "job.exclusive: a whole-node job"),
    ("exclusive-no-partition", "plain", V41, job(shared=["none"]),
     "unmeasurable-request", "job.shared"),
    ("per-socket-without-inventory", "plain", V41, job(tres_per_socket="gres/gpu:1"),
     "unmeasurable-request", "job.tres_per_socket"),
    ("open-tasks-without-inventory", "plain", V41, job(tasks_per_core=1,
     tres_per_task="gres/gpu:1"), "unmeasurable-request", "job.tres_per_task"),
    ("spread-without-inventory", "plain", V41, job(flags=["SPREAD_JOB"],
     tres_per_node="gres/gpu:1"), "unmeasurable-request", "job.flags"),
    ("unknown-flag", "plain", V41, job(flags=["NEW_FLAG"]), "unmeasurable-request",
     "job.flags: unknown job flag 'NEW_FLAG'"),
    ("unknown-field", "plain", V41, job(gres_flags="enforce-binding"), "unmeasurable-request",
     "job.gres_flags: not a job field of v0.0.41"),
    ("field-of-other-version", "plain", V42, job(exclusive="user"), "unmeasurable-request",
     "job.exclusive: not a job field of v0.0.42"),
    ("hetjob-unknown-field", "plain", V41, {"jobs": [{**ENV}, {**ENV, "ntasks_per_tres": 1,
     "ntasks_per_gpu": 2}]}, "unmeasurable-request", "jobs[1].ntasks_per_gpu"),
    ("case-matters-from-39", "plain", V41, job(Tasks=2), "unmeasurable-request", "job.Tasks"),
    ("disabled-37", "plain", V37, job38(required_nodes="n1"), "unmeasurable-request",
     "job.required_nodes: refused by slurmrestd"),
    ("unknown-version", "plain", "/slurm/v0.0.99/job/submit", job(), "unmeasurable-request",
     "unknown Slurm API version 'v0.0.99'"),
    ("old-version", "plain", "/slurm/v0.0.36/job/submit", job38(), "unmeasurable-request",
     "unknown Slurm API version"),
    ("no-version", "plain", "/slurm/job/submit", job(), "unmeasurable-request", "no Slurm API"),
    ("other-endpoint", "plain", "/slurm/v0.0.41/reservation", {"name": "r"},
     "unmeasurable-request", "not a Slurm endpoint"),
    ("job-and-jobs-41", "plain", V41, {"job": {**ENV}, "jobs": [{**ENV}]},
     "unmeasurable-request", "jobs: given with job"),
    ("top-level-unknown", "plain", V41, {"job": {**ENV}, "Job": {}}, "unmeasurable-request",
     "Job: not a field"),
    ("bad-hostlist", "plain", V41, job(partition="gpu", required_nodes="gpu[01-"),
     "unmeasurable-request", "job.required_nodes: unbalanced host list"),
    ("hostlist-file", "plain", V41, job(partition="gpu", required_nodes="/etc/hosts"),
     "unmeasurable-request", "job.required_nodes: cannot read host list"),
    ("sbatch-unknown-option", "plain", V41, script_job("#SBATCH --foo=1\n"),
     "unmeasurable-request", "script:#SBATCH --foo: unknown sbatch option"),
    ("sbatch-ambiguous-prefix", "plain", V41, script_job("#SBATCH --gpus-per=2\n"),
     "unmeasurable-request", "script:#SBATCH --gpus-per: ambiguous prefix"),
    ("sbatch-nodefile", "plain", V41, script_job("#SBATCH -F hosts.txt\n"),
     "unmeasurable-request", "script:#SBATCH --nodefile"),
    ("sbatch-not-an-option", "plain", V41, script_job("#SBATCH gpus=8\n"),
     "unmeasurable-request", "script:#SBATCH gpus=8: not an option"),
    ("sbatch-unmatched-quote", "plain", V41, script_job('#SBATCH --gres="gpu:8\n'),
     "unmeasurable-request", "unmatched"),
    ("sbatch-missing-value", "plain", V41, script_job("#SBATCH -G\n"), "unmeasurable-request",
     "script:#SBATCH -G: missing value"),
    ("update-without-inventory", "plain", "/slurm/v0.0.41/job/5", {"time_limit": 60},
     "unmeasurable-request", "job: a job update changes a job not known here"),
    ("infinite-count", "plain", V41, job(tasks={"set": True, "infinite": True},
     tres_per_task="gres/gpu:1"), "unmeasurable-request", "job.tasks: an infinite count"),
    ("zero-tasks-per-gpu", "plain", V41, job(partition="gpu", ntasks_per_tres=0, tasks=2),
     "unmeasurable-request", "zero tasks per GPU"),
    ("allocate-with-jobs", "plain", "/slurm/v0.0.41/job/allocate", {"jobs": [{**ENV}]},
     "unmeasurable-request", "jobs: not a field of a v0.0.41 allocate request"),
    ("federation-clusters", "plain", V41, job(clusters="other", tres_per_job="gres/gpu:1"),
     "unmeasurable-request", "job.clusters: a job for other clusters of a federation"),
    ("federation-sbatch", "plain", V41, script_job("#SBATCH -M other\n"),
     "unmeasurable-request", "script:#SBATCH --clusters: a job for other clusters"),
    ("job-as-list-41", "plain", V41, {"job": [{**ENV}]}, "bad-value", "job: expected an object"),
]  # fmt: skip


def controlled_bodies() -> list[tuple[str, str, str, Any]]:
    """(id, route, path, body) of every body Slurm could give at least one accelerator."""
    rows = [(c[0], c[1], c[2], c[3]) for c in CASES if c[4] >= 1]
    return rows + [(r[0], r[1], r[2], r[3]) for r in REFUSED]
