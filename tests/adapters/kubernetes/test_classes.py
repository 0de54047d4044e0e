"""Each class of failure the Kubernetes path had, as the adapter sees it (the proxy's view).

Wrong allows (DRA, other vendors' accelerators, ``$patch`` in a create), under-measures (a
strategic-merge PATCH of a Deployment, an untrusted Kueue label, ``pods/proxy``), over-measures
(``/scale``) and refusals of the kinds ML teams submit (JobSet, PyTorchJob).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gatekeeper.config import (
    InventoryAccelerators,
    InventoryEntry,
    InventoryNode,
    KubernetesConfig,
)
from gatekeeper.errors import BadRequest
from gatekeeper.inventory import build_inventory

from ..helpers import CATALOG, route
from .support import R, post

GPU = "nvidia.com/gpu"


def container(name: str = "main", **limits: Any) -> dict[str, Any]:
    return {"name": name, "image": "trainer:1", "resources": {"limits": {"cpu": "4", **limits}}}


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team-a"},
        "spec": {"containers": list(containers), **spec},
    }


def deployment(replicas: int, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "serve", "namespace": "team-a"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "serve"}},
            "template": {
                "metadata": {"labels": {"app": "serve"}},
                "spec": {"containers": [container(**{GPU: gpus})]},
            },
        },
    }


def refused(fn: Any, *args: Any, **kw: Any) -> BadRequest:
    with pytest.raises(BadRequest) as e:
        fn(*args, **kw)
    return e.value


# ----------------------------------------------------------------------------- wrong allows


@pytest.mark.parametrize(
    ("resource", "count", "gpus"),
    [
        ("habana.ai/gaudi", "8", 8.0),
        ("aws.amazon.com/neuron", "16", 16.0),
        ("aws.amazon.com/neuroncore", "4", 4.0),  # four cores may sit on four devices
        ("aws.amazon.com/neurondevice", 2, 2.0),
        ("google.com/tpu", "4", 4.0),
        ("gpu.intel.com/i915", 1, 1.0),
        ("gpu.intel.com/xe", 2, 2.0),
        ("amd.com/gpu", 8, 8.0),
        ("nvidia.com/mig-1g.10gb", 3, 3.0),  # three slices may be on three GPUs
        ("nvidia.com/gpu.shared", 2, 2.0),  # time-sliced shares: one physical GPU each
    ],
)
def test_every_vendor_accelerator_is_counted(resource: str, count: Any, gpus: float) -> None:
    assert post(pod(container(**{resource: count}))).gpus == gpus


def test_unknown_accelerator_like_resource_is_refused() -> None:
    e = refused(post, pod(container(**{"metax-tech.com/sgpu": 1})))
    assert e.reason == "unmeasurable-request"
    assert e.detail == (
        "spec.containers[0].resources.limits[metax-tech.com/sgpu]: unknown accelerator resource"
    )


def test_configured_accelerator_resources() -> None:
    from gatekeeper.config import KubernetesAccelerator

    section = KubernetesConfig(
        accelerator_resources=(
            KubernetesAccelerator("metax-tech.com/sgpu", devices=1, model="H100-SXM"),
            KubernetesAccelerator("rdma/ib", devices=0),
        )
    )
    r = route("kubernetes", gpu_model=None, kubernetes=section)
    c = post(pod(container(**{"metax-tech.com/sgpu": 2, "rdma/ib": 1})), r)
    assert (c.gpus, c.gpu_model) == (2.0, "H100-SXM")


def test_dra_claim_template_and_pod_claims() -> None:
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "four", "namespace": "team-a"},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [
                        {"name": "g", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 4}},
                        {
                            "name": "alt",
                            "firstAvailable": [
                                {"name": "big", "deviceClassName": "gpu.nvidia.com", "count": 2},
                                {"name": "small", "deviceClassName": "mig.nvidia.com", "count": 1},
                            ],
                        },
                    ]
                }
            }
        },
    }
    assert post(template).gpus == 6.0
    p = pod(container(), resourceClaims=[{"name": "c", "resourceClaimTemplateName": "four"}])
    e = refused(post, p)
    assert e.reason == "unmeasurable-request"
    assert post(p, resolver=lambda kind, ns, name: template if name == "four" else None).gpus == 6


def test_dra_allocation_all_and_unknown_class() -> None:
    claim = {
        "apiVersion": "resource.k8s.io/v1beta1",
        "kind": "ResourceClaim",
        "metadata": {"name": "all", "namespace": "team-a"},
        "spec": {
            "devices": {
                "requests": [
                    {"name": "g", "deviceClassName": "gpu.nvidia.com", "allocationMode": "All"}
                ]
            }
        },
    }
    assert refused(post, claim).reason == "unmeasurable-request"
    pooled = route("kubernetes", inventory="k8s-h100")
    assert post(claim, pooled, inventory=_inventory()).gpus == 8.0  # one node's devices
    assert refused(post, claim, inventory=_inventory()).reason == "unmeasurable-request"
    other = copy.deepcopy(claim)
    other["spec"]["devices"]["requests"][0] = {"name": "x", "deviceClassName": "fpga.example.org"}
    e = refused(post, other)
    assert (
        e.detail
        == "spec.devices.requests[0].deviceClassName: unknown device class 'fpga.example.org'"
    )


@pytest.mark.parametrize("validation", ["Ignore", "Warn", "Strict", None])
def test_patch_directive_in_a_create_is_refused(validation: str | None) -> None:
    body = pod(container(**{GPU: 1}), {**container("hidden", **{GPU: 8}), "$patch": "delete"})
    path = "/api/v1/namespaces/team-a/pods"
    if validation:
        path += f"?fieldValidation={validation}"
    e = refused(post, body, path=path)
    assert e.reason == "unmeasurable-request"
    assert e.detail == "spec.containers[1].$patch: patch directive in an object"


# ----------------------------------------------------------------------------- under-measured


def test_strategic_merge_patch_measures_the_stored_object() -> None:
    stored = deployment(4, 0)
    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "main", "resources": {"limits": {GPU: 2}}}]}
            }
        }
    }
    path = "/apis/apps/v1/namespaces/team-a/deployments/serve"
    ctype = "application/strategic-merge-patch+json"
    assert post(patch, path=path, method="PATCH", ctype=ctype, current=stored).gpus == 8.0
    e = refused(post, patch, path=path, method="PATCH", ctype=ctype)
    assert e.reason == "unmeasurable-request"
    assert "admission webhook" in e.detail


def test_label_only_patch_needs_no_stored_object() -> None:
    path = "/apis/apps/v1/namespaces/team-a/deployments/serve"
    patch = {"metadata": {"labels": {"team": "a"}}}
    assert post(patch, path=path, method="PATCH", ctype="application/merge-patch+json").gpus == 0


def test_kueue_label_is_trusted_only_when_configured() -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "labels": {"kueue.x-k8s.io/max-exec-time-seconds": "3600"}},
        "spec": {"parallelism": 2, "template": {"spec": {"containers": [container(**{GPU: 4})]}}},
    }
    untrusted = post(job)
    assert (untrusted.gpus, untrusted.hours) == (8.0, 24.0)
    assert "hours-from-route-max" in untrusted.assumptions
    r = route(
        "kubernetes", max_hours=24.0, kubernetes=KubernetesConfig(kueue_enforces_max_exec_time=True)
    )
    assert post(job, r).hours == 1.0
    job["spec"]["activeDeadlineSeconds"] = 1800
    assert post(job).hours == 0.5


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/team-a/pods/ray-head/proxy/api/jobs/",
        "/api/v1/namespaces/team-a/services/ray-head:8265/proxy/api/jobs/",
    ],
)
def test_writes_through_the_api_proxy_are_refused(path: str) -> None:
    body = {"entrypoint": "python train.py", "entrypoint_num_gpus": 8}
    e = refused(post, body, path=path)
    assert e.reason == "unmeasurable-request"
    assert "proxy" in e.detail


@pytest.mark.parametrize("sub", ["exec", "attach", "portforward"])
def test_remote_access_subresources_measure_zero(sub: str) -> None:
    assert post(b"", path=f"/api/v1/namespaces/team-a/pods/p/{sub}").gpus == 0


# ----------------------------------------------------------------------------- over-measured


def test_scale_measures_the_template_times_the_new_replicas() -> None:
    stored = deployment(1, 2)
    path = "/apis/apps/v1/namespaces/team-a/deployments/serve/scale"
    scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 4}}
    assert post(scale, path=path, method="PUT", current=stored).gpus == 8.0
    patch = {"spec": {"replicas": 4}}
    got = post(
        patch, path=path, method="PATCH", ctype="application/merge-patch+json", current=stored
    )
    assert got.gpus == 8.0
    assert refused(post, scale, path=path, method="PUT").reason == "unmeasurable-request"


# ----------------------------------------------------------------------------- unusable


def test_jobset_and_pytorchjob_are_measured() -> None:
    jobset = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "js"},
        "spec": {
            "replicatedJobs": [
                {
                    "name": "w",
                    "replicas": 2,
                    "template": {
                        "spec": {
                            "parallelism": 4,
                            "template": {"spec": {"containers": [container(**{GPU: 8})]}},
                        }
                    },
                },
                {
                    "name": "d",
                    "template": {"spec": {"template": {"spec": {"containers": [container()]}}}},
                },
            ]
        },
    }
    assert post(jobset).gpus == 64.0
    ptj = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "p"},
        "spec": {
            "elasticPolicy": {"minReplicas": 1, "maxReplicas": 6},
            "pytorchReplicaSpecs": {
                "Worker": {
                    "replicas": 2,
                    "template": {"spec": {"containers": [container(**{GPU: 1})]}},
                }
            },
        },
    }
    assert post(ptj).gpus == 6.0  # elastic workers may grow to maxReplicas


# ----------------------------------------------------------------------------- the walker


def test_unknown_kind_is_refused_and_zero_kinds_measure_zero() -> None:
    crd = {
        "apiVersion": "example.com/v1",
        "kind": "Trainer",
        "metadata": {"name": "t"},
        "spec": {"template": {"spec": {"containers": [container(**{GPU: 8})]}}},
    }
    e = refused(post, crd)
    assert e.reason == "unmeasurable-request"
    assert (
        e.detail == "kind: unknown kind 'example.com/v1 trainers': where it keeps pods is not known"
    )
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
    assert post(cm).gpus == 0
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "h"},
    }
    assert refused(post, hpa).reason == "unmeasurable-request"


def test_operator_crd_from_configuration() -> None:
    from gatekeeper.config import KubernetesTemplate, KubernetesWorkload

    section = KubernetesConfig(
        workloads=(
            KubernetesWorkload(
                "Trainer",
                "example.com/v1",
                templates=(
                    KubernetesTemplate("template", each="spec.groups", count=("replicas=1",)),
                ),
                hours=("spec.deadlineSeconds",),
            ),
        )
    )
    r = route("kubernetes", max_hours=24.0, kubernetes=section)
    crd = {
        "apiVersion": "example.com/v1",
        "kind": "Trainer",
        "metadata": {"name": "t"},
        "spec": {
            "deadlineSeconds": 7200,
            "groups": [
                {"replicas": 3, "template": {"spec": {"containers": [container(**{GPU: 2})]}}}
            ],
        },
    }
    c = post(crd, r)
    assert (c.gpus, c.hours) == (6.0, 2.0)


def test_init_sidecar_and_overhead_as_the_scheduler_counts() -> None:
    spec = {
        "initContainers": [
            container("warm", **{GPU: 6}),  # runs alone: 6
            {**container("side", **{GPU: 1}), "restartPolicy": "Always"},
            container("late", **{GPU: 4}),  # runs beside the sidecar: 5
        ],
        "overhead": {GPU: 0},
    }
    assert post(pod(container(**{GPU: 2}), container("b", **{GPU: 1}), **spec)).gpus == 6.0
    spec["initContainers"][0] = container("warm", **{GPU: 1})
    # running phase: 2 + 1 + sidecar 1 = 4 > init phase max(1, 1 + 4 = 5)? no: 5 wins
    assert post(pod(container(**{GPU: 2}), container("b", **{GPU: 1}), **spec)).gpus == 5.0


def test_requests_and_limits_take_the_larger() -> None:
    c = {"name": "m", "resources": {"requests": {GPU: "4"}, "limits": {GPU: "2"}}}
    assert post(pod(c)).gpus == 4.0


def test_ephemeral_container_with_resources_is_refused() -> None:
    p = pod(container(), ephemeralContainers=[{"name": "dbg", "resources": {"limits": {GPU: 1}}}])
    e = refused(post, p)
    assert (
        e.detail == "spec.ephemeralContainers[0].resources: ephemeral containers get no resources"
    )


def _inventory(nodes: int = 4) -> Any:
    entry = InventoryEntry(
        name="k8s-h100",
        scheduler="kubernetes",
        nodes=nodes,
        node=InventoryNode(InventoryAccelerators("H100-SXM", 8)),
        node_selector={"pool": "h100"},
    )
    return build_inventory([entry], CATALOG)


def test_daemonset_counts_the_pool_nodes_or_is_refused() -> None:
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "d"},
        "spec": {
            "template": {
                "spec": {"nodeSelector": {"pool": "h100"}, "containers": [container(**{GPU: 8})]}
            }
        },
    }
    assert post(ds, inventory=_inventory(4)).gpus == 32.0
    assert refused(post, ds).reason == "unmeasurable-request"


def test_inventory_caps_a_pod_at_one_node_and_bounds_unbounded_groups() -> None:
    inv = _inventory(2)
    p = pod(container(**{GPU: 16}), nodeSelector={"pool": "h100"})
    c = post(p, inventory=inv)
    assert c.gpus == 8.0 and "gpus-per-node-from-inventory" in c.assumptions
    ray = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "r"},
        "spec": {
            "headGroupSpec": {"template": {"spec": {"containers": [container()]}}},
            "workerGroupSpecs": [
                {
                    "groupName": "g",
                    "template": {
                        "spec": {
                            "nodeSelector": {"pool": "h100"},
                            "containers": [container(**{GPU: 1})],
                        }
                    },
                }
            ],
        },
    }
    assert refused(post, ray).reason == "unmeasurable-request"
    assert post(ray, inventory=inv).gpus == 16.0


def test_body_kind_must_agree_with_the_url() -> None:
    e = refused(post, deployment(1, 1), path="/api/v1/namespaces/team-a/configmaps")
    assert e.reason == "bad-body"


def test_route_default() -> None:
    assert R.max_hours == 24.0


def test_ray_autoscaler_counts_max_replicas_or_is_unbounded() -> None:
    def cluster(autoscale: bool | None, **group: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "headGroupSpec": {"template": {"spec": {"containers": [container()]}}},
            "workerGroupSpecs": [
                {
                    "groupName": "g",
                    **group,
                    "template": {"spec": {"containers": [container(**{GPU: 1})]}},
                }
            ],
        }
        if autoscale is not None:
            spec["enableInTreeAutoscaling"] = autoscale
        return {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": "r"},
            "spec": spec,
        }

    assert post(cluster(None, replicas=2)).gpus == 2.0
    assert post(cluster(False, replicas=2, maxReplicas=5)).gpus == 5.0
    assert post(cluster(True, replicas=2, maxReplicas=5, numOfHosts=2)).gpus == 10.0
    e = refused(post, cluster(True, replicas=2))
    assert (
        e.detail
        == "spec.workerGroupSpecs[0].template.spec: replica count unbounded (no maximum and no inventory pool)"
    )


def test_pool_model_counts_when_the_pod_names_none() -> None:
    c = post(pod(container(**{GPU: 2}), nodeSelector={"pool": "h100"}), inventory=_inventory())
    assert (c.gpus, c.gpu_model) == (2.0, "H100-SXM")
    assert "model-from-inventory" in c.assumptions
    # a pod that selects no declared pool on a route without one: the route's default, no cap
    c = post(pod(container(**{GPU: 16})), inventory=_inventory())
    assert (c.gpus, c.gpu_model) == (
        16.0,
        "H100-SXM",
    ) and "model-from-inventory" not in c.assumptions


def test_volcano_job_and_refused_kinds() -> None:
    vj = {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "metadata": {"name": "v"},
          "spec": {"tasks": [{"name": "w", "replicas": 3, "template": {"spec": {"containers": [container(**{GPU: 4})]}}},
                             {"name": "ps", "template": {"spec": {"containers": [container(**{GPU: 1})]}}}]}}  # fmt: skip
    assert post(vj).gpus == 13.0
    tj = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "t"},
          "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": {"numNodes": 2}}}  # fmt: skip
    assert refused(post, tj).reason == "unmeasurable-request"
