"""Which writes are measured on (or charged over) the stored object, and a read that cannot
reach the API server."""

from __future__ import annotations

import pytest

from gatekeeper.errors import DependencyError
from gatekeeper.stages.compute import ComputeStage
from gatekeeper.stages.kubernetes import KubernetesComputeStage, replaced_path, stored_path
from tests.support import free_port

from ..helpers import CATALOG

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
    from dataclasses import replace

    from ..helpers import route

    stage = KubernetesComputeStage(ComputeStage(CATALOG), timeout_s=2)
    # nothing listens there: a read would fail with 502
    r = replace(route("kubernetes"), upstream=f"http://127.0.0.1:{free_port()}")
    for name in ("x?watch=true", "../secrets/s", "UPPER", ""):
        assert await stage.read_claim(r, "ml", "ResourceClaim", name, {}) is None
