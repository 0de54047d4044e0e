"""The admission webhook on a real TLS listener and a real runtime: the same decision as the proxy.

The tenants: namespace ``team-a`` is ``acme-sg`` (D:5-parented: its ultimate parent is
headquartered in China), namespace ``lab`` and the service account ``lab:trainer`` are
``frontier-labs`` (a US lab). No class of the issue may admit ``acme-sg``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.adapters.kubernetes.support import manifests

from .support import review, review_of, running_webhook

GPU = "nvidia.com/gpu"


def container(name: str = "main", **limits: Any) -> dict[str, Any]:
    return {"name": name, "image": "trainer:1", "resources": {"limits": {"cpu": "4", **limits}}}


def job(gpus: int, parallelism: int = 1, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train", "labels": labels},
        "spec": {"parallelism": parallelism, "template": {"spec": {
            "restartPolicy": "Never", "containers": [container(**{GPU: gpus})]}}},
    }  # fmt: skip


async def test_allowed_us_lab_and_refused_d5_parent(tmp_path: Path) -> None:
    async with running_webhook(tmp_path) as hook:
        ok = await hook.answer(review_of(job(8, 2), namespace="lab"))
        assert ok["allowed"] is True and "status" not in ok
        assert ok["auditAnnotations"]["gpus"] == "16"
        no = await hook.answer(review_of(job(8, 2)))
        assert no["allowed"] is False
        assert no["status"]["code"] == 451
        assert no["status"]["reason"] == "d5-headquarters"
        decision_id = no["auditAnnotations"]["decision-id"]
        assert decision_id in no["status"]["message"]
        records = [r for r in hook.records() if "decision" in r]
        by_id = {r["decision_id"]: r for r in records}
        assert by_id[decision_id]["decision"]["action"] == "require_license"
        assert by_id[decision_id]["principal"]["entity"] == "acme-sg"
        assert by_id[decision_id]["compute"]["gpus"] == 16.0


async def test_user_mapping_wins_over_namespace(tmp_path: Path) -> None:
    async with running_webhook(tmp_path) as hook:
        user = "system:serviceaccount:lab:trainer"
        ok = await hook.answer(review_of(job(1), namespace="team-a", username=user))
        assert ok["allowed"] is True
        unknown = await hook.answer(review_of(job(1), namespace="elsewhere"))
        assert unknown["allowed"] is False and unknown["status"]["code"] == 403


CASES = manifests()


@pytest.mark.parametrize(("name", "docs", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_real_manifests_through_the_webhook(
    tmp_path: Path, name: str, docs: list[dict[str, Any]], expected: list[float]
) -> None:
    """The same objects and the same numbers as through the proxy's adapter; a pod's DRA claim
    (which the webhook cannot read) is bounded by nothing here, so it is refused."""
    async with running_webhook(tmp_path) as hook:
        for doc, gpus in zip(docs, expected, strict=True):
            ns = "lab"
            if doc["kind"] == "Namespace":
                answer = await hook.answer(
                    review(doc, group="", version="v1", resource="namespaces", namespace="")
                )
                assert answer["allowed"] is False  # no tenant for a cluster-wide write by alice
                continue
            answer = await hook.answer(review_of(doc, namespace=ns))
            if doc.get("spec", {}).get("resourceClaims"):
                assert answer["allowed"] is False
                assert answer["status"]["reason"] == "unmeasurable-request"
                continue
            assert answer["allowed"] is True, answer
            if gpus:
                assert float(answer["auditAnnotations"]["gpus"]) == gpus
            acme = await hook.answer(review_of(doc, namespace="team-a"))
            assert acme["allowed"] is (gpus == 0), acme


async def test_dry_run_is_decided_and_audited_without_quota(tmp_path: Path) -> None:
    async with running_webhook(tmp_path) as hook:
        answer = await hook.answer(review_of(job(8), namespace="lab", dry_run=True))
        assert answer["allowed"] is True and answer["auditAnnotations"]["dry-run"] == "true"
        record = next(
            r
            for r in hook.records()
            if r.get("decision_id") == answer["auditAnnotations"]["decision-id"]
        )
        assert record["http"]["path"].endswith("?dryRun=All")
        assert "quota" not in record or record["quota"] is None


async def test_update_is_measured_on_the_new_object(tmp_path: Path) -> None:
    old = job(1)
    new = copy.deepcopy(old)
    new["spec"]["parallelism"] = 4
    async with running_webhook(tmp_path) as hook:
        body = review(new, operation="UPDATE", group="batch", version="v1", resource="jobs",
                      name="train", namespace="lab", old=old)  # fmt: skip
        answer = await hook.answer(body)
        assert answer["allowed"] is True and answer["auditAnnotations"]["gpus"] == "4"


# ----------------------------------------------------------------------------- the classes


def dra_pod() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [container()],
                     "resourceClaims": [{"name": "g", "resourceClaimTemplateName": "eight"}]}}  # fmt: skip


def claim_template() -> dict[str, Any]:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": "eight"},
            "spec": {"spec": {"devices": {"requests": [
                {"name": "g", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 8}}]}}}}  # fmt: skip


def smuggled() -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [container(), {**container("x", **{GPU: 8}), "$patch": "delete"}]},
    }
    return pod  # fmt: skip


CLASSES: list[tuple[str, Any]] = [
    ("dra-claim-template", lambda: review_of(claim_template())),
    ("dra-pod-claims", lambda: review_of(dra_pod())),
    ("gaudi", lambda: review_of({**job(0), "spec": {"template": {"spec": {"containers": [container(**{"habana.ai/gaudi": 8})]}}}})),
    ("neuron", lambda: review_of({**job(0), "spec": {"template": {"spec": {"containers": [container(**{"aws.amazon.com/neuron": 16})]}}}})),
    ("tpu", lambda: review_of({**job(0), "spec": {"template": {"spec": {"containers": [container(**{"google.com/tpu": 4})]}}}})),
    ("intel", lambda: review_of({**job(0), "spec": {"template": {"spec": {"containers": [container(**{"gpu.intel.com/i915": 1})]}}}})),
    ("patch-directive", lambda: review_of(smuggled())),
    ("kueue-label", lambda: review_of(job(8, 1, **{"kueue.x-k8s.io/max-exec-time-seconds": "1"}))),
    ("scale", lambda: review({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "d"},
                              "spec": {"replicas": 4}}, operation="UPDATE", group="apps", version="v1",
                             resource="deployments", name="d", sub_resource="scale")),
    ("jobset", lambda: review_of({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "js"},
                                  "spec": {"replicatedJobs": [{"name": "w", "replicas": 2, "template": {"spec": {
                                      "parallelism": 2, "template": {"spec": {"containers": [container(**{GPU: 8})]}}}}}]}})),
    ("pytorchjob", lambda: review_of({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "p"},
                                      "spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": 2, "template": {
                                          "spec": {"containers": [container(**{GPU: 8})]}}}}}})),
    ("deployment-update", lambda: review(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
         "spec": {"replicas": 4, "selector": {}, "template": {"spec": {"containers": [container(**{GPU: 2})]}}}},
        operation="UPDATE", group="apps", version="v1", resource="deployments", name="d",
        old={"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
             "spec": {"replicas": 4, "selector": {}, "template": {"spec": {"containers": [container()]}}}})),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make"), CLASSES, ids=[c[0] for c in CLASSES])
async def test_no_class_admits_a_d5_parented_tenant(tmp_path: Path, name: str, make: Any) -> None:
    async with running_webhook(tmp_path) as hook:
        answer = await hook.answer(make())
        assert answer["allowed"] is False, answer
        assert answer["status"]["reason"] in ("d5-headquarters", "unmeasurable-request"), answer


async def test_metrics_as_for_the_proxy(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    def count(action: str) -> float:
        labels = {"route": "admission", "action": action, "enforced": "true"}
        return REGISTRY.get_sample_value("gatekeeper_requests_total", labels) or 0.0

    def denials() -> float:
        labels = {"route": "admission", "reason": "d5-headquarters"}
        return REGISTRY.get_sample_value("gatekeeper_denials_total", labels) or 0.0

    before = (count("allow"), count("require_license"), denials())
    async with running_webhook(tmp_path) as hook:
        await hook.answer(review_of(job(1), namespace="lab"))
        await hook.answer(review_of(job(1), namespace="team-a"))
    assert (count("allow"), count("require_license"), denials()) == (
        before[0] + 1,
        before[1] + 1,
        before[2] + 1,
    )


async def test_pod_claims_read_as_the_webhooks_service_account(tmp_path: Path) -> None:
    """With admission.api_server the webhook reads the claim templates a pod names (with its own
    token) and measures the pod exactly; the D:5-parented tenant is then refused by policy."""
    import aiohttp as client

    from tests.adapters.kubernetes.stack import ApiServer

    api = ApiServer(tmp_path)
    token = tmp_path / "token"
    token.write_text("service-account-token\n")
    try:
        async with client.ClientSession() as s:
            for ns in ("lab", "team-a"):
                url = f"http://127.0.0.1:{api.port}/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates"
                async with s.post(url, json=claim_template()) as r:
                    assert r.status == 201
        async with running_webhook(
            tmp_path, api_server=f"http://127.0.0.1:{api.port}", token_file=str(token)
        ) as hook:
            ok = await hook.answer(review_of(dra_pod(), namespace="lab"))
            assert ok["allowed"] is True and ok["auditAnnotations"]["gpus"] == "8"
            no = await hook.answer(review_of(dra_pod(), namespace="team-a"))
            assert no["allowed"] is False and no["status"]["reason"] == "d5-headquarters"
        gets = [e for e in api.seen() if e["method"] == "GET"]
        assert gets and all(e["bearer"] for e in gets)
        assert {e["path"] for e in gets} == {
            f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates/eight"
            for ns in ("lab", "team-a")
        }
    finally:
        api.stop()
