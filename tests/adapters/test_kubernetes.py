"""Kubernetes adapter: Job create/replace/patch/scale, JSON and YAML, with expected GPU-hours."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gatekeeper.errors import BadRequest

from .helpers import CATALOG, check, route, run

R = route("kubernetes", gpu_model=None, max_hours=24.0)
JOBS = "/apis/batch/v1/namespaces/team-a/jobs"
JOB = JOBS + "/train"
JSON = {"Content-Type": "application/json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
SMP = {"Content-Type": "application/strategic-merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}
YAML = {"Content-Type": "application/yaml"}


def container(name: str = "main", **limits: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "nvcr.io/nvidia/pytorch:24.05-py3",
        "command": ["torchrun", "train.py"],
        "resources": {"limits": {"cpu": "16", "memory": "64Gi", **limits}},
    }


def job_body(
    containers: list[dict[str, Any]],
    *,
    parallelism: int | None = None,
    completions: int | None = None,
    deadline: int | None = None,
    labels: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
    affinity: dict[str, Any] | None = None,
    init: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": containers}
    if node_selector:
        pod["nodeSelector"] = node_selector
    if affinity:
        pod["affinity"] = affinity
    if init:
        pod["initContainers"] = init
    spec: dict[str, Any] = {"backoffLimit": 0, "template": {"spec": pod}}
    if parallelism is not None:
        spec["parallelism"] = parallelism
    if completions is not None:
        spec["completions"] = completions
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train", "namespace": "team-a", "labels": labels or {}},
        "spec": spec,
    }


H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
GPU = "nvidia.com/gpu"


def affinity(*terms: list[str], op: str = "In") -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "nvidia.com/gpu.product", "operator": op, "values": vals}
                        ]
                    }
                    for vals in terms
                ]
            }
        }
    }


# (id, method, path, headers, body, gpus, hours, model)
CASES: list[tuple[str, str, str, dict[str, str], Any, float, float, str | None]] = [
    # DOMAIN §5: limits x parallelism, deadline, model from nodeSelector product label.
    (
        "domain-job-h100",
        "POST",
        JOBS,
        JSON,
        job_body([container(**{GPU: 8})], parallelism=4, deadline=43200, node_selector=H100),
        32,
        12,
        "H100-SXM",
    ),
    (
        "default-parallelism-1",
        "POST",
        JOBS,
        JSON,
        job_body([container(**{GPU: "8"})], deadline=3600, node_selector=H100),
        8,
        1,
        "H100-SXM",
    ),
    (
        "no-deadline-max-hours",
        "POST",
        JOBS,
        JSON,
        job_body([container(**{GPU: 2})], node_selector=H100),
        2,
        24,
        "H100-SXM",
    ),
    (
        "kueue-label-hours",
        "POST",
        JOBS,
        JSON,
        job_body(
            [container(**{GPU: 1})],
            labels={"kueue.x-k8s.io/max-exec-time-seconds": "7200"},
            node_selector=H100,
        ),
        1,
        2,
        "H100-SXM",
    ),
    (
        "deadline-and-kueue-min",
        "POST",
        JOBS,
        JSON,
        job_body(
            [container(**{GPU: 1})],
            deadline=3600,
            labels={"kueue.x-k8s.io/max-exec-time-seconds": "7200"},
            node_selector=H100,
        ),
        1,
        1,
        "H100-SXM",
    ),
    (
        "completions-cap-parallelism",
        "POST",
        JOBS,
        JSON,
        job_body(
            [container(**{GPU: 4})], parallelism=8, completions=2, deadline=3600, node_selector=H100
        ),
        8,
        1,
        "H100-SXM",
    ),
    (
        "two-containers-summed",
        "POST",
        JOBS,
        JSON,
        job_body(
            [container("a", **{GPU: 4}), container("b", **{GPU: 2})],
            deadline=3600,
            node_selector=H100,
        ),
        6,
        1,
        "H100-SXM",
    ),
    (
        "init-container-peak",
        "POST",
        JOBS,
        JSON,
        job_body(
            [container(**{GPU: 2})],
            init=[container("warm", **{GPU: 8})],
            deadline=3600,
            node_selector=H100,
        ),
        8,
        1,
        "H100-SXM",
    ),
    (
        "sidecar-added",
        "POST",
        JOBS,
        JSON,
        job_body(
            [container(**{GPU: 2})],
            init=[{**container("side", **{GPU: 1}), "restartPolicy": "Always"}],
            deadline=3600,
            node_selector=H100,
        ),
        3,
        1,
        "H100-SXM",
    ),
    (
        "amd-gpu",
        "POST",
        JOBS,
        JSON,
        job_body(
            [container(**{"amd.com/gpu": 8})],
            deadline=3600,
            node_selector={"amd.com/gpu.product-name": "AMD-Instinct-MI300X-OAM"},
        ),
        8,
        1,
        "MI300X",
    ),
    (
        "mig-slices",
        "POST",
        JOBS,
        JSON,
        job_body([container(**{"nvidia.com/mig-1g.10gb": 7})], deadline=3600, node_selector=H100),
        1,
        1,
        "H100-SXM",
    ),
    (
        "gke-label",
        "POST",
        JOBS,
        JSON,
        job_body(
            [container(**{GPU: 8})],
            deadline=3600,
            node_selector={"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"},
        ),
        8,
        1,
        "A100",
    ),
    (
        "affinity-most-capable",
        "POST",
        JOBS,
        JSON,
        job_body(
            [container(**{GPU: 1})],
            deadline=3600,
            affinity=affinity(["NVIDIA-A100-SXM4-80GB"], ["NVIDIA-B200"]),
        ),
        1,
        1,
        "B200",
    ),
    (
        "mig-product-suffix",
        "POST",
        JOBS,
        JSON,
        job_body(
            [container(**{GPU: 1})],
            deadline=3600,
            node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"},
        ),
        1,
        1,
        "A100",
    ),
    (
        "h20-uncontrolled",
        "POST",
        JOBS,
        JSON,
        job_body(
            [container(**{GPU: 8})],
            deadline=3600,
            node_selector={"nvidia.com/gpu.product": "NVIDIA-H20"},
        ),
        8,
        1,
        "H20",
    ),
    ("no-gpus", "POST", JOBS, JSON, job_body([container()], deadline=3600), 0, 1, None),
    (
        "replace-put",
        "PUT",
        JOB,
        JSON,
        job_body([container(**{GPU: 8})], parallelism=2, deadline=7200, node_selector=H100),
        16,
        2,
        "H100-SXM",
    ),
    ("get-is-zero", "GET", JOB, {}, b"", 0, 0, None),
    ("delete-is-zero", "DELETE", JOB, {}, b"", 0, 0, None),
    # Patch rule: parallelism alone -> assumed 8 GPUs per pod of the route default model.
    ("merge-patch-parallelism", "PATCH", JOB, MERGE, {"spec": {"parallelism": 10}}, 80, 24, None),
    (
        "smp-parallelism-and-deadline",
        "PATCH",
        JOB,
        SMP,
        {"spec": {"parallelism": 2, "activeDeadlineSeconds": 3600}},
        16,
        1,
        None,
    ),
    (
        "patch-label-only-zero",
        "PATCH",
        JOB,
        MERGE,
        {"metadata": {"labels": {"team": "x"}}},
        0,
        0,
        None,
    ),
    ("patch-suspend-zero", "PATCH", JOB, MERGE, {"spec": {"suspend": False}}, 0, 0, None),
    (
        "json-patch-parallelism",
        "PATCH",
        JOB,
        JSONPATCH,
        [
            {"op": "replace", "path": "/spec/parallelism", "value": 3},
            {"op": "test", "path": "/a", "value": 1},
        ],
        24,
        24,
        None,
    ),
    (
        "json-patch-template-gpus",
        "PATCH",
        JOB,
        JSONPATCH,
        [
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu",
                "value": 4,
            },
            {"op": "add", "path": "/spec/parallelism", "value": 2},
        ],
        8,
        24,
        None,
    ),
    ("scale-subresource", "PATCH", JOB + "/scale", MERGE, {"spec": {"replicas": 5}}, 40, 24, None),
    (
        "scale-put",
        "PUT",
        JOB + "/scale",
        JSON,
        {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 1}},
        8,
        24,
        None,
    ),
    ("status-zero", "PUT", JOB + "/status", JSON, {"status": {"active": 1}}, 0, 0, None),
    (
        "cronjob-one-run",
        "POST",
        "/apis/batch/v1/namespaces/team-a/cronjobs",
        JSON,
        {
            "kind": "CronJob",
            "spec": {
                "schedule": "0 * * * *",
                "jobTemplate": job_body([container(**{GPU: 2})], deadline=1800, node_selector=H100),
            },
        },
        2,
        0.5,
        "H100-SXM",
    ),
    (
        "pod",
        "POST",
        "/api/v1/namespaces/team-a/pods",
        JSON,
        {
            "kind": "Pod",
            "spec": {
                "containers": [container(**{GPU: 1})],
                "nodeSelector": H100,
                "activeDeadlineSeconds": 600,
            },
        },
        1,
        600 / 3600,
        "H100-SXM",
    ),
    (
        "deployment-replicas",
        "POST",
        "/apis/apps/v1/namespaces/team-a/deployments",
        JSON,
        {
            "kind": "Deployment",
            "spec": {
                "replicas": 3,
                "template": {"spec": {"containers": [container(**{GPU: 2})], "nodeSelector": H100}},
            },
        },
        6,
        24,
        "H100-SXM",
    ),
    (
        "configmap-zero",
        "POST",
        "/api/v1/namespaces/team-a/configmaps",
        JSON,
        {"kind": "ConfigMap", "data": {"a": "b"}},
        0,
        0,
        None,
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "gpus", "hours", "model"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_kubernetes_table(
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    gpus: float,
    hours: float,
    model: str | None,
) -> None:
    c = run(R, body, method=method, path=path, headers=headers)
    if model is None and gpus:
        # Route has no default model: unknown -> highest TPP, flagged.
        assert c.tpp == CATALOG.highest.tpp and "unknown-gpu-model" in c.assumptions
        assert (c.gpus, c.hours, c.gpu_hours) == (gpus, hours, gpus * hours)
        assert c.tpp_hours == gpus * hours * CATALOG.highest.tpp
    else:
        check(c, gpus, hours, model)


def test_domain_example_exact_figures() -> None:
    c = run(R, CASES[0][4], path=JOBS, headers=JSON)
    assert (c.gpus, c.hours, c.gpu_hours, c.tpp_hours) == (32, 12, 384, 384 * 15_832)
    assert c.eccn == "3A090.a" and c.controlled and c.assumptions == ()


def test_patch_assumption_is_flagged_and_configurable() -> None:
    c = run(
        route("kubernetes", assume_gpus_per_pod=4.0),
        {"spec": {"parallelism": 10}},
        method="PATCH",
        path=JOB,
        headers=MERGE,
    )
    assert c.gpus == 40 and c.gpu_model == "H100-SXM" and "gpus-per-pod-assumed" in c.assumptions


YAML_JOB = b"""
apiVersion: batch/v1
kind: Job
metadata:
  name: train
  labels:
    kueue.x-k8s.io/max-exec-time-seconds: "3600"
