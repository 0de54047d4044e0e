"""A real ``gatekeeper serve`` in front of the Slurm lab's slurmrestd, and the comparison of the
gate's measured bound with what slurmctld records for the job.

``GateProbe.send`` posts one body through the gate; the gate's bound is read back from its audit
record (``compute.gpus``, found by the decision id the gate answers with). The scheduler's side
(``scheduler_gpus``) is what slurmctld recorded for the job: the GPUs it allocated when the job
was allocated (``gres_detail``), else the GPUs it requested (``tres_req_str``, which slurmctld
computes from every per-job, per-node, per-task and per-socket form) -- plus, for a pending job,
what the lab's layout makes of it when it is allocated: every GPU of every node for a whole-node
job (``shared: none``), and the physical GPUs its shards can land on.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gatekeeper.demo import DemoKeys, write_config
from gatekeeper.inventory_import import split_gres
from tests.conformance.common import AuditTail
from tests.conformance.slurm_lab import (
    GPUS_PER_NODE,
    NODES,
    PARTITIONS,
    SHARDS_PER_NODE,
    Granted,
    SlurmLab,
    array_tasks,
)
from tests.e2e.gate import Gate, base_config
from tests.support import free_port, repo_root

SCRIPT = "#!/bin/sh\nsleep 600\n"
# Bodies that are to be read back but not run begin a day later: slurmctld validates them at
# submission like any job (a held job's request is not checked against the nodes, so a held job
# may ask for more GPUs than its nodes could ever give it) and never schedules them.
LATER = {"begin_time": "now+24hours"}
BASE_JOB: dict[str, Any] = {
    "name": "conformance",
    "current_working_directory": "/tmp",
    "environment": {"PATH": "/bin:/usr/bin"},
}
PROBLEM = "urn:gatekeeper:problem:"
NODES_OF = {"gpu": NODES, "small": 1, "shared": 2, "whole": 2}


def gate_config(tmp: Path, lab: SlurmLab) -> dict[str, Any]:
    """Allow-all gate with one Slurm route to the lab; the lab's inventory when the gate has one."""
    cfg = base_config(tmp, lab.rest_url)
    cfg["limits"]["upstream_timeout_s"] = 60
    route: dict[str, Any] = {
        "name": "slurm",
        "match": {"path_prefix": "/slurm/"},
        "upstream": lab.rest_url,
        "adapter": "slurm",
        "authenticate": False,
        "gpu_model": "H100",
    }
    if importlib.util.find_spec("gatekeeper.inventory") is not None:
        cfg["inventory"] = [
            {
                "name": f"lab-{part.name}",
                "scheduler": "slurm",
                "partitions": [part.name],
                "nodes": NODES_OF[part.name],
                "node": {
                    "accelerators": {"model": "H100-SXM", "count": GPUS_PER_NODE},
                    "shards_per_gpu": SHARDS_PER_NODE // GPUS_PER_NODE,
                },
                "exclusive": "EXCLUSIVE" in part.extra,
            }
            for part in PARTITIONS
        ]
        route["inventory"] = "lab-gpu"
    cfg["routes"] = [route]
    return cfg


@dataclass
class Probe:
    """One body sent through the gate: what the gate measured and what slurmrestd answered."""

    status: int
    answer: Any
    gate_gpus: float | None  # None: the gate refused the body before measuring it
    reasons: list[str] = field(default_factory=list)
    job_id: int | None = None
    gate_refused: bool = False  # the gate answered with a problem document (e.g. 400)

    @property
    def refused(self) -> bool:
        return self.gate_refused


D5_TENANT = "acme-sg"  # the demo registry's Singapore company owned from a D:5 country
D5_CLIENT_IP = "165.21.83.88"  # a Singapore address


def tenant_gate_config(tmp: Path, lab: SlurmLab) -> tuple[dict[str, Any], dict[str, str]]:
    """The demo's gate (real tokens, entity registry, GeoIP) with the US remote-access pack in
    front of the lab, and the headers of a D:5-owned tenant calling from Singapore."""
    keys = DemoKeys(tmp)
    path = write_config(tmp, keys, port=free_port(), admin=free_port(), scheduler=lab.rest_url)
    cfg = yaml.safe_load(path.read_text())
    cfg["policy"]["files"] = [str(repo_root() / "policies" / "us-remote-access.yaml")]
    cfg.setdefault("limits", {})["upstream_timeout_s"] = 60
    headers = {"Authorization": f"Bearer {keys.token(D5_TENANT)}", "X-Forwarded-For": D5_CLIENT_IP}
    return cfg, headers


