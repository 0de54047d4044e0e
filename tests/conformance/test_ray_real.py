"""Conformance against a real Ray head: jobs submitted through a real ``gatekeeper serve`` with the
real ``ray job submit`` client (and to the job agent's own path over HTTP), and Serve
applications, compared with what Ray reserves for them: the job supervisor actor's
``required_resources`` (read while it is pending, so an infeasible request reads back as well),
the actors the job's own code starts, and the ``required_resources`` of Serve's replica actors.

The gate's routes are bounded by a Ray pool that matches the head (one node of ``NUM_GPUS``
H100s; checked against the head's own node list), as every production Ray route is. Its bound
(the audit record's ``compute.gpus``) is never below what Ray reserves, and for a request that
declares its reservation plainly it is exactly the most Ray could give it: the head's GPUs, or
the declaration when that is more (Ray accepts it and keeps it pending). A refusal (400
``unmeasurable-request``) must leave Ray without the job. One route opts out of the pool
(``unsafe_ray_without_inventory``) and counts the declaration alone, equal to what Ray reserves
for the entrypoint.

Under the shipped US pack, a tenant whose parent is headquartered in a D:5 country sends every
body that reaches a GPU: each is held for a licence (451) and none reaches the head; a US lab is
forwarded. The counts are printed (``test_report_the_counts``, last in file order).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.adapters.helpers import D5_TENANT, D5_TENANT_IP, US_LAB, US_LAB_IP
from tests.conformance.ray_gate import (
    POOL,
    POOL_GPUS,
    UNSAFE,
    RayGate,
    TenantGate,
    gate_config,
    problem,
    send_json,
)
from tests.conformance.ray_lab import (
    HOLD_ACTOR,
    NUM_GPUS,
    SERVE_MODULE,
    SLEEP,
    RayLab,
    gpus_of,
    ray_missing,
)
from tests.support import free_port


@dataclass
class Tally:
    """What the suite tried and found, printed at the end."""

    compared: list[tuple[str, float | None, float]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    below: list[tuple[str, float | None, float]] = field(default_factory=list)
    unequal: list[tuple[str, float | None, float]] = field(default_factory=list)
    d5: list[int] = field(default_factory=list)  # the gate's status for each D:5 body
    d5_parent_hq: set[str] = field(default_factory=set)
    d5_forwarded: list[str] = field(default_factory=list)
    control: list[str] = field(default_factory=list)
    unsafe: list[tuple[str, float | None, float]] = field(default_factory=list)

    def compare(self, case: str, bound: float | None, reserved: float, plain: bool) -> None:
        """Records one comparison and asserts it: never below Ray; for a plain request exactly
        the most Ray could give it."""
        self.compared.append((case, bound, reserved))
        if bound is None or bound < reserved:
            self.below.append((case, bound, reserved))
        elif plain and bound != max(POOL_GPUS, reserved):
            self.unequal.append((case, bound, reserved))
        assert bound is not None and bound >= reserved, f"{case}: gate {bound} < Ray {reserved}"
        if plain:
            assert bound == max(POOL_GPUS, reserved), f"{case}: gate {bound}, Ray {reserved}"

    def report(self) -> str:
        d5 = self.d5
        figures = ", ".join(
            f"{case} {gate:g}/{ray:g}" for case, gate, ray in self.compared if gate is not None
        )
        return (
            f"ray conformance: {len(self.compared) + len(self.refused)} bodies, "
            f"{len(self.compared)} compared with what Ray reserves, {len(self.refused)} refused "
            f"{self.refused}, mismatches {len(self.below) + len(self.unequal)} (below Ray "
            f"{self.below}, plain not equal {self.unequal})\n"
            f"  gate/Ray GPUs (pool {POOL_GPUS}): {figures}; unsafe opt-in (declared alone) "
            f"gate/Ray: {', '.join(f'{c} {g}/{r:g}' for c, g, r in self.unsafe)}\n"
            f"ray D:5: {len(d5)} bodies from {D5_TENANT} (parent HQ "
            f"{', '.join(sorted(self.d5_parent_hq))}), {d5.count(451)} held (451), "
            f"{d5.count(400)} refused (400), {len(self.d5_forwarded)} forwarded "
            f"{self.d5_forwarded}; {US_LAB} forwarded {len(self.control)} {self.control}"
        )


TALLY = Tally()


@pytest.fixture(scope="module")
def ray_lab() -> Iterator[RayLab]:
    why = ray_missing()
    if why:
        pytest.skip(f"RAY CONFORMANCE NOT RUN: {why}")
    lab = RayLab().start()
    try:
        yield lab
    finally:
        lab.stop()
        assert lab.processes() == [], "Ray processes left behind"


@pytest.fixture(scope="module")
def ray_gate(ray_lab: RayLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayGate]:
    tmp = tmp_path_factory.mktemp("ray-gate")
    rg = RayGate(ray_lab, tmp, gate_config(tmp, ray_lab))
    try:
        yield rg
    finally:
        rg.stop()


def test_the_pool_is_what_the_head_holds(ray_lab: RayLab) -> None:
    """The route's pool describes the head: as many nodes, each with as many GPUs of its model."""
    nodes = ray_lab.nodes()
    assert len(nodes) == POOL["nodes"], nodes
    for node in nodes:
        assert node.get("GPU") == NUM_GPUS == POOL["node"]["accelerators"]["count"], node
        assert node.get("accelerator_type:H100") == 1, node


