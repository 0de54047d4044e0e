"""Conformance against a real Ray head: jobs submitted through a real ``gatekeeper serve`` with the
real ``ray job submit`` client (and to the job agent's own path over HTTP); the gate's measured
bound (its audit record's ``compute.gpus``) is compared with what Ray reserves for the entrypoint
(the job supervisor actor's ``required_resources``, read while it is pending, so an infeasible
request reads back as well). Never below; equal for plain requests. A refusal (400
``unmeasurable-request``) must leave Ray without the job. Serve applications go through the gate
too, compared with the ``required_resources`` of their replica actors.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.common import AuditTail
from tests.conformance.ray_lab import NUM_GPUS, SERVE_MODULE, RayLab, gpus_of, ray_missing
from tests.e2e.gate import Gate, base_config
from tests.support import free_port


def send_json(method: str, url: str, body: Any) -> tuple[int, bytes]:
    """One JSON request; (status, raw answer) whatever the status."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class RayGate:
    """A gate with a Ray route to the lab's dashboard and one to its job agent."""

    def __init__(self, lab: RayLab, tmp: Path) -> None:
        self.lab = lab
        cfg = base_config(tmp, lab.dashboard_url)
        cfg["limits"]["upstream_timeout_s"] = 60
        # the declared reading is what is compared with Ray's own accounting (no pool bound)
        common = {"adapter": "ray", "authenticate": False, "gpu_model": "H100",
                  "unsafe_ray_without_inventory": True}  # fmt: skip
        cfg["routes"] = [
            {"name": "ray-agent", "match": {"path_prefix": "/api/job_agent/"},
             "upstream": lab.agent_url, **common},
            {"name": "ray", "match": {"path_prefix": "/"}, "upstream": lab.dashboard_url,
             **common},
        ]  # fmt: skip
        self.gate = Gate(tmp, cfg)
        self.tail = AuditTail(tmp / "audit.jsonl")

    def submission_bound(self) -> tuple[float | None, list[str]]:
        """compute.gpus of the one submission the client just made, and its reasons."""
        posts = [
            r for r in self.tail.decisions()
            if r["http"]["method"] == "POST" and r["http"]["path"].rstrip("/").endswith("/jobs")
        ]  # fmt: skip
        assert len(posts) == 1, posts
        compute = posts[0].get("compute")
        reasons = list(posts[0]["decision"].get("reasons") or [])
        return (float(compute["gpus"]) if compute else None), reasons


@pytest.fixture(scope="module")
def ray_gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayGate]:
    why = ray_missing()
    if why:
        pytest.skip(f"RAY CONFORMANCE NOT RUN: {why}")
    lab = RayLab().start()
    try:
        rg = RayGate(lab, tmp_path_factory.mktemp("ray-gate"))
        try:
            yield rg
        finally:
            rg.gate.stop()
    finally:
        lab.stop()
        assert lab.processes() == [], "Ray processes left behind"


# (id, ray job submit options, what Ray reserves in GPUs, plain: the gate must equal it)
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
    ray_gate: RayGate, options: list[str], expected: float, plain: bool
) -> None:
    lab = ray_gate.lab
    status, output, sid = lab.cli_submit(ray_gate.gate.url, *options)
    assert status == 0 and sid, output
    bound, _ = ray_gate.submission_bound()
    reserved = gpus_of(lab.reserved(sid))
    assert reserved == expected, f"Ray reserved {reserved}: {lab.reserved(sid)}"
    assert bound is not None and bound >= reserved, f"gate {bound} < Ray {reserved}"
    if plain:
        assert bound == reserved
    lab.stop_jobs()


@pytest.mark.parametrize(
    ("options"), [c[1] for c in REFUSED_CASES], ids=[c[0] for c in REFUSED_CASES]
)
def test_refused_submissions_never_reach_ray(ray_gate: RayGate, options: list[str]) -> None:
    lab = ray_gate.lab
    before = set(lab.job_ids())
    status, output, sid = lab.cli_submit(ray_gate.gate.url, *options)
    assert status != 0 and sid is None, output
    assert "unmeasurable-request" in output
    bound, _ = ray_gate.submission_bound()
    assert bound is None  # refused while measuring: nothing measured, nothing forwarded
    assert set(lab.job_ids()) == before


def test_the_job_agent_path_is_measured(ray_gate: RayGate) -> None:
    lab = ray_gate.lab
    body = {"entrypoint": "sleep 600", "entrypoint_num_gpus": 3}
    status, raw = send_json("POST", f"{ray_gate.gate.url}/api/job_agent/jobs/", body)
    assert status == 200, raw
    sid = json.loads(raw)["submission_id"]
    bound, _ = ray_gate.submission_bound()
    reserved = gpus_of(lab.reserved(sid))
    assert reserved == 3 and bound == 3
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


# (id, deployment, replicas Ray starts, GPUs per replica Ray reserves, plain: gate must equal)
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


def put_serve(rg: RayGate, config: dict[str, Any]) -> tuple[int, bytes]:
    return send_json("PUT", f"{rg.gate.url}/api/serve/applications/", config)


def serve_bound(rg: RayGate) -> float | None:
    puts = [r for r in rg.tail.decisions() if r["http"]["method"] == "PUT"]
    assert len(puts) == 1, puts
    compute = puts[0].get("compute")
    return float(compute["gpus"]) if compute else None


@pytest.mark.parametrize(
    ("deployment", "replicas", "per_replica", "plain"),
    [c[1:] for c in SERVE_CASES],
    ids=[c[0] for c in SERVE_CASES],
)
def test_serve_application_through_the_gate(
    serve_ready: RayGate, deployment: dict[str, Any], replicas: int, per_replica: float,
    plain: bool,
) -> None:  # fmt: skip
    lab = serve_ready.lab
    status, answer = put_serve(serve_ready, serve_config(deployment, free_port()))
    assert status == 200, answer
    bound = serve_bound(serve_ready)
    try:
        found = lab.wait_replicas(SERVE_APP_NAME, "Model", replicas)
        assert len(found) == replicas, found
        reserved = sum(gpus_of(r) for r in found)
        assert reserved == replicas * per_replica, found
        assert bound is not None and bound >= reserved, f"gate {bound} < Ray {reserved}"
        if plain:
            assert bound == reserved
    finally:
        lab.delete_serve()


def test_serve_without_num_gpus_never_reaches_ray(serve_ready: RayGate) -> None:
    lab = serve_ready.lab
    status, answer = put_serve(
        serve_ready, serve_config({"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
                                  free_port()),
    )  # fmt: skip
    assert status == 400 and b"unmeasurable-request" in answer, answer
    assert serve_bound(serve_ready) is None
    assert lab.replicas(SERVE_APP_NAME, "Model") == []
