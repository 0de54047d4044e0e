"""Conformance against a real Slurm: every body goes through a real ``gatekeeper serve`` to the lab's
real slurmrestd, and the gate's measured bound is compared with what slurmctld records for the job.

The gate must never measure less than slurmctld grants (a wrong allow), and must measure exactly
what it grants for plain requests. A case is either compared or marked ``refuse``: a body the gate
refuses (400 ``unmeasurable-request``, safe: nothing is forwarded) fails its case unless it is
marked so, and a body marked so fails when the gate forwards it.

``CASES`` are hand-written, one or more per class of request that reaches GPUs; ``KNOWN_UNDER``
holds the cases the current Slurm adapter measures below what slurmctld grants, each marked a
strict expected failure so that it shows as XPASS (and fails) the day the adapter measures it.
The generated corpus (``test_corpus_*``) draws bodies with hypothesis over the fields that reach
GPUs, submits them to begin a day later (``LATER``), and prints its counts.

``ADAPTER_CASES`` are the Slurm adapter's own table (``tests/adapters/slurm/cases.py``, ``CASES``
and ``REFUSED``): every body on a path this slurmrestd 22.05 serves (v0.0.36 to v0.0.38) goes the
same way -- held (``LATER``), with the partition and host names of the table's inventory that the
lab lacks renamed (``LAB_RENAMES``), a job update sent to a held job of the lab (``UPDATE_BASE``).
The table's figures are for its own inventory, so what is compared is the gate's bound for the
lab against slurmctld, not the table's figure; ``ADAPTER_PLAIN`` must be equal. The table's
v0.0.39 to v0.0.42 bodies cannot run here: no slurmrestd of those versions (Slurm 23.02 to 24.11)
is packaged beside 22.05. Their expected figures are checked against Slurm's documentation for
those versions, and the fields they use against Slurm's own parsers and specifications
(``tests/adapters/slurm/test_schema.py``); the report counts them as not run.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.adapters.slurm import cases as adapter_table
from tests.conformance.slurm_gate import (
    BASE_JOB,
    LATER,
    SCRIPT,
    GateProbe,
    Probe,
    sbatch,
    scheduler_gpus,
    tenant_gate_config,
)
from tests.conformance.slurm_lab import GPUS_PER_NODE, REST_VERSIONS, SlurmLab


def job(*, hold: bool = True, **fields: Any) -> dict[str, Any]:
    """A submission body: ``{"job": {...}, "script": ...}``, kept pending (``LATER``) unless
    ``hold=False``."""
    desc = {**BASE_JOB, **fields}
    if hold:
        desc.update(LATER)
    return {"job": desc, "script": SCRIPT}


@dataclass
class Case:
    """One hand-written body and how to read what Slurm grants for it."""

    id: str
    body: dict[str, Any]
    version: str = "v0.0.38"
    allocate: bool = False  # read the allocation (whole nodes, shards) rather than the request
    plain: bool = False  # the gate must measure exactly what Slurm grants
    script: str | None = None  # #SBATCH lines: also read by the real sbatch for the truth
    update: dict[str, Any] | None = None  # a job update sent through the gate to this held job
    expect_gpus: int | None = None  # what the lab must grant (checks the lab, not the gate)
    refuse: str | None = None  # the gate must refuse the body with this problem type


def sbatch_case(id: str, lines: str, *, allocate: bool = False, expect: int | None = None) -> Case:
    script = "#!/bin/sh\n" + lines + "\nsleep 600\n"
    return Case(
        id,
        {"job": {**BASE_JOB, **({} if allocate else LATER)}, "script": script},
        allocate=allocate,
        script=script,
        expect_gpus=expect,
    )


CASES = [
    # plain counts: equal
    Case("gpus", job(gpus=2), plain=True, expect_gpus=2),
    Case("gpus-per-node", job(gpus_per_node=2, nodes=3), plain=True, expect_gpus=6),
    Case("gpus-per-task", job(gpus_per_task=1, tasks=4, nodes=1), plain=True, expect_gpus=4),
    Case("gres-gpu", job(gres="gpu:2", nodes=2), plain=True, expect_gpus=4),
    Case("gres-typed", job(gres="gpu:h100:3"), plain=True, expect_gpus=3),
    Case("array", job(gpus=2, array="0-3"), plain=True, expect_gpus=8),
    Case("v37-gpus", job(gpus=4), version="v0.0.37", plain=True, expect_gpus=4),
    # v0.0.36 is served by slurmrestd 22.05 but is no version the gate's tables know
    Case("v36-gpus", job(gpus=1), version="v0.0.36", refuse="unmeasurable-request"),
    Case(
        "hetjob",
        {
            "jobs": [{**BASE_JOB, "gpus": 2, **LATER}, {**BASE_JOB, "gpus": 3, **LATER}],
            "script": SCRIPT,
        },
        plain=True,
        expect_gpus=5,
    ),
    Case(
        "allocated-4-nodes",
        job(hold=False, gpus_per_node=8, nodes=4),
        allocate=True,
        plain=True,
        expect_gpus=32,
    ),
    Case("gpus-per-socket", job(gpus_per_socket=1, sockets_per_node=2, nodes=1)),
    # whole nodes
    Case(
        "exclusive-2-nodes",
        job(hold=False, exclusive="exclusive", nodes=2),
        allocate=True,
        expect_gpus=16,
    ),
    Case(
        "exclusive-with-1-gpu",
        job(hold=False, exclusive="exclusive", gpus=1),
        allocate=True,
        expect_gpus=8,
    ),
    Case("exclusive-user", job(hold=False, exclusive="user", gpus=1), allocate=True, expect_gpus=1),
    Case("exclusive-held", job(exclusive="exclusive", nodes=3), expect_gpus=24),
    Case(
        "hetjob-exclusive-component",
        {
            "jobs": [
                {**BASE_JOB, **LATER, "exclusive": "exclusive", "partition": "small"},
                {**BASE_JOB, **LATER, "gpus": 2},
            ],
            "script": SCRIPT,
        },
        expect_gpus=10,
    ),
    # shares
    Case("shards", job(hold=False, gres="shard:4", partition="small"), allocate=True),
    Case(
        "shards-2-nodes",
        job(hold=False, gres="shard:32", nodes=2),
        allocate=True,
    ),
    Case("shards-held", job(gres="shard:12", nodes=2)),
    # key case and job/jobs (v0.0.37/38 read keys without regard to case, and take job first)
    Case("key-case-GPUS", job(GPUS=4), expect_gpus=4),
    Case("key-case-Gpus_Per_Node", job(Gpus_Per_Node=2, nodes=2), expect_gpus=4),
    Case("key-case-TASKS", job(gpus_per_task=1, TASKS=6), expect_gpus=6),
    Case(
        "job-before-jobs",
        {
            "job": {**BASE_JOB, "gpus": 6, **LATER},
            "jobs": [{**BASE_JOB, "gpus": 1, **LATER}],
            "script": SCRIPT,
        },
        expect_gpus=6,
    ),
    Case("v37-key-case", job(GPUS_PER_NODE=3, nodes=1), version="v0.0.37", expect_gpus=3),
    # repeated options: tasks given twice in different case
    Case("repeated-tasks", job(gpus_per_task=1, tasks=1, TASKS=8), expect_gpus=8),
    Case("repeated-gpus", job(Gpus=8, gpus=1), expect_gpus=1),
    # the update endpoint resizing a pending job
    Case("update-resizes", job(gpus=1), update={"gpus": 8}, expect_gpus=8),
    # #SBATCH forms, read by the real sbatch (slurmrestd itself does not read them)
    sbatch_case("sbatch-G", "#SBATCH -G 3", expect=3),
    sbatch_case("sbatch-prefix", "#SBATCH --gpus-per-nod=2\n#SBATCH -N 2", expect=4),
    sbatch_case("sbatch-ntasks-per-gpu", "#SBATCH --ntasks-per-gpu=2\n#SBATCH -n 8", expect=4),
    sbatch_case("sbatch-nodelist", "#SBATCH -w c[1-3]\n#SBATCH --gpus-per-node=1", expect=3),
    sbatch_case("sbatch-exclusive", "#SBATCH --exclusive\n#SBATCH -N 2", allocate=True, expect=16),
    sbatch_case("sbatch-gres-space", "#SBATCH --gres gpu:2\n#SBATCH --nodes 3", expect=6),
]


# --- the adapter's own table (``tests/adapters/slurm/cases.py``), through the same machinery

_JOB_PATH = re.compile(r"^/slurm/(v0\.0\.\d+)/job/(submit|\d+)$")
# Values in the adapter table's bodies that name what its test inventory holds and the lab does
# not, renamed to the lab's: with beginning a day later (``LATER``), the only change made to them.
LAB_RENAMES: dict[str, dict[str, Any]] = {
    "exclusive-mcs-37": {"partition": "gpu"},  # "a100": the table's nodes of 4 A100
    "nodelist-38": {"nodelist": "c[1-3]"},  # "gpu[1-3]": the table's host names
}
# The adapter table's bodies whose GPUs slurmctld counts itself in the job's requested TRES (no
# whole nodes, shares or node ranges): the gate must measure them exactly.
ADAPTER_PLAIN = frozenset(
    {
        "ntasks-per-gpu-38",
        "nodelist-38",
        "38-case-and-last-wins",
        "37-last-wins-down",
        "38-job-before-jobs",
        "38-job-list-is-hetjob",
        "update-nodes-38",
    }
)
# A job update of the table is sent to a held job submitted first: one node's GPUs on one node,
# so that the node count the update sets decides what the job is granted. The updated job is then
# released and its allocation read: slurmctld leaves a pending job's requested TRES as it was
# (``gres/gpu=8`` on two nodes of ``gres:gpu:8``) when an update changes only its node count.
UPDATE_BASE = job(gpus_per_node=GPUS_PER_NODE, nodes=1)


def _for_lab(cid: str, body: Any, *, hold: bool) -> Any:
    """A copy of the table's ``body`` with ``LAB_RENAMES`` made in each of its job descriptions,
    each to begin a day later when ``hold`` (a job update is one description, not held)."""
    body = copy.deepcopy(body)
    descs = [body]
    if hold:
        first = body.get("job")
        descs = [first] if isinstance(first, dict) else list(first or [])
        descs += list(body.get("jobs") or [])
    for desc in descs:
        desc.update({k: v for k, v in LAB_RENAMES.get(cid, {}).items() if k in desc})
        if hold:
            desc.update(LATER)
    return body


def adapter_cases() -> tuple[list[Case], list[str]]:
    """The adapter table's bodies whose path the lab's slurmrestd serves (v0.0.36 to v0.0.38),
    as cases of this suite (its refusals as cases the gate must refuse); and the paths of the
    rest, which no daemon here can take."""
    rows = [(c[0], c[2], c[3], None) for c in adapter_table.CASES]
    rows += [(r[0], r[2], r[3], r[4]) for r in adapter_table.REFUSED]
    cases: list[Case] = []
    elsewhere: list[str] = []
    for cid, path, body, refuse in rows:
        match = _JOB_PATH.match(path)
        if match is None or match[1] not in REST_VERSIONS:
            elsewhere.append(path)
            continue
        version, plain = match[1], cid in ADAPTER_PLAIN
        if match[2] == "submit":
            lab_body = _for_lab(cid, body, hold=True)
            case = Case(f"adapter-{cid}", lab_body, version, plain=plain, refuse=refuse)
        else:
            update = _for_lab(cid, body, hold=False)
            case = Case(
                f"adapter-{cid}", UPDATE_BASE, version, allocate=True, plain=plain, update=update
            )
        cases.append(case)
    return cases, elsewhere


ADAPTER_CASES, ADAPTER_ELSEWHERE = adapter_cases()

# Cases the Slurm adapter is known to measure below what slurmctld grants, each with its reason:
# a strict expected failure, so that a fix turns it into a failing XPASS and the entry is removed.
# Empty: every case of the table is measured at or above what slurmctld grants.
KNOWN_UNDER: dict[str, str] = {}


@dataclass
class Outcome:
    """One case through the gate: the gate's bound, slurmctld's record, and what was compared."""

    case: str
    gate: float | None
    slurm: int | None
    refused: bool
    detail: dict[str, Any] = field(default_factory=dict)
    plain: bool = False

    @property
    def unequal(self) -> bool:
        return self.plain and not self.refused and self.gate != self.slurm

    @property
    def under(self) -> bool:
        return not self.refused and self.slurm is not None and (self.gate or 0) < self.slurm


def run_case(probe: GateProbe, case: Case) -> Outcome:
    lab = probe.lab
    result = probe.submit(case.body, case.version)
    if case.update is not None and result.job_id is not None and not result.refused:
        job_id = result.job_id
        result = probe.send(
            "POST", f"/slurm/{case.version}/job/{job_id}", json.dumps(case.update).encode()
        )
        assert result.refused or result.status == 200, f"update refused: {result.answer}"
        result.job_id = job_id
        if case.allocate and not result.refused:  # the held job, updated, may now start
            lab.run("scontrol", "update", f"jobid={job_id}", "StartTime=now")
    try:
        return _compare(probe, case, result)
    finally:
        if case.allocate:
            lab.cancel_all()
            lab.wait_nodes_free()


def _compare(probe: GateProbe, case: Case, result: Probe) -> Outcome:
    lab = probe.lab
    if result.refused:
        return Outcome(case.id, result.gate_gpus, None, True, {"reasons": result.reasons})
    assert result.status == 200 and result.job_id is not None, (
        f"{case.id}: slurmrestd refused a hand-written case: {result.status} {result.answer}"
    )
    got = lab.wait_allocated(result.job_id) if case.allocate else lab.granted(result.job_id)
    slurm = scheduler_gpus(got)
    detail: dict[str, Any] = {"record": got.source, "state": got.state}
    if case.script is not None:
        sb = sbatch(lab, case.script, hold=not case.allocate)
        assert sb is not None, f"{case.id}: sbatch refused its script"
        sb_got = lab.wait_allocated(sb) if case.allocate else lab.granted(sb)
        detail["sbatch"] = scheduler_gpus(sb_got)
        slurm = max(slurm, detail["sbatch"])
    if case.expect_gpus is not None:
        assert slurm == case.expect_gpus, f"{case.id}: the lab granted {slurm}: {detail} {got}"
    return Outcome(case.id, result.gate_gpus, slurm, False, detail, case.plain)


def _params(known: dict[str, str]) -> list[Any]:
    out = []
    for case in CASES + ADAPTER_CASES:
        marks = []
        if case.id in known:
            marks.append(
                pytest.mark.xfail(strict=True, raises=AssertionError, reason=known[case.id])
            )
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


RESULTS: list[Outcome] = []


@pytest.mark.parametrize("case", _params(KNOWN_UNDER))
def test_the_gate_never_measures_below_slurm(slurm_probe: GateProbe, case: Case) -> None:
    outcome = run_case(slurm_probe, case)
    RESULTS.append(outcome)
    reasons = outcome.detail.get("reasons") or ["forwarded"]
    if case.refuse is not None:  # nothing may reach slurmrestd, for the reason the table gives
        assert outcome.refused and reasons[0] == case.refuse, f"{case.id}: {reasons} {outcome}"
        return
    assert not outcome.refused, f"{case.id}: refused by the gate, not compared: {reasons}"
    assert not outcome.under, (
        f"{case.id}: gate measured {outcome.gate} GPUs, slurmctld grants {outcome.slurm} "
        f"({outcome.detail})"
    )
    if case.plain:
        assert outcome.gate == outcome.slurm, (
            f"{case.id}: plain request measured {outcome.gate}, slurmctld grants {outcome.slurm}"
        )


def _counts(name: str, outcomes: list[Outcome]) -> str:
    under = [(o.case, o.gate, o.slurm) for o in outcomes if o.under]
    unequal = [(o.case, o.gate, o.slurm) for o in outcomes if o.unequal]
    refused = [o.case for o in outcomes if o.refused]
    compared = sum(not o.refused for o in outcomes)
    return (
        f"slurm {name}: {len(outcomes)} bodies tried, {compared} compared, {len(refused)} refused "
        f"by the gate {refused}, {len(under)} below slurmctld {under}, {len(unequal)} plain "
        f"not equal {unequal}"
    )


def test_report_the_table_counts(
    slurm_probe: GateProbe, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prints the two tables' counts (runs after the tables in file order)."""
    ours = {case.id for case in ADAPTER_CASES}
    newer = [p for p in ADAPTER_ELSEWHERE if re.match(r"/slurm/v0\.0\.(39|4[0-2])/", p)]
    with capsys.disabled():
        print("\n" + _counts("conformance table", [o for o in RESULTS if o.case not in ours]))
        print(
            _counts("adapter table (cases.py)", [o for o in RESULTS if o.case in ours])
            + f"; not run: {len(newer)} bodies of v0.0.39 to v0.0.42 (no daemon of those "
            f"versions here), {len(ADAPTER_ELSEWHERE) - len(newer)} on paths no slurmrestd serves"
        )