# (id, ray job submit options, what Ray reserves in GPUs, plain: the gate must equal the most
# Ray could give it)
CLI_CASES: list[tuple[str, list[str], float, bool]] = [
    ("num-gpus", ["--entrypoint-num-gpus", "2"], 2, True),
    ("fractional", ["--entrypoint-num-gpus", "0.5"], 0.5, True),
    ("typed", ["--entrypoint-num-gpus", "1",
               "--entrypoint-resources", '{"accelerator_type:H100": 0.001}'], 1, True),
    ("model-resource", ["--entrypoint-resources", '{"H100": 2}'], 2, True),
    ("gpu-and-model-resource", ["--entrypoint-num-gpus", "1",
                                "--entrypoint-resources", '{"H100": 3}'], 4, True),
    ("infeasible", ["--entrypoint-num-gpus", str(NUM_GPUS * 2)], NUM_GPUS * 2, True),
    ("cpu-only", ["--entrypoint-num-cpus", "0.1"], 0, True),
]  # fmt: skip

REFUSED_CASES: list[tuple[str, list[str]]] = [
    ("typed-without-count", ["--entrypoint-resources", '{"accelerator_type:H100": 0.001}']),
    ("custom-resource", ["--entrypoint-resources", '{"gpu_slot": 1}']),
]


@pytest.mark.parametrize(
    ("options", "expected", "plain"),
    [c[1:] for c in CLI_CASES],
    ids=[c[0] for c in CLI_CASES],
)
def test_ray_job_submit_through_the_gate(
    ray_gate: RayGate, request: pytest.FixtureRequest, options: list[str], expected: float,
    plain: bool,
) -> None:  # fmt: skip
    lab = ray_gate.lab
    status, output, sid = lab.cli_submit(ray_gate.url, *options)
    assert status == 0 and sid, output
    bound, assumptions = ray_gate.bound()
    reserved = gpus_of(lab.reserved(sid))
    assert reserved == expected, f"Ray reserved {reserved}: {lab.reserved(sid)}"
    if reserved <= POOL_GPUS:
        assert "gpus-from-ray-cluster" in assumptions, assumptions
    TALLY.compare(request.node.callspec.id, bound, reserved, plain)
    lab.stop_jobs()


def test_code_reserving_the_head_stays_within_the_bound(ray_gate: RayGate) -> None:
    """A job that declares no GPU while its code starts an actor holding every GPU of the head:
    Ray reserves them all for it, and the gate's bound (the pool) covers them."""
    lab = ray_gate.lab
    status, output, sid = lab.cli_submit(ray_gate.url, entrypoint=lab.hold_entrypoint())
    assert status == 0 and sid, output
    bound, _ = ray_gate.bound()
    declared = gpus_of(lab.reserved(sid))
    assert declared == 0  # the submission itself reserves no GPU
    reserved = declared + gpus_of(lab.actor_resources(HOLD_ACTOR, timeout=120))
    assert reserved == NUM_GPUS
    TALLY.compare("code-reserves-the-head", bound, reserved, plain=True)
    lab.stop_jobs()


