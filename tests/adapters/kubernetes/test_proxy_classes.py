"""Each class of the issue through the proxy: a real gate with the shipped Kubernetes routes, the
shipped US pack and the demo entities, in front of the stand-in API server.

``acme-sg`` is D:5-parented (its ultimate parent is headquartered in China): no class that asks
for accelerators lets it through (scaling a Deployment without GPUs asks for none), its refusals
record what they measured, and none of its refused writes reaches the API server.
``frontier-labs`` (US) shows the same requests measured exactly where they are allowed.
"""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper.demo import DemoKeys
from tests.e2e.gate import Gate

from .stack import NS, ApiServer, measured, send

GPU = "nvidia.com/gpu"
CORE = f"/api/v1/namespaces/{NS}"
APPS = f"/apis/apps/v1/namespaces/{NS}"
BATCH = f"/apis/batch/v1/namespaces/{NS}"
DRA = f"/apis/resource.k8s.io/v1beta1/namespaces/{NS}"


def container(name: str = "main", **limits: Any) -> dict[str, Any]:
    return {"name": name, "image": "trainer:1", "resources": {"limits": {"cpu": "2", **limits}}}


def job(name: str, *containers: dict[str, Any], **labels: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": list(containers)}}}}  # fmt: skip


def pod(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": list(containers), **spec}}  # fmt: skip


TEMPLATE = {"apiVersion": "resource.k8s.io/v1beta1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": "eight"},
            "spec": {"spec": {"devices": {"requests": [
                {"name": "g", "deviceClassName": "gpu.nvidia.com", "count": 8}]}}}}  # fmt: skip
DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "serve"},
          "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "s"}},
                   "template": {"metadata": {"labels": {"app": "s"}},
                                "spec": {"containers": [container()]}}}}  # fmt: skip
GPU_DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "serve-gpu"},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "g"}},
                       "template": {"metadata": {"labels": {"app": "g"}},
                                    "spec": {"containers": [container(**{GPU: 2})]}}}}  # fmt: skip
SMP = "application/strategic-merge-patch+json"


async def prepare(gate: Gate, keys: DemoKeys) -> None:
    """What the classes build on, created by the US lab: a claim template, a 0-GPU Deployment of
    4 pods and a Deployment of 1 pod of 2 GPUs."""
    lab = keys.token("frontier-labs")
    assert (await send(gate, lab, "POST", f"{DRA}/resourceclaimtemplates", TEMPLATE))[0] == 201
    assert (await send(gate, lab, "POST", f"{APPS}/deployments", DEPLOY))[0] == 201
    assert (await send(gate, lab, "POST", f"{APPS}/deployments", GPU_DEPLOY))[0] == 201


