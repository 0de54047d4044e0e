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

from .support import review, review_of, running_webhook, stand_in_api

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
CLAIM_KINDS = ("ResourceClaim", "ResourceClaimTemplate")


def names_claims(doc: dict[str, Any]) -> bool:
    return "resourceClaimName" in str(doc) or "resourceClaimTemplateName" in str(doc)


@pytest.mark.parametrize(("name", "docs", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_real_manifests_through_the_webhook(
    tmp_path: Path, name: str, docs: list[dict[str, Any]], expected: list[float]
) -> None:
    """The same objects and the same numbers as through the proxy. The webhook reads the DRA
    claims a pod names from the API server as its own service account (``admission.api_server``):
    the stand-in API server holds the file's claim templates in the tenants' namespaces, so those
    pods are measured exactly too. The D:5-parented tenant is refused whatever asks for any
    accelerator, measured the same."""
    claims = [(ns, d) for d in docs if d["kind"] in CLAIM_KINDS for ns in ("lab", "team-a")]
    async with stand_in_api(tmp_path, claims) as (_api, reads):
        async with running_webhook(tmp_path, **reads) as hook:
            for doc, gpus in zip(docs, expected, strict=True):
                if doc["kind"] == "Namespace":
                    answer = await hook.answer(
                        review(doc, group="", version="v1", resource="namespaces", namespace="")
                    )
                    assert answer["allowed"] is False  # no tenant for a cluster-wide write
                    continue
                answer = await hook.answer(review_of(doc, namespace="lab"))
                assert answer["allowed"] is True, answer
                assert hook.gpus(answer) == gpus
                acme = await hook.answer(review_of(doc, namespace="team-a"))
                assert acme["allowed"] is (gpus == 0), acme
                if gpus:
                    assert acme["status"]["reason"] == "d5-headquarters"
                    assert hook.gpus(acme) == gpus


DRA_CASES = [(n, d) for n, docs, _ in CASES for d in docs if names_claims(d)]


@pytest.mark.parametrize(("name", "doc"), DRA_CASES, ids=[c[0] for c in DRA_CASES])
async def test_dra_manifests_without_an_api_server_are_refused(
    tmp_path: Path, name: str, doc: dict[str, Any]
) -> None:
    """Without ``admission.api_server`` the webhook cannot read a pod's claims: nothing bounds
    them, so the pod is refused for every tenant."""
    async with running_webhook(tmp_path) as hook:
        answer = await hook.answer(review_of(doc, namespace="lab"))
        assert answer["allowed"] is False
        assert answer["status"]["reason"] == "unmeasurable-request"
        assert ".resourceClaims[0].resourceClaim" in answer["status"]["message"]
        assert ": cannot resolve ResourceClaim" in answer["status"]["message"]


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


def serve(replicas: int, gpus: int) -> dict[str, Any]:
    """A Deployment of ``replicas`` pods of ``gpus`` GPUs each."""
    limits = {GPU: gpus} if gpus else {}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "selector": {},
                     "template": {"spec": {"containers": [container(**limits)]}}}}  # fmt: skip


# What the API server holds in both tenants' namespaces, read by the webhook as its service
# account: the claim template the DRA pod names, the Deployment the Scale scales (2 GPUs a pod).
STORED = (claim_template(), serve(1, 2))


def smuggled() -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [container(), {**container("x", **{GPU: 8}), "$patch": "delete"}]},
    }
    return pod  # fmt: skip


def accel_job(resource: str, count: int) -> dict[str, Any]:
    return {**job(0), "spec": {"template": {"spec": {"containers": [container(**{resource: count})]}}}}  # fmt: skip


def connect(resource: str, name: str, options: str) -> Any:
    """A CONNECT review as the API server sends it for ``pods/proxy`` and ``services/proxy``
    (every request through its proxy, whatever the HTTP method, is a CONNECT to admission): the
    object is the connect options, the path behind the proxy; the method and body are not in
    it. The webhook cannot tell a read from a job submitted to the service, so it refuses every
    one, as the proxy refuses writes through ``proxy``."""
    obj = {"apiVersion": "v1", "kind": options, "path": "api/jobs/"}
    return lambda ns: review(obj, operation="CONNECT", group="", version="v1", resource=resource,
                             name=name, namespace=ns, sub_resource="proxy")  # fmt: skip