@pytest.mark.parametrize(
    ("options"), [c[1] for c in REFUSED_CASES], ids=[c[0] for c in REFUSED_CASES]
)
def test_refused_submissions_never_reach_ray(
    ray_gate: RayGate, request: pytest.FixtureRequest, options: list[str]
) -> None:
    lab = ray_gate.lab
    before = set(lab.job_ids())
    status, output, sid = lab.cli_submit(ray_gate.url, *options)
    assert status != 0 and sid is None, output
    assert "unmeasurable-request" in output
    bound, _ = ray_gate.bound()
    assert bound is None  # refused while measuring: nothing measured, nothing forwarded
    assert set(lab.job_ids()) == before
    TALLY.refused.append(request.node.callspec.id)


AGENT_BODY = {"entrypoint": "sleep 600", "entrypoint_num_gpus": 3}


def test_the_job_agent_path_is_measured(ray_gate: RayGate) -> None:
    lab = ray_gate.lab
    status, raw = send_json("POST", f"{ray_gate.url}/api/job_agent/jobs/", AGENT_BODY)
    assert status == 200, raw
    sid = json.loads(raw)["submission_id"]
    bound, _ = ray_gate.bound()
    reserved = gpus_of(lab.reserved(sid))
    assert reserved == 3
    TALLY.compare("job-agent", bound, reserved, plain=True)
    lab.stop_jobs()


def test_the_unsafe_opt_in_counts_the_declaration_alone(ray_gate: RayGate) -> None:
    """A route with ``unsafe_ray_without_inventory``: the declared reservation, exactly what
    Ray reserves for the entrypoint, and every decision says the code is unbounded."""
    lab = ray_gate.lab
    options = dict((c[0], c[1]) for c in CLI_CASES)["gpu-and-model-resource"]
    status, output, sid = lab.cli_submit(ray_gate.url + UNSAFE, *options)
    assert status == 0 and sid, output
    bound, assumptions = ray_gate.bound()
    reserved = gpus_of(lab.reserved(sid))
    TALLY.unsafe.append(("gpu-and-model-resource", bound, reserved))
    assert bound == reserved == 4
    assert "ray-code-unbounded" in assumptions and "gpus-from-ray-cluster" not in assumptions
    lab.stop_jobs()


# ----------------------------------------------------------------------------- Serve

SERVE_APP_NAME = "gk"


def serve_config(deployment: dict[str, Any], port: int) -> dict[str, Any]:
    return {
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": SERVE_APP_NAME,
                "route_prefix": "/gk",
                "import_path": f"{SERVE_MODULE}:app",
                "deployments": [{"name": "Model", **deployment}],
            }
        ],
    }


# (id, deployment, replicas Ray starts, GPUs per replica Ray reserves, plain: the gate must equal
# the most Ray could give it)
SERVE_CASES: list[tuple[str, dict[str, Any], int, float, bool]] = [
    ("replicas", {"num_replicas": 2, "ray_actor_options": {"num_gpus": 1, "num_cpus": 0}},
     2, 1, True),
    ("fractional", {"num_replicas": 3, "ray_actor_options": {"num_gpus": 0.5, "num_cpus": 0}},
     3, 0.5, True),
    ("infeasible", {"num_replicas": 2, "ray_actor_options": {"num_gpus": 6, "num_cpus": 0}},
     2, 6, True),
    ("autoscaling", {"autoscaling_config": {"min_replicas": 1, "initial_replicas": 1,
                                            "max_replicas": 4},
                     "ray_actor_options": {"num_gpus": 1, "num_cpus": 0}}, 1, 1, False),
]  # fmt: skip


@pytest.fixture(scope="module")
def serve_ready(ray_gate: RayGate) -> RayGate:
    if not ray_gate.lab.serve_available():
        pytest.skip("RAY SERVE CONFORMANCE NOT RUN: ray[serve] is not installed (make ray-tools)")
    return ray_gate


@pytest.mark.parametrize(
    ("deployment", "replicas", "per_replica", "plain"),
    [c[1:] for c in SERVE_CASES],
    ids=[c[0] for c in SERVE_CASES],
)
def test_serve_application_through_the_gate(
    serve_ready: RayGate, request: pytest.FixtureRequest, deployment: dict[str, Any],
    replicas: int, per_replica: float, plain: bool,
) -> None:  # fmt: skip
    lab = serve_ready.lab
    status, answer = serve_ready.put_serve(serve_config(deployment, free_port()))
    assert status == 200, answer
    bound, _ = serve_ready.bound()
    try:
        found = lab.wait_replicas(SERVE_APP_NAME, "Model", replicas)
        assert len(found) == replicas, found
        reserved = sum(gpus_of(r) for r in found)
        assert reserved == replicas * per_replica, found
        TALLY.compare(f"serve-{request.node.callspec.id}", bound, reserved, plain)
    finally:
        lab.delete_serve()


