"""Which writes are measured on (or charged over) the stored object, and a read that cannot
reach the API server."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gatekeeper.context import RequestContext, RequestInfo
from gatekeeper.errors import DependencyError
from gatekeeper.stages.compute import ComputeStage
from gatekeeper.stages.kubernetes import KubernetesComputeStage, replaced_path, stored_path
from gatekeeper.stages.quota import charged
from tests.support import free_port

from ..helpers import CATALOG, route

D = "/apis/apps/v1/namespaces/ml/deployments"


@pytest.mark.parametrize(
    ("method", "path", "stored"),
    [
        ("PATCH", f"{D}/serve", f"{D}/serve"),
        ("PATCH", f"{D}/serve/scale", f"{D}/serve"),
        ("PUT", f"{D}/serve/scale", f"{D}/serve"),
        ("PUT", f"{D}/serve", None),  # a whole object: measured as sent
        ("POST", D, None),
        ("PATCH", f"{D}/serve/status", None),
        ("GET", f"{D}/serve", None),
        ("PATCH", "/healthz", None),
    ],
)
def test_stored_path(method: str, path: str, stored: str | None) -> None:
    assert stored_path(method, path) == stored


@pytest.mark.parametrize(
    ("method", "path", "replaced"),
    [
        ("PUT", f"{D}/serve?fieldManager=kubectl", f"{D}/serve"),
        ("PUT", f"{D}/serve/scale", None),  # measured on the stored object already
        ("PUT", f"{D}/serve/status", None),
        ("PUT", D, None),
        ("PATCH", f"{D}/serve", None),
        ("POST", D, None),
    ],
)
def test_replaced_path(method: str, path: str, replaced: str | None) -> None:
    assert replaced_path(method, path) == replaced


async def test_unreachable_api_server_is_a_dependency_error() -> None:
    stage = KubernetesComputeStage(ComputeStage(CATALOG), timeout_s=2)
    with pytest.raises(DependencyError) as e:
        await stage.read(f"http://127.0.0.1:{free_port()}", f"{D}/serve", None, {})
    assert (e.value.reason, e.value.status) == ("upstream-unreachable", 502)


async def test_claim_names_that_are_not_object_names_are_not_read() -> None:
    stage = KubernetesComputeStage(ComputeStage(CATALOG), timeout_s=2)
    # nothing listens there: a read would fail with 502
    r = replace(route("kubernetes"), upstream=f"http://127.0.0.1:{free_port()}")
    for name in ("x?watch=true", "../secrets/s", "UPPER", ""):
        assert await stage.read_claim(r, "ml", "ResourceClaim", name, {}) is None


async def test_put_whose_object_cannot_be_read_is_charged_whole() -> None:
    """The object a PUT replaces is read only for the credit: a read that fails (nothing listens
    at the API server's address) leaves the PUT measured as sent and credits nothing."""
    stage = KubernetesComputeStage(ComputeStage(CATALOG), timeout_s=2)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "x",
                                    "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}  # fmt: skip
    path = "/api/v1/namespaces/ml/pods/p"
    ctx = RequestContext(
        decision_id="d",
        request=RequestInfo("r", "PUT", path, "127.0.0.1"),
        headers=CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"})),
        body=json.dumps(pod).encode(),
    )
    ctx.route_config = replace(route("kubernetes"), upstream=f"http://127.0.0.1:{free_port()}")
    pending = stage.run(ctx)
    assert pending is not None
    await pending
    assert ctx.compute.gpus == 8 and ctx.prior is None
    assert charged(ctx) == (ctx.compute.tpp_hours, ctx.compute.gpu_hours)