# (name, review in a namespace, GPUs measured; None: refused as unmeasurable for every tenant,
# for the reason in UNMEASURABLE)
CLASSES: list[tuple[str, Any, float | None]] = [
    ("dra-claim-template", lambda ns: review_of(claim_template(), namespace=ns), 8.0),
    ("dra-pod-claims", lambda ns: review_of(dra_pod(), namespace=ns), 8.0),
    ("gaudi", lambda ns: review_of(accel_job("habana.ai/gaudi", 8), namespace=ns), 8.0),
    ("neuron", lambda ns: review_of(accel_job("aws.amazon.com/neuron", 16), namespace=ns), 16.0),
    ("tpu", lambda ns: review_of(accel_job("google.com/tpu", 4), namespace=ns), 4.0),
    ("intel", lambda ns: review_of(accel_job("gpu.intel.com/i915", 1), namespace=ns), 1.0),
    ("patch-directive", lambda ns: review_of(smuggled(), namespace=ns), None),
    ("kueue-label", lambda ns: review_of(job(8, 1, **{"kueue.x-k8s.io/max-exec-time-seconds": "1"}), namespace=ns), 8.0),
    ("pods-proxy", connect("pods", "ray-head", "PodProxyOptions"), None),
    ("services-proxy", connect("services", "ray-head:8265", "ServiceProxyOptions"), None),
    # 4 replicas of the stored template's 2 GPUs: 8, not 4 x an assumed 8
    ("scale", lambda ns: review({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "d"},
                                 "spec": {"replicas": 4}}, operation="UPDATE", group="apps", version="v1",
                                resource="deployments", name="d", namespace=ns, sub_resource="scale"), 8.0),
    ("jobset", lambda ns: review_of({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "js"},
                                     "spec": {"replicatedJobs": [{"name": "w", "replicas": 2, "template": {"spec": {
                                         "parallelism": 2, "template": {"spec": {"containers": [container(**{GPU: 8})]}}}}}]}},
                                    namespace=ns), 32.0),
    ("pytorchjob", lambda ns: review_of({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "p"},
                                         "spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": 2, "template": {
                                             "spec": {"containers": [container(**{GPU: 8})]}}}}}}, namespace=ns), 16.0),
    # the object as stored after a patch that gave the template GPUs: every replica counts
    ("deployment-update", lambda ns: review(serve(4, 2), operation="UPDATE", group="apps", version="v1",
                                            resource="deployments", name="d", namespace=ns, old=serve(4, 0)), 8.0),
]  # fmt: skip


UNMEASURABLE = {
    "patch-directive": "spec.containers[1].$patch: patch directive",
    "pods-proxy": "pods/proxy: writes through the API server's proxy",
    "services-proxy": "services/proxy: writes through the API server's proxy",
}


@pytest.mark.parametrize(("name", "make", "gpus"), CLASSES, ids=[c[0] for c in CLASSES])
async def test_no_class_admits_a_d5_parented_tenant(
    tmp_path: Path, name: str, make: Any, gpus: float | None
) -> None:
    """Each class of write as the API server sends it, with ``admission.api_server`` set (the
    stand-in API server holds ``STORED``): the D:5-parented tenant (namespace ``team-a``) is
    refused and the decision measured exactly what the US lab (namespace ``lab``) is allowed."""
    stored = [(ns, obj) for obj in STORED for ns in ("lab", "team-a")]
    async with stand_in_api(tmp_path, stored) as (_api, reads):
        async with running_webhook(tmp_path, **reads) as hook:
            acme = await hook.answer(make("team-a"))
            lab = await hook.answer(make("lab"))
            assert acme["allowed"] is False, acme
            if gpus is None:
                for answer in (acme, lab):
                    assert answer["allowed"] is False, answer
                    assert answer["status"]["reason"] == "unmeasurable-request", answer
                    assert answer["status"]["message"].startswith(
                        f"unmeasurable-request: {UNMEASURABLE[name]}"
                    )
                    assert hook.gpus(answer) is None
                return
            assert (acme["status"]["code"], acme["status"]["reason"]) == (451, "d5-headquarters")
            assert hook.gpus(acme) == gpus
            assert lab["allowed"] is True, lab
            assert hook.gpus(lab) == gpus


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
    stored = [(ns, claim_template()) for ns in ("lab", "team-a")]
    async with stand_in_api(tmp_path, stored) as (api, reads):
        async with running_webhook(tmp_path, **reads) as hook:
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