spec:
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      nodeSelector:
        nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
      containers:
        - name: main
          image: busybox
          resources:
            limits:
              nvidia.com/gpu: 8
"""


def test_yaml_body() -> None:
    check(run(R, YAML_JOB, path=JOBS, headers=YAML), 16, 1, "H100-SXM")


def test_yaml_sniffed_without_content_type() -> None:
    check(run(R, YAML_JOB, path=JOBS), 16, 1, "H100-SXM")


def test_yaml_anchor_use_is_fine() -> None:
    body = b"""
kind: Job
spec:
  template:
    spec:
      nodeSelector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
      containers:
        - {name: a, resources: {limits: &lim {nvidia.com/gpu: 2}}}
        - {name: b, resources: {limits: *lim}}
"""
    check(run(R, body, path=JOBS, headers=YAML), 4, 24, "H100-SXM")


BILLION_LAUGHS = b"""
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_refused() -> None:
    with pytest.raises(BadRequest) as exc:
        run(R, BILLION_LAUGHS, path=JOBS, headers=YAML)
    assert exc.value.reason in ("yaml-too-many-aliases", "body-too-large")


def test_billion_laughs_few_aliases_refused_by_node_budget() -> None:
    # 6 levels x 10 aliases = 60 alias uses (under the alias limit) but 10^6 reachable nodes.
    lines = [b'l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 7):
        lines.append(b"l%d: &l%d [" % (i, i) + b",".join([b"*l%d" % (i - 1)] * 10) + b"]")
    with pytest.raises(BadRequest) as exc:
        run(R, b"\n".join(lines), path=JOBS, headers=YAML)
    assert exc.value.reason == "body-too-large"


BAD: list[tuple[str, str, str, dict[str, str], Any, str]] = [
    (
        "dup-key-json",
        "POST",
        JOBS,
        JSON,
        b'{"spec": {"parallelism": 1, "parallelism": 100}}',
        "duplicate-key",
    ),
    (
        "dup-key-yaml",
        "POST",
        JOBS,
        YAML,
        b"spec:\n  parallelism: 1\n  parallelism: 100\n",
        "duplicate-key",
    ),
    ("python-tag", "POST", JOBS, YAML, b"!!python/object/apply:os.system ['true']", "bad-yaml"),
    ("custom-tag", "POST", JOBS, YAML, b"spec: !Ref x", "bad-yaml"),
    ("multi-doc", "POST", JOBS, YAML, b"a: 1\n---\nb: 2\n", "bad-yaml"),
    ("list-body-post", "POST", JOBS, JSON, [1], "bad-body"),
    ("bad-quantity", "POST", JOBS, JSON, job_body([container(**{GPU: "eight"})]), "bad-value"),
    ("negative-quantity", "POST", JOBS, JSON, job_body([container(**{GPU: -1})]), "bad-value"),
    (
        "containers-not-list",
        "POST",
        JOBS,
        JSON,
        {"spec": {"template": {"spec": {"containers": "x"}}}},
        "bad-value",
    ),
    (
        "json-patch-copy",
        "PATCH",
        JOB,
        JSONPATCH,
        [{"op": "copy", "from": "/x", "path": "/spec/parallelism"}],
        "unmeasurable-patch",
    ),
    ("json-patch-bad-op", "PATCH", JOB, JSONPATCH, [{"op": 1}], "bad-patch"),
    (
        "unsupported-resource-with-gpus",
        "POST",
        "/apis/jobset.x-k8s.io/v1alpha2/namespaces/a/jobsets",
        JSON,
        {"spec": {"replicatedJobs": [{"template": {"resources": {"limits": {GPU: 8}}}}]}},
        "unsupported-kubernetes-resource",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "reason"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_kubernetes_bad(
    method: str, path: str, headers: dict[str, str], body: Any, reason: str
) -> None:
    with pytest.raises(BadRequest) as exc:
        run(R, body, method=method, path=path, headers=headers)
    assert exc.value.reason == reason


def test_unconstrained_affinity_term_uses_route_default() -> None:
    aff = affinity(["NVIDIA-H20"])
    aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ].append({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]})
    body = job_body([container(**{GPU: 1})], deadline=3600, affinity=copy.deepcopy(aff))
    check(run(route("kubernetes"), body, path=JOBS, headers=JSON), 1, 1, "H100-SXM")