class GateProbe:
    """Sends bodies through a real gate to the lab and reads the gate's audit records."""

    def __init__(
        self,
        lab: SlurmLab,
        tmp: Path,
        config: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.lab = lab
        self.headers = headers or {}
        self.gate = Gate(tmp, config or gate_config(tmp, lab))
        self._tail = AuditTail(tmp / "audit.jsonl")
        self._records: dict[str, dict[str, Any]] = {}

    def stop(self) -> None:
        self.gate.stop()

    def _read_audit(self) -> None:
        for rec in self._tail.decisions():
            self._records[rec["decision_id"]] = rec

    def send(self, method: str, path: str, body: bytes) -> Probe:
        headers = {"Content-Type": "application/json", **self.lab.rest_headers(), **self.headers}
        req = urllib.request.Request(
            self.gate.url + path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                status, raw, hdrs = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            status, raw, hdrs = exc.code, exc.read(), exc.headers
        try:
            answer: Any = json.loads(raw)
        except ValueError:
            answer = raw.decode("utf-8", "replace")
        decision_id = hdrs.get("X-Gatekeeper-Decision-Id")
        record = None
        if decision_id:
            self._read_audit()
            record = self._records.pop(decision_id, None)
        compute = (record or {}).get("compute")
        gpus = float(compute["gpus"]) if isinstance(compute, dict) else None
        kind = str(answer.get("type", "")) if isinstance(answer, dict) else ""
        if kind.startswith(PROBLEM):  # the gate answered itself: nothing reached slurmrestd
            reasons = [kind[len(PROBLEM) :], *answer.get("reasons", [])]
            return Probe(status, answer, gpus, reasons, None, gate_refused=True)
        return Probe(status, answer, gpus, [], SlurmLab.job_id(answer))

    def submit(self, body: dict[str, Any] | bytes, version: str = "v0.0.38") -> Probe:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.send("POST", f"/slurm/{version}/job/submit", data)


def scheduler_gpus(got: Granted) -> int:
    """The GPUs slurmctld gives the job (see the module docstring); a heterogeneous job's
    components each on their own (one may be whole-node, the other not)."""
    if got.components:
        return sum(scheduler_gpus(part) for part in got.components)
    if got.source == "gres_detail":
        return got.gpus + _shard_gpus_allocated(got)
    tasks = array_tasks(got.raw)
    nodes = max(got.nodes, 1)
    whole = nodes * GPUS_PER_NODE * tasks
    gpus = got.gpus
    if got.shards:  # a shard lands on one physical GPU: at most one GPU per shard on a node
        per_node = max(got.shards // tasks // nodes, 1)
        gpus += min(per_node, GPUS_PER_NODE) * nodes * tasks
    if str(got.raw.get("shared") or "") == "none":  # whole nodes: every GPU of every node
        return min(whole, _held(got, tasks))
    return min(min(gpus, whole) if got.shards else gpus, _held(got, tasks))


def never_runs(got: Granted) -> bool:
    """A job that asks for more nodes than every partition it names holds: slurmctld accepts
    it and keeps it pending for ever, so it is granted nothing (the gate's bound, capped by the
    inventory, is then compared with nothing)."""
    names = [p for p in str(got.raw.get("partition") or "gpu").split(",") if p]
    return got.nodes > max(NODES_OF.get(name, NODES) for name in names)


def _held(got: Granted, tasks: int) -> int:
    """Every GPU the job's partitions hold, per array task: a pending job that asks for more can
    never be allocated it (slurmctld records the request and leaves the job pending), and the
    gate caps its bound at what the inventory says the partition holds."""
    names = [p for p in str(got.raw.get("partition") or "gpu").split(",") if p]
    return max(NODES_OF.get(name, NODES) for name in names) * GPUS_PER_NODE * tasks


def _shard_gpus_allocated(got: Granted) -> int:
    """Distinct GPUs the allocated shards sit on (``shard:4(IDX:0-1)`` -> 2), over all nodes."""
    total = 0
    for entry in got.raw.get("gres_detail") or []:
        for item in split_gres(str(entry)):
            if not item.startswith("shard:") or "(IDX:" not in item:
                continue
            total += _count_indexes(item.split("(IDX:", 1)[1].rstrip(")"))
    return total * array_tasks(got.raw)


def _count_indexes(spec: str) -> int:
    """``0-2,5`` -> 4 (GPU indexes; a ``(n/m)`` share suffix is ignored)."""
    count = 0
    for part in spec.split(","):
        part = part.split("(", 1)[0].strip()
        if not part or part == "N/A":
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            count += int(hi) - int(lo) + 1
        else:
            count += 1
    return count


def sbatch(lab: SlurmLab, script: str, *, hold: bool = True) -> int | None:
    """Submit ``script`` with the real ``sbatch`` (which reads its ``#SBATCH`` lines), to begin a
    day later when ``hold``; the job id, or None when sbatch refuses it."""
    args = ["sbatch", "--parsable", "-D", "/tmp", "-o", "/dev/null"]
    if hold:
        args.append("--begin=" + LATER["begin_time"])
    out = subprocess.run(
        args, input=script, capture_output=True, text=True, env=lab.env(), timeout=60
    )
    if out.returncode != 0:
        return None
    return int(out.stdout.strip().split(";")[0])
