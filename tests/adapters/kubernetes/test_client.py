"""The official ``kubernetes`` Python client creates, patches and scales through a real gate in
front of a stand-in API server (``apiserver.py``).

The gate measures patches and ``/scale`` on the stored object, which it reads from the API server
with the client's own bearer token: a strategic-merge patch that gives a Deployment's pods GPUs
counts every replica, and a scale to 4 replicas counts what the template asks (not an assumed
eight GPUs per pod). The D:5-parented ``acme-sg`` gets neither; the US ``frontier-labs`` gets both.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest

from gatekeeper.demo import DemoKeys
from tests.e2e.gate import Gate
from tests.security.harness import US_IP

from .stack import NS, ApiServer, measured


def apps_api(gate: Gate, token: str) -> Any:
    conf = kubernetes.client.Configuration()
    conf.host = gate.url
    conf.api_key = {"authorization": token}
    conf.api_key_prefix = {"authorization": "Bearer"}
    api = kubernetes.client.ApiClient(conf)
    api.set_default_header("X-Forwarded-For", US_IP)
    return kubernetes.client.AppsV1Api(api)


def deployment(gpus: int, replicas: int = 1) -> Any:
    m = kubernetes.client
    limits = {"cpu": "2"} | ({"nvidia.com/gpu": str(gpus)} if gpus else {})
    return m.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=m.V1ObjectMeta(name="serve", namespace=NS),
        spec=m.V1DeploymentSpec(
            replicas=replicas,
            selector=m.V1LabelSelector(match_labels={"app": "serve"}),
            template=m.V1PodTemplateSpec(
                metadata=m.V1ObjectMeta(labels={"app": "serve"}),
                spec=m.V1PodSpec(containers=[m.V1Container(
                    name="main", image="vllm:1", resources=m.V1ResourceRequirements(limits=limits))]),
            ),
        ),
    )  # fmt: skip


GPU_PATCH = {"spec": {"template": {"spec": {"containers": [
    {"name": "main", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}}}  # fmt: skip


def test_create_patch_scale_for_a_us_lab(stack: tuple[Gate, DemoKeys, ApiServer]) -> None:
    gate, keys, api = stack
    apps = apps_api(gate, keys.token("frontier-labs"))
    created = apps.create_namespaced_deployment(NS, deployment(1))
    assert created.metadata.name == "serve"
    patched = apps.patch_namespaced_deployment("serve", NS, GPU_PATCH)
    assert patched.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"] == "2"
    scale = apps.patch_namespaced_deployment_scale("serve", NS, {"spec": {"replicas": 4}})
    assert scale.spec.replicas == 4
    body = kubernetes.client.V1Scale(metadata=kubernetes.client.V1ObjectMeta(name="serve"),
                                     spec=kubernetes.client.V1ScaleSpec(replicas=3))  # fmt: skip
    assert apps.replace_namespaced_deployment_scale("serve", NS, body).spec.replicas == 3
    path = f"/apis/apps/v1/namespaces/{NS}/deployments"
    assert measured(gate) == [
        ("POST", path, 1.0, "allow"),
        ("PATCH", f"{path}/serve", 2.0, "allow"),  # 1 replica x 2 GPUs: the stored object
        ("PATCH", f"{path}/serve/scale", 8.0, "allow"),  # 4 x 2, not 4 x an assumed 8
        ("PUT", f"{path}/serve/scale", 6.0, "allow"),
    ]
    # The gate read the stored object with the client's own token before each patch and scale.
    gets = [s for s in api.seen() if s["method"] == "GET"]
    assert [g["path"] for g in gets] == [f"{path}/serve"] * 3 and all(g["bearer"] for g in gets)


def test_d5_parented_tenant_cannot_patch_or_scale_gpus_in(
    stack: tuple[Gate, DemoKeys, ApiServer],
) -> None:
    gate, keys, _api = stack
    acme = apps_api(gate, keys.token("acme-sg"))
    with pytest.raises(kubernetes.client.ApiException) as e:
        acme.create_namespaced_deployment(NS, deployment(1))
    assert e.value.status == 451
    acme.create_namespaced_deployment(NS, deployment(0, replicas=4))  # no GPUs: allowed
    with pytest.raises(kubernetes.client.ApiException) as e:
        acme.patch_namespaced_deployment("serve", NS, GPU_PATCH)
    assert e.value.status == 451
    assert json.loads(e.value.body)["rule"] == "d5-headquarters"
    path = f"/apis/apps/v1/namespaces/{NS}/deployments"
    assert measured(gate)[-1] == ("PATCH", f"{path}/serve", 8.0, "require_license")