def test_serve_without_num_gpus_never_reaches_ray(serve_ready: RayGate) -> None:
    lab = serve_ready.lab
    status, answer = serve_ready.put_serve(
        serve_config({"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}}, free_port())
    )
    assert status == 400 and b"unmeasurable-request" in answer, answer
    assert serve_ready.bound()[0] is None
    assert lab.replicas(SERVE_APP_NAME, "Model") == []
    TALLY.refused.append("serve-num-gpus-unstated")


# ----------------------------------------------------------------------------- D:5


@pytest.fixture(scope="module")
def tenant_gate(ray_lab: RayLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantGate]:
    tg = TenantGate(ray_lab, tmp_path_factory.mktemp("ray-d5"))
    try:
        yield tg
    finally:
        tg.stop()
        ray_lab.stop_jobs()


def _d5_cli_bodies(lab: RayLab) -> list[tuple[str, list[str], tuple[str, ...]]]:
    """Every ``ray job submit`` body above that Ray accepts: each reaches a GPU, by what it
    declares or by what its code may reserve (``cpu-only`` and the code-reserving one)."""
    return [
        *((case, options, SLEEP) for case, options, _, _ in CLI_CASES),
        ("code-reserves-the-head", [], lab.hold_entrypoint()),
    ]


def test_no_d5_tenant_gets_a_gpu_body_to_the_head(tenant_gate: TenantGate) -> None:
    """Each body from a tenant whose parent is headquartered in a D:5 country is held for a
    licence (451, read from the gate's own record of it) and the head never sees it: its job
    list and its Serve replicas are as before."""
    lab = tenant_gate.lab
    headers = tenant_gate.headers(D5_TENANT, D5_TENANT_IP)
    jobs_before = set(lab.job_ids())
    bodies = _d5_cli_bodies(lab)
    with ThreadPoolExecutor(max_workers=4) as pool:  # the refusals are independent
        outcomes = list(
            pool.map(
                lambda b: lab.cli_submit(tenant_gate.url, *b[1], headers=headers, entrypoint=b[2]),
                bodies,
            )
        )
    for (case, _, _), (status, output, sid) in zip(bodies, outcomes, strict=True):
        assert status != 0 and sid is None and "451" in output, (case, output)
    status, raw = send_json("POST", f"{tenant_gate.url}/api/job_agent/jobs/", AGENT_BODY, headers)
    assert status == 451, raw
    for case, deployment, *_ in SERVE_CASES:
        status, raw = tenant_gate.put_serve(serve_config(deployment, free_port()), headers)
        assert status == 451 and problem(raw), (case, raw)  # the gate's own answer

    records = tenant_gate.measured_records()
    assert len(records) == len(bodies) + 1 + len(SERVE_CASES), [r["http"] for r in records]
    for record in records:
        assert record["principal"]["tenant"] == D5_TENANT, record["principal"]
        assert record["compute"]["gpus"] >= 1 and record["compute"]["controlled"], record["compute"]
        TALLY.d5.append(record["http"]["status"])
        TALLY.d5_parent_hq.add(str((record.get("ownership") or {}).get("parent_hq_country")))
        if record["http"]["status"] != 451:
            TALLY.d5_forwarded.append(record["http"]["path"])
    assert TALLY.d5_forwarded == []
    assert set(lab.job_ids()) == jobs_before
    assert lab.replicas(SERVE_APP_NAME, "Model") == []


def test_a_us_lab_is_forwarded_the_same_body(tenant_gate: TenantGate) -> None:
    """The test above means something: the same gate forwards a US lab's submission."""
    lab = tenant_gate.lab
    headers = tenant_gate.headers(US_LAB, US_LAB_IP)
    status, output, sid = lab.cli_submit(tenant_gate.url, *CLI_CASES[0][1], headers=headers)
    assert status == 0 and sid, output
    assert sid in lab.job_ids()
    bound, _ = tenant_gate.bound()
    assert bound == POOL_GPUS
    TALLY.control.append(CLI_CASES[0][0])
    lab.stop_jobs()


def test_report_the_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints what the suite tried and found (runs after the tests above, in file order)."""
    with capsys.disabled():
        print("\n" + TALLY.report())
    assert TALLY.below == [] and TALLY.unequal == [] and TALLY.d5_forwarded == []
