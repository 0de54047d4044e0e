"""The Slurm field tables as Markdown, for ``docs/measurement.md`` (a test keeps them equal)."""

from __future__ import annotations

from .schema import (
    ARRAY,
    DISABLED,
    EXCLUSIVE,
    FEDERATION,
    FLAGS,
    GPUS_JOB,
    GPUS_NODE,
    GPUS_SOCKET,
    GPUS_TASK,
    GRES,
    HOSTS,
    MAX_NODES,
    MIN_CPUS,
    MIN_NODES,
    NEUTRAL,
    NODES,
    OVERSUBSCRIBE,
    PARTITION,
    SBATCH_ROLES,
    SCRIPT,
    SHARED,
    SPREAD,
    TASKS,
    TASKS_PER_GPU,
    TASKS_PER_NODE,
    TASKS_PER_OTHER,
    TIME,
    TRES_JOB,
    TRES_NODE,
    TRES_SOCKET,
    TRES_TASK,
    VERSIONS,
    WHOLE,
)

# What each role means, for the documentation.
ROLE_TEXT: dict[str, str] = {
    GPUS_JOB: "GPUs for the whole job",
    GPUS_NODE: "GPUs on each node",
    GPUS_TASK: "GPUs for each task",
    GPUS_SOCKET: "GPUs on each socket (bounded by the node's GPUs from the inventory)",
    TRES_JOB: "TRES (GPUs, shards, MPS) for the whole job",
    TRES_NODE: "TRES on each node",
    TRES_TASK: "TRES for each task",
    TRES_SOCKET: "TRES on each socket (bounded by the node's GPUs from the inventory)",
    GRES: "generic resources on each node (gpu, shard, mps)",
    NODES: "node count or range (the maximum counts)",
    MIN_NODES: "minimum node count",
    MAX_NODES: "maximum node count",
    TASKS: "task count",
    TASKS_PER_NODE: "tasks on each node",
    TASKS_PER_OTHER: "tasks per core, socket or board (task count unknown without it)",
    TASKS_PER_GPU: "tasks sharing each GPU (GPUs = tasks / this, at least one per node)",
    MIN_CPUS: "minimum CPUs of the job (may add nodes)",
    HOSTS: "host list (its host count is a node count)",
    EXCLUSIVE: "whole nodes unless the value allows sharing",
    OVERSUBSCRIBE: "sharing allowed (does not lower the bound)",
    SHARED: "sharing mode: anything but `oversubscribe` is whole nodes",
    WHOLE: "specialised cores: Slurm allocates whole nodes",
    SPREAD: "spread over as many nodes as the partition has",
    FLAGS: "job flags (`SPREAD_JOB` spreads; unknown flags are refused)",
    TIME: "time limit",
    ARRAY: "array index spec (every index counts)",
    PARTITION: "partition(s): the inventory pool and model",
    SCRIPT: "batch script (its `#SBATCH` block is read too)",
    FEDERATION: "other clusters of a federation (refused unless empty: not in the inventory)",
    NEUTRAL: "grants no accelerator",
    DISABLED: "refused by slurmrestd itself",
}


def render_tables() -> str:
    """The field tables as Markdown (``docs/measurement.md`` holds this text)."""
    out: list[str] = []
    for version, table in VERSIONS.items():
        out.append(f"#### {version}\n")
        out.append("| role | fields |\n|---|---|")
        by_role: dict[str, list[str]] = {}
        for name, role in table.items():
            by_role.setdefault(role, []).append(name)
        for role in sorted(by_role, key=lambda r: (r in (NEUTRAL, DISABLED), r)):
            names = ", ".join(f"`{n}`" for n in sorted(by_role[role]))
            out.append(f"| {role}: {ROLE_TEXT[role]} | {names} |")
        out.append("")
    out.append("#### #SBATCH (sbatch options; every other option grants nothing)\n")
    out.append("| role | options |\n|---|---|")
    by_role = {}
    for name, role in SBATCH_ROLES.items():
        by_role.setdefault(role, []).append(name)
    for role in sorted(by_role):
        names = ", ".join(f"`--{n}`" for n in sorted(by_role[role]))
        out.append(f"| {role}: {ROLE_TEXT[role]} | {names} |")
    out.append("")
    return "\n".join(out)
