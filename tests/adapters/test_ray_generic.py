"""Ray and generic adapters, the dispatcher and the compute stage."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from gatekeeper.adapters import measure
from gatekeeper.adapters.generic import _MISSING as MISSING
from gatekeeper.adapters.generic import PointerError, parse_pointer, resolve_pointer
from gatekeeper.context import RequestContext, RequestInfo
from gatekeeper.errors import BadRequest, DependencyError
from gatekeeper.stages.compute import ComputeStage

from .helpers import CATALOG, check, generic_route, route, run

# The declared reading alone (a route opted out of the pool bound; see the pool tests below).
RAY = route("ray", max_hours=48.0, unsafe_ray_without_inventory=True)
SUBMIT = "/api/jobs/"


def ray_job(**kw: Any) -> dict[str, Any]:
    return {
        "entrypoint": "python train.py",
        "submission_id": "raysubmit_123",
        "runtime_env": {"pip": ["torch"]},
        "metadata": {"owner": "alice"},
        **kw,
    }


RAY_CASES: list[tuple[str, str, str, Any, float, float, str | None]] = [
    (
        "domain-h100",
        "POST",
        SUBMIT,
        ray_job(entrypoint_num_gpus=1, entrypoint_resources={"accelerator_type:H100": 0.001}),
        1,
        48,
        "H100-SXM",
    ),
    ("fractional", "POST", SUBMIT, ray_job(entrypoint_num_gpus=0.5), 0.5, 48, "H100-SXM"),
    (
        "a100-80g",
        "POST",
        "/api/jobs",
        ray_job(entrypoint_num_gpus=4, entrypoint_resources={"accelerator_type:A100-80G": 0.001}),
        4,
        48,
        "A100",
    ),
    (
        "mi300x-oam",
        "POST",
        SUBMIT,
        ray_job(
            entrypoint_num_gpus=2,
            entrypoint_resources={"accelerator_type:AMD-Instinct-MI300X-OAM": 1},
        ),
        2,
        48,
        "MI300X",
    ),
    (
        "two-types-most-capable",
        "POST",
        SUBMIT,
        ray_job(
            entrypoint_num_gpus=1,
            entrypoint_resources={"accelerator_type:A100": 0.001, "accelerator_type:B200": 0.001},
        ),
        1,
        48,
        "B200",
    ),
    (
        "gpu-resource-counted",
        "POST",
        SUBMIT,
        ray_job(entrypoint_resources={"GPU": 2}),
        2,
        48,
        "H100-SXM",
    ),
    ("no-gpus", "POST", SUBMIT, ray_job(), 0, 48, None),
    ("status-get", "GET", "/api/jobs/raysubmit_123", b"", 0, 0, None),
    ("stop", "POST", "/api/jobs/raysubmit_123/stop", b"", 0, 0, None),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "gpus", "hours", "model"),
    [c[1:] for c in RAY_CASES],
    ids=[c[0] for c in RAY_CASES],
)
def test_ray_table(
    method: str, path: str, body: Any, gpus: float, hours: float, model: str | None
) -> None:
    check(run(RAY, body, method=method, path=path), gpus, hours, model)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (ray_job(entrypoint_num_gpus="1"), "bad-value"),
        (ray_job(entrypoint_num_gpus=True), "bad-value"),
        (ray_job(entrypoint_num_gpus=-1), "bad-value"),
        (ray_job(entrypoint_resources=[1]), "bad-value"),
        ([1, 2], "bad-body"),
        (b'{"entrypoint_num_gpus": 1, "entrypoint_num_gpus": 0}', "duplicate-key"),
    ],
)
def test_ray_bad(body: Any, reason: str) -> None:
    with pytest.raises(BadRequest) as exc:
        run(RAY, body, path=SUBMIT)
    assert exc.value.reason == reason


# ----------------------------------------------------------------------------- generic

HDR = generic_route(gpus_header="X-GPUs", model_header="X-GPU-Model", hours_header="X-Hours")
PTR = generic_route(
    gpus_pointer="/resources/gpu~1count",
    model_pointer="/resources/model",
    hours_pointer="/limits/0/hours",
)

GENERIC_CASES: list[tuple[str, Any, str, dict[str, str], Any, float, float, str | None]] = [
    (
        "headers",
        HDR,
        "POST",
        {"X-GPUs": "8", "X-GPU-Model": "b200", "X-Hours": "2.5"},
        b"",
        8,
        2.5,
        "B200",
    ),
    ("headers-defaults", HDR, "POST", {"x-gpus": "2"}, b"", 2, 168, "H100-SXM"),
    (
        "pointers",
        PTR,
        "PUT",
        {},
        {"resources": {"gpu/count": 4, "model": "MI355X"}, "limits": [{"hours": 3}]},
        4,
        3,
        "MI355X",
    ),
    (
        "pointers-missing-optional",
        PTR,
        "POST",
        {},
        {"resources": {"gpu/count": 1}},
        1,
        168,
        "H100-SXM",
    ),
    ("get-zero", HDR, "GET", {}, b"", 0, 0, None),
    ("zero-gpus", HDR, "POST", {"X-GPUs": "0"}, b"", 0, 168, None),
]


@pytest.mark.parametrize(
    ("r", "method", "headers", "body", "gpus", "hours", "model"),
    [c[1:] for c in GENERIC_CASES],
    ids=[c[0] for c in GENERIC_CASES],
)
def test_generic_table(
    r: Any,
    method: str,
    headers: dict[str, str],
    body: Any,
    gpus: float,
    hours: float,
    model: str | None,
) -> None:
    check(run(r, body, method=method, headers=headers), gpus, hours, model)


@pytest.mark.parametrize(
    ("r", "headers", "body", "reason"),
    [
        (HDR, {}, b"", "missing-gpu-count"),
        (HDR, {"X-GPUs": "lots"}, b"", "bad-value"),
        (PTR, {}, {"resources": {}}, "missing-gpu-count"),
        (PTR, {}, {"resources": {"gpu/count": "x"}}, "bad-value"),
        (PTR, {}, {"resources": {"gpu/count": 1, "model": 5}}, "bad-value"),
        (PTR, {}, b"{bad", "bad-json"),
    ],
)
def test_generic_bad(r: Any, headers: dict[str, str], body: Any, reason: str) -> None:
    with pytest.raises(BadRequest) as exc:
        run(r, body, headers=headers)
    assert exc.value.reason == reason


def test_generic_duplicate_header_refused() -> None:
    headers = CIMultiDict([("X-GPUs", "1"), ("X-GPUs", "64")])
    with pytest.raises(BadRequest) as exc:
        measure(HDR, "POST", "/", headers, b"", CATALOG)
    assert exc.value.reason == "duplicate-header"


def test_generic_without_settings_is_operator_error() -> None:
    with pytest.raises(DependencyError):
        measure(route("generic"), "POST", "/", {}, b"", CATALOG)


@pytest.mark.parametrize(
    ("pointer", "doc", "expected"),
    [
        ("", {"a": 1}, {"a": 1}),
        ("/a~1b", {"a/b": 1}, 1),
        ("/m~0n", {"m~n": 2}, 2),
        ("/~01", {"~1": 3}, 3),
        ("/l/1", {"l": [5, 6]}, 6),
        ("/l/01", {"l": [5, 6]}, "missing"),
        ("/l/-", {"l": [5]}, "missing"),
        ("/ ", {" ": 7}, 7),
    ],
)
def test_json_pointer_rfc6901(pointer: str, doc: Any, expected: Any) -> None:
    got = resolve_pointer(doc, parse_pointer(pointer))
    if expected == "missing":
        assert got is MISSING
    else:
        assert got == expected


@pytest.mark.parametrize("bad", ["a/b", "/a~2", "/~"])
def test_json_pointer_bad_syntax(bad: str) -> None:
    with pytest.raises(PointerError):
        parse_pointer(bad)


# ----------------------------------------------------------------------------- dispatch + stage


def test_adapter_none_measures_nothing() -> None:
    assert measure(route("none"), "POST", "/", {}, b"{not json", CATALOG) is None


async def test_compute_stage_sets_fact() -> None:
    ctx = RequestContext(
        decision_id="d1",
        request=RequestInfo(route="ray-test", method="POST", path=SUBMIT, client_ip="127.0.0.1"),
        headers=CIMultiDict(),
        body=b'{"entrypoint": "x", "entrypoint_num_gpus": 2}',
        route_config=RAY,
    )
    ComputeStage(CATALOG).run(ctx)
    assert ctx.compute.gpus == 2 and ctx.compute.hours == 48


async def test_compute_stage_leaves_fact_unset_for_none() -> None:
    ctx = RequestContext(
        decision_id="d2",
        request=RequestInfo(route="r", method="GET", path="/", client_ip="127.0.0.1"),
        headers=CIMultiDict(),
        route_config=route("none"),
    )
    ComputeStage(CATALOG).run(ctx)
    assert not ctx.has("compute")