# The table's cases a D:5-owned tenant is known to get forwarded although slurmctld grants them
# controlled GPUs (strict expected failures, as above). Empty: none is.
KNOWN_FORWARDED: dict[str, str] = {}


@pytest.fixture(scope="module")
def d5_probe(slurm_lab: SlurmLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateProbe]:
    tmp = tmp_path_factory.mktemp("slurm-d5")
    config, headers = tenant_gate_config(tmp, slurm_lab)
    probe = GateProbe(slurm_lab, tmp, config=config, headers=headers)
    try:
        yield probe
    finally:
        probe.stop()
        slurm_lab.cancel_all()


@pytest.mark.parametrize("case", _params(KNOWN_FORWARDED))
def test_no_d5_tenant_is_forwarded_a_controlled_gpu(d5_probe: GateProbe, case: Case) -> None:
    """The acceptance line of the measurement work: under the US pack, a tenant owned from a D:5
    country never gets a body forwarded that slurmctld would give an H100 (all the lab has)."""
    outcome = run_case(d5_probe, case)
    if outcome.refused:
        return  # blocked (451 licence required) or refused (400): slurmrestd never saw it
    assert outcome.slurm == 0, (
        f"{case.id}: forwarded for a D:5 tenant with {outcome.gate} GPUs measured; slurmctld "
        f"grants {outcome.slurm} H100 ({outcome.detail})"
    )


def test_the_d5_tenant_is_served_without_gpus_and_blocked_with_them(d5_probe: GateProbe) -> None:
    """The test above means something: the tenant's identity, ownership and location are
    resolved, a body without GPUs reaches slurmrestd, and one with H100s is held for a licence."""
    plain = d5_probe.submit(job())
    assert plain.status == 200 and plain.job_id is not None, plain.answer
    assert plain.gate_gpus == 0
    with_gpus = d5_probe.submit(job(gpus=1))
    assert with_gpus.status == 451 and with_gpus.refused, with_gpus.answer
    assert with_gpus.job_id is None
