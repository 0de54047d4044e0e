"""What the proxy charges for a write that changes a stored object: only the increase.

A real gate with the shipped Kubernetes routes in front of the stand-in API server. The
Norwegian ``fjord-research`` is allowed within the US pack's ``foreign-monthly`` TPP-hours
budget, so every allowed write's audit record names the quota and what it consumed. The gate
reads the stored object (with the client's token) for a ``PATCH``, a ``/scale`` write and a
``PUT``; the policy decides on the whole object as it will be stored, the quota draws only what
it adds to the object as read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from gatekeeper.demo import DemoKeys
from tests.e2e.gate import Gate

from .stack import NS, ApiServer, send

GPU = "nvidia.com/gpu"
H100_TPP = 15832  # the catalog's H100-SXM
POD = 8 * 24 * H100_TPP  # one pod of 8 H100s for the k8s-write route's max_hours (24)
APPS = f"/apis/apps/v1/namespaces/{NS}/deployments"
MERGE = "application/merge-patch+json"


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    container = {"name": "main", "image": "vllm:1", "resources": {"limits": {GPU: "8"}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container]}}}}  # fmt: skip


def last(gate: Gate) -> dict[str, Any]:
    """The newest decision record of the gate's audit file."""
    audit = Path(gate.config["audit"]["sinks"][0]["path"])
    records = [json.loads(line) for line in audit.read_text().splitlines() if line]
    return [r for r in records if "decision" in r][-1]


def charge(gate: Gate) -> tuple[float, float]:
    """(GPUs measured, TPP-hours the quota consumed) of the newest decision."""
    rec = last(gate)
    assert rec["decision"]["action"] == "allow", rec
    assert rec["quota"]["name"] == "foreign-monthly", rec
    return rec["compute"]["gpus"], rec["quota"]["consumed"]


async def write(
    gate: Gate,
    token: str,
    method: str,
    path: str,
    body: Any,
    ctype: str = "application/json",
    *,
    status: int = 200,
) -> tuple[float, float]:
    """Send one write; (GPUs measured, TPP-hours consumed) of its decision."""
    got, problem = await send(gate, token, method, path, body, ctype)
    assert got == status, problem
    return charge(gate)


async def stored(api: ApiServer, path: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{api.port}{path}") as r,
    ):
        assert r.status == 200
        return await r.json()  # type: ignore[no-any-return]


async def test_patch_and_scale_draw_only_their_increase(
    stack: tuple[Gate, DemoKeys, ApiServer],
) -> None:
    gate, keys, _api = stack
    fjord = keys.token("fjord-research")
    created = await write(gate, fjord, "POST", APPS, deployment("serve", 2), status=201)
    assert created == (16, 2 * POD)
    serve = f"{APPS}/serve"
    # decided on 3 pods, charged the one it adds
    assert await write(gate, fjord, "PATCH", serve, {"spec": {"replicas": 3}}, MERGE) == (24, POD)
    assert await write(gate, fjord, "PATCH", serve, {"spec": {"replicas": 1}}, MERGE) == (8, 0)
    four = {"spec": {"replicas": 4}}
    assert await write(gate, fjord, "PATCH", f"{serve}/scale", four, MERGE) == (32, 3 * POD)
    body = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "serve"},
            "spec": {"replicas": 2}}  # fmt: skip
    assert await write(gate, fjord, "PUT", f"{serve}/scale", body) == (16, 0)


async def test_put_draws_its_increase_over_the_object_it_replaces(
    stack: tuple[Gate, DemoKeys, ApiServer],
) -> None:
    gate, keys, api = stack
    fjord = keys.token("fjord-research")
    await write(gate, fjord, "POST", APPS, deployment("serve", 2), status=201)
    same = await stored(api, f"{APPS}/serve")  # as the API server keeps it
    assert await write(gate, fjord, "PUT", f"{APPS}/serve", same) == (16, 0)
    grown = {**same, "spec": {**same["spec"], "replicas": 3}}
    assert await write(gate, fjord, "PUT", f"{APPS}/serve", grown) == (24, POD)
    # the gate read the object it replaces with the client's own token
    gets = [e for e in api.seen() if e["method"] == "GET" and e["bearer"]]
    assert [e["path"] for e in gets] == [f"{APPS}/serve"] * 2
    # nothing stored under a new name: the whole object is charged (the API server refuses a PUT
    # that would create a Deployment, 404, and the charge is given back)
    other = deployment("other", 2)
    assert await write(gate, fjord, "PUT", f"{APPS}/other", other, status=404) == (16, 2 * POD)


async def test_put_over_an_object_the_gate_cannot_bound_is_charged_whole(
    stack: tuple[Gate, DemoKeys, ApiServer],
) -> None:
    """A stored object the gate cannot measure (written past it) credits nothing."""
    gate, keys, api = stack
    fjord = keys.token("fjord-research")
    await write(gate, fjord, "POST", APPS, deployment("serve", 2), status=201)
    # an unknown accelerator in the stored template: the object as read cannot be bounded
    odd = deployment("serve", 2)
    odd["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = {
        "example.com/h100": "8"
    }
    async with (
        aiohttp.ClientSession() as s,
        s.put(f"http://127.0.0.1:{api.port}{APPS}/serve", json=odd) as r,
    ):
        assert r.status == 200
    assert await write(gate, fjord, "PUT", f"{APPS}/serve", deployment("serve", 2)) == (16, 2 * POD)


async def test_d5_tenant_is_refused_a_patch_that_adds_nothing(
    stack: tuple[Gate, DemoKeys, ApiServer],
) -> None:
    """The policy decides on the whole object as stored: lowering a GPU Deployment's replicas
    adds nothing, and is still refused to a D:5-parented tenant."""
    gate, keys, api = stack
    lab = keys.token("frontier-labs")
    assert (await send(gate, lab, "POST", APPS, deployment("serve", 2)))[0] == 201
    writes = sum(1 for e in api.seen() if e["method"] != "GET")
    acme = keys.token("acme-sg")
    down = {"spec": {"replicas": 1}}
    status, problem = await send(gate, acme, "PATCH", f"{APPS}/serve", down, MERGE)
    assert status == 451 and problem["rule"] == "d5-headquarters"
    rec = last(gate)
    assert rec["decision"]["action"] == "require_license" and rec["compute"]["gpus"] == 8.0
    status, _ = await send(gate, acme, "PUT", f"{APPS}/serve", deployment("serve", 1))
    assert status == 451
    assert sum(1 for e in api.seen() if e["method"] != "GET") == writes
