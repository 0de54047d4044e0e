"""Malformed and hostile Kubernetes objects: each refused with its exact reason and field path."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gatekeeper.errors import BadRequest

from .support import post

GPU = "nvidia.com/gpu"


def dep(replicas: Any, gpus: Any = 1, containers: Any = None) -> dict[str, Any]:
    if containers is None:
        containers = [{"name": "m", "resources": {"limits": {GPU: gpus}}}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}}}  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "reason", "detail"),
    [
        (dep("3"), "bad-value", "spec.replicas: expected a non-negative number"),
        (dep(10**12), "bad-value", "spec.replicas: replica count 1000000000000 out of range"),
        (dep(-1), "bad-value", "spec.replicas: expected a finite non-negative number"),
        (dep(True), "bad-value", "spec.replicas: expected a number, got a boolean"),
        (dep(1, "1e400"), "bad-value",
         "spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]: expected a finite non-negative number"),
        (dep(1, "eight"), "bad-value",
         "spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]: bad quantity 'eight'"),
        (dep(1, containers={"m": {}}), "bad-value", "spec.template.spec.containers: expected a list"),
        (dep(10_000_000, 8), "gpu-count-out-of-range", "GPU count 8e+07 exceeds 1e+07"),
        ({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "j"},
          "spec": {"replicatedJobs": {"w": 1}}}, "bad-value", "spec.replicatedJobs.w: expected an object"),
        ({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "p"},
          "spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": "many"}}}},
         "bad-value", "spec.pytorchReplicaSpecs.Worker.replicas: expected a non-negative number"),
        ({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "c"},
          "spec": {"devices": {"requests": [{"name": "g", "exactly": {"deviceClassName": "gpu.nvidia.com",
                                                                      "allocationMode": "Some"}}]}}},
         "unmeasurable-request", "spec.devices.requests[0].exactly.allocationMode: unknown allocation mode 'Some'"),
    ],
)  # fmt: skip
def test_refused(doc: dict[str, Any], reason: str, detail: str) -> None:
    with pytest.raises(BadRequest) as e:
        post(doc)
    assert (e.value.reason, e.value.detail) == (reason, detail)


def test_yaml_anchors_count_every_use() -> None:
    """An anchored container reused in several replica specs is counted in each."""
    text = """
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {name: p}
spec:
  pytorchReplicaSpecs:
    Master: {replicas: 1, template: &t {spec: {containers: [{name: m, resources: {limits: {nvidia.com/gpu: 8}}}]}}}
    Worker: {replicas: 3, template: *t}
"""
    path = "/apis/kubeflow.org/v1/namespaces/a/pytorchjobs"
    assert post(text.encode(), path=path, ctype="application/yaml").gpus == 32.0
    assert yaml.safe_load(text)["kind"] == "PyTorchJob"


def limit_range(limits: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l"},
            "spec": {"limits": limits}}  # fmt: skip


@pytest.mark.parametrize(
    ("limits", "detail"),
    [
        ([{"type": "Container", "default": {GPU: 8}}],
         "spec.limits[0].default[nvidia.com/gpu]: a namespace default of accelerators reaches "
         "pods measured without them"),
        ([{"type": "Container", "max": {"cpu": "4"}},
          {"type": "Container", "defaultRequest": {"habana.ai/gaudi": "2"}}],
         "spec.limits[1].defaultRequest[habana.ai/gaudi]: a namespace default of accelerators "
         "reaches pods measured without them"),
        ([{"type": "Container", "default": {"example.com/npu-x": 1}}],
         "spec.limits[0].default[example.com/npu-x]: unknown accelerator resource"),
    ],
)  # fmt: skip
def test_limit_range_defaulting_accelerators_is_refused(limits: Any, detail: str) -> None:
    """The API server's LimitRanger writes a LimitRange's defaults into every later container that
    names no amount: a pod measured with none would then run with the namespace's accelerators."""
    with pytest.raises(BadRequest) as e:
        post(limit_range(limits), path="/api/v1/namespaces/t/limitranges")
    assert (e.value.reason, e.value.detail) == ("unmeasurable-request", detail)


def test_limit_range_without_accelerator_defaults_measures_zero() -> None:
    limits = [{"type": "Container", "default": {"cpu": "1", "memory": "1Gi"},
               "max": {GPU: 8}, "min": {GPU: 0}}]  # fmt: skip
    assert post(limit_range(limits), path="/api/v1/namespaces/t/limitranges").gpus == 0


@pytest.mark.parametrize("name", ["example.com/h100", "acme.io/H100-SXM", "vendor.net/a100"])
def test_resource_named_after_a_catalogued_model_is_refused(name: str) -> None:
    """An extended resource whose name is a catalogued accelerator (a device plugin may be
    configured to advertise H100s under any name) is not counted as no accelerator."""
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "resources": {"limits": {name: 8}}}]}}  # fmt: skip
    with pytest.raises(BadRequest) as e:
        post(doc, path="/api/v1/namespaces/t/pods")
    assert (e.value.reason, e.value.detail) == (
        "unmeasurable-request",
        f"spec.containers[0].resources.limits[{name}]: unknown accelerator resource",
    )


def test_device_class_counted_as_none_is_not_rewritten() -> None:
    """Claims of NVIDIA's ComputeDomain channel classes count no accelerator; a DeviceClass of
    that name written with a selector for GPUs would make such claims allocate GPUs unmeasured."""
    doc = {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
           "metadata": {"name": "compute-domain-default-channel.nvidia.com"},
           "spec": {"selectors": [{"cel": {"expression": "device.driver == 'gpu.nvidia.com'"}}]}}  # fmt: skip
    with pytest.raises(BadRequest) as e:
        post(doc, path="/apis/resource.k8s.io/v1/deviceclasses")
    assert (e.value.reason, e.value.detail) == (
        "unmeasurable-request",
        "metadata.name: claims of device class 'compute-domain-default-channel.nvidia.com' are "
        "counted as no accelerator: it is not written through the gate",
    )
    doc["metadata"] = {"name": "gpu.nvidia.com"}
    assert post(doc, path="/apis/resource.k8s.io/v1/deviceclasses").gpus == 0