# (name, method, path, body, content type, status for acme-sg, GPUs measured for the US lab or
# None when the request is refused for everyone)
CLASSES: list[tuple[str, str, str, Any, str, int, float | None]] = [
    ("dra-claim-template", "POST", f"{DRA}/resourceclaimtemplates",
     {**TEMPLATE, "metadata": {"name": "more"}}, "application/json", 451, 8.0),
    ("dra-pod-claims", "POST", f"{CORE}/pods",
     pod("p", container(), resourceClaims=[{"name": "g", "resourceClaimTemplateName": "eight"}]),
     "application/json", 451, 8.0),
    ("gaudi", "POST", f"{BATCH}/jobs", job("g", container(**{"habana.ai/gaudi": 8})), "application/json", 451, 8.0),
    ("neuron", "POST", f"{BATCH}/jobs", job("n", container(**{"aws.amazon.com/neuron": 16})),
     "application/json", 451, 16.0),
    ("tpu", "POST", f"{BATCH}/jobs", job("t", container(**{"google.com/tpu": 4})), "application/json", 451, 4.0),
    ("intel", "POST", f"{BATCH}/jobs", job("i", container(**{"gpu.intel.com/i915": 2})), "application/json", 451, 2.0),
    ("patch-directive", "POST", f"{CORE}/pods?fieldValidation=Ignore",
     pod("x", container(), {**container("hidden", **{GPU: 8}), "$patch": "delete"}),
     "application/json", 400, None),
    ("smp-patch-per-replica", "PATCH", f"{APPS}/deployments/serve",
     {"spec": {"template": {"spec": {"containers": [{"name": "main", "resources": {"limits": {GPU: 2}}}]}}}},
     SMP, 451, 8.0),
    ("kueue-label", "POST", f"{BATCH}/jobs",
     job("k", container(**{GPU: 8}), **{"kueue.x-k8s.io/max-exec-time-seconds": "1"}), "application/json", 451, 8.0),
    ("pods-proxy", "POST", f"{CORE}/pods/ray-head/proxy/api/jobs/",
     {"entrypoint": "python train.py", "entrypoint_num_gpus": 8}, "application/json", 400, None),
    ("services-proxy", "POST", f"{CORE}/services/ray-head:8265/proxy/api/jobs/",
     {"entrypoint": "python train.py", "entrypoint_num_gpus": 8}, "application/json", 400, None),
    ("scale", "PATCH", f"{APPS}/deployments/serve/scale", {"spec": {"replicas": 4}},
     "application/merge-patch+json", 200, 0.0),
    # 4 replicas of the stored template's 2 GPUs: 8, not 4 x an assumed 8
    ("scale-gpu", "PATCH", f"{APPS}/deployments/serve-gpu/scale", {"spec": {"replicas": 4}},
     "application/merge-patch+json", 451, 8.0),
    ("jobset", "POST", f"/apis/jobset.x-k8s.io/v1alpha2/namespaces/{NS}/jobsets",
     {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "js"},
      "spec": {"replicatedJobs": [{"name": "w", "replicas": 2, "template": {"spec": {
          "parallelism": 2, "template": {"spec": {"containers": [container(**{GPU: 8})]}}}}}]}},
     "application/json", 451, 32.0),
    ("pytorchjob", "POST", f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs",
     {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "pt"},
      "spec": {"pytorchReplicaSpecs": {
          "Master": {"replicas": 1, "template": {"spec": {"containers": [container(**{GPU: 8})]}}},
          "Worker": {"replicas": 3, "template": {"spec": {"containers": [container(**{GPU: 8})]}}}}}},
     "application/json", 451, 32.0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "ctype", "acme_status", "lab_gpus"),
    CLASSES,
    ids=[c[0] for c in CLASSES],
)
async def test_class_through_the_proxy(
    stack: tuple[Gate, DemoKeys, ApiServer],
    name: str,
    method: str,
    path: str,
    body: Any,
    ctype: str,
    acme_status: int,
    lab_gpus: float | None,
) -> None:
    gate, keys, api = stack
    await prepare(gate, keys)
    writes = sum(1 for e in api.seen() if e["method"] != "GET")
    status, problem = await send(gate, keys.token("acme-sg"), method, path, body, ctype)
    assert status == acme_status, problem
    if status == 200:
        # the scale of a 0-GPU Deployment asks for no GPUs: allowed, and measured as zero
        assert measured(gate)[-1][2] == 0.0
        return
    # refused: nothing but the gate's own reads reached the API server
    assert sum(1 for e in api.seen() if e["method"] != "GET") == writes
    if status == 451:
        assert problem["rule"] == "d5-headquarters"
        assert measured(gate)[-1] == (method, path, lab_gpus, "require_license")
    else:
        assert (
            problem["reasons"] == ["unmeasurable-request"]
            or "unmeasurable-request" in problem["type"]
        )
    if lab_gpus is None:
        return
    lab_status, _ = await send(gate, keys.token("frontier-labs"), method, path, body, ctype)
    assert lab_status in (200, 201), _
    assert measured(gate)[-1][2] == lab_gpus
