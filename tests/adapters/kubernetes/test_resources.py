"""Extended resources in a container: counted, ignored, or refused -- never zero by default.

A device plugin can advertise accelerators under any name. A resource the gate counts is an
accelerator; a core resource, a well-known plugin that holds none, or an operator entry with
``devices: 0`` is ignored; anything else is refused (400 ``unmeasurable-request`` naming the
field). Through the proxy, the D:5-parented ``acme-sg`` gets no pod of Huawei Ascend NPUs and no
pod of an unknown resource; the US ``frontier-labs`` gets what is known.
"""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper.config import KubernetesAccelerator, KubernetesConfig
from gatekeeper.demo import DemoKeys
from gatekeeper.errors import BadRequest
from gatekeeper.gpus import ECCN_A
from tests.e2e.gate import Gate

from ..helpers import route
from .stack import NS, ApiServer, measured
from .support import post
from .test_proxy_classes import send

GPU = "nvidia.com/gpu"


def container(name: str = "main", section: str = "limits", **amounts: Any) -> dict[str, Any]:
    return {"name": name, "image": "trainer:1", "resources": {section: {"cpu": "4", **amounts}}}


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": NS},
        "spec": {"containers": list(containers), **spec},
    }


def refused(doc: Any, **kw: Any) -> BadRequest:
    with pytest.raises(BadRequest) as e:
        post(doc, **kw)
    return e.value


UNKNOWN = "unknown extended resource"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (pod(container(**{"example.com/accel": 1})), "spec.containers[0].resources.limits"),
        (pod(container(section="requests", **{"hygon.com/dcu": "2"})), "spec.containers[0].resources.requests"),
        (pod(container(**{"smarter-devices/nvidia0": 1})), "spec.containers[0].resources.limits"),
        (pod(container(), initContainers=[container("init", **{"xilinx.com/fpga": 1})]),
         "spec.initContainers[0].resources.limits"),
        (pod(container(), overhead={"example.com/accel": "1"}), "spec.overhead"),
        (pod(container(**{"vpc.amazonaws.com/efa-gpu": 1})), "spec.containers[0].resources.limits"),
    ],
)  # fmt: skip
def test_unknown_extended_resource_is_refused_naming_the_field(doc: Any, field: str) -> None:
    e = refused(doc)
    assert e.reason == "unmeasurable-request"
    assert e.detail.startswith(field + "[")
    assert "unknown" in e.detail


def test_unknown_resource_detail() -> None:
    e = refused(pod(container(**{"example.com/accel": 1})))
    assert e.detail == (
        f"spec.containers[0].resources.limits[example.com/accel]: {UNKNOWN}: declare it in "
        "kubernetes.accelerator_resources (devices: 0 for one that holds no accelerator)"
    )


@pytest.mark.parametrize(
    "name",
    [
        "rdma/hca_shared_devices_a",
        "rdma/ib",
        "vpc.amazonaws.com/efa",
        "vpc.amazonaws.com/PrivateIPv4Address",
        "devices.kubevirt.io/kvm",
        "sgx.intel.com/epc",
        "hugepages-2Mi",
        "ephemeral-storage",
    ],
)
def test_known_non_accelerators_are_ignored(name: str) -> None:
    assert post(pod(container(**{GPU: 2, name: 4}))).gpus == 2.0


@pytest.mark.parametrize(
    ("name", "count", "gpus", "label"),
    [
        ("huawei.com/Ascend910", 8, 8.0, "Huawei-Ascend"),
        ("huawei.com/Ascend910-4c", 2, 2.0, "Huawei-Ascend"),  # a virtual NPU: one device each
        ("huawei.com/Ascend310P", "4", 4.0, "Huawei-Ascend"),
        ("cambricon.com/mlu", 4, 4.0, "Cambricon-MLU"),
        ("cambricon.com/mlu.smlu.vcore", 3, 3.0, "Cambricon-MLU"),
    ],
)
def test_ascend_and_cambricon_are_uncatalogued_accelerators(
    name: str, count: Any, gpus: float, label: str
) -> None:
    """Counted, and priced as the catalog's most capable part whatever the route's default
    model: a T4 route does not make an Ascend pod uncontrolled."""
    c = post(pod(container(**{name: count})), route("kubernetes", gpu_model="T4"))
    assert (c.gpus, c.gpu_model, c.model_known) == (gpus, label, False)
    assert c.controlled and c.eccn == ECCN_A
    assert "unknown-gpu-model" in c.assumptions


def test_uncatalogued_accelerator_on_a_deny_route_is_refused() -> None:
    e = refused(
        pod(container(**{"huawei.com/Ascend910": 1})), r=route("kubernetes", unknown_gpu="deny")
    )
    assert e.reason == "unknown-gpu-model"


def test_operator_declares_resources() -> None:
    section = KubernetesConfig(
        accelerator_resources=(
            KubernetesAccelerator("example.com/fpga-*", devices=0),
            KubernetesAccelerator("huawei.com/Ascend910", model="H100-SXM"),
        )
    )
    r = route("kubernetes", gpu_model=None, kubernetes=section)
    c = post(pod(container(**{"example.com/fpga-u250": 1, "huawei.com/Ascend910": 2})), r)
    assert (c.gpus, c.gpu_model, c.model_known) == (2.0, "H100-SXM", True)
    # a zero entry does not hide a name that looks like an accelerator elsewhere
    assert refused(pod(container(**{"example.com/gpu": 1})), r=r).reason == "unmeasurable-request"


def test_limit_range_defaulting_an_unknown_resource_is_refused() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "defaults", "namespace": NS},
        "spec": {"limits": [{"type": "Container", "default": {"example.com/accel": "1"}}]},
    }
    e = refused(doc)
    assert e.reason == "unmeasurable-request"
    assert e.detail.startswith("spec.limits[0].default[example.com/accel]")
    ok = {**doc, "spec": {"limits": [{"type": "Container", "default": {"rdma/ib": "1"}}]}}
    assert post(ok).gpus == 0


# ----------------------------------------------------------------------------- through the proxy


def job(name: str, **limits: Any) -> dict[str, Any]:
    spec = {"restartPolicy": "Never", "containers": [container(**limits)]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": spec}},
    }


async def test_d5_parented_tenant_gets_no_unknown_or_ascend_pod(
    stack: tuple[Gate, DemoKeys, ApiServer],
) -> None:
    gate, keys, _api = stack
    path = f"/apis/batch/v1/namespaces/{NS}/jobs"
    acme, lab = keys.token("acme-sg"), keys.token("frontier-labs")
    ascend = job("npu", **{"huawei.com/Ascend910": 8})
    status, problem = await send(gate, acme, "POST", path, ascend)
    assert status == 451 and problem["rule"] == "d5-headquarters", problem
    assert measured(gate)[-1][2] == 8.0
    for body in (
        job("x", **{"example.com/accel": 1}),
        job("c", **{"cambricon.com/mlu": 1, "hygon.com/dcu": 1}),
    ):
        for token in (acme, lab):
            status, problem = await send(gate, token, "POST", path, body)
            assert status == 400 and "unmeasurable-request" in problem["type"], problem
    # what is known is measured, not refused: a GPU job beside an RDMA device and EFA
    rdma = job("rdma", **{GPU: 4, "rdma/hca_shared_devices_a": 1, "vpc.amazonaws.com/efa": 1})
    status, problem = await send(gate, lab, "POST", path, rdma)
    assert status == 201, problem
    assert measured(gate)[-1][2] == 4.0
    status, problem = await send(gate, acme, "POST", path, rdma)
    assert status == 451, problem
