"""What the webhook charges: dry runs nothing, an UPDATE its increase, a Scale what it adds.

The tenant ``fjord-research`` (namespace ``fjord``) is a Norwegian company: allowed within the US
pack's ``foreign-monthly`` TPP-hours budget, kept per ultimate parent (``fjord-group``). Objects
carry what the API server adds to what it sends (uid, resourceVersion, generation, status).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import aiohttp

from tests.adapters.kubernetes.stack import ApiServer

from .support import TENANTS, Webhook, review, review_of, running_webhook, stand_in_api

GPU = "nvidia.com/gpu"
H100_TPP = 15832  # the catalog's H100-SXM
TENANTS_FJORD = {
    "users": TENANTS["users"],
    "namespaces": {**TENANTS["namespaces"], "fjord": "fjord-research"},
}
DAY = 8 * 24 * H100_TPP  # one pod of 8 H100s for the webhook's max_hours (24)


def deployment(replicas: int, gpus: int = 8, ns: str = "fjord") -> dict[str, Any]:
    labels = {"app": "serve"}
    container = {"name": "main", "image": "vllm:1",
                 "resources": {"limits": {"cpu": "4", GPU: str(gpus)}}}  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "serve", "namespace": ns, "uid": "7e0c9a55-4c2f-4a07-9f0e-2d1c3b4a5f60",
                     "resourceVersion": "4711", "generation": 3,
                     "creationTimestamp": "2026-12-01T10:00:00Z"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "strategy": {"type": "RollingUpdate"},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [container], "restartPolicy": "Always"}}},
        "status": {"replicas": replicas, "readyReplicas": replicas},
    }  # fmt: skip


def update(new: dict[str, Any], old: dict[str, Any], **kw: Any) -> dict[str, Any]:
    ns = new["metadata"]["namespace"]
    return review(new, operation="UPDATE", group="apps", version="v1", resource="deployments",
                  name="serve", namespace=ns, old=old, **kw)  # fmt: skip


def scale(replicas: int, ns: str = "fjord", version: str = "1") -> dict[str, Any]:
    """A Scale as the API server builds it from the Deployment (``autoscaling/v1``): its
    ``resourceVersion`` is the Deployment's (the stand-in API server stores a new one at 1)."""
    return {"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "serve", "namespace": ns,
                         "uid": "7e0c9a55-4c2f-4a07-9f0e-2d1c3b4a5f60", "resourceVersion": version,
                         "creationTimestamp": "2026-12-01T10:00:00Z"},
            "spec": {"replicas": replicas},
            "status": {"replicas": 1, "selector": "app=serve"}}  # fmt: skip


def scale_review(
    new: int, old: int, ns: str = "fjord", version: str = "1", **kw: Any
) -> dict[str, Any]:
    """A Scale review as the API server sends it: the new and old Scale both carry the
    ``resourceVersion`` of the workload it is changing."""
    return review(scale(new, ns, version), operation="UPDATE", group="apps", version="v1",
                  resource="deployments", name="serve", namespace=ns,
                  old=scale(old, ns, version), sub_resource="scale", **kw)  # fmt: skip


async def store_replicas(api: ApiServer, ns: str, replicas: int) -> str:
    """Scale the stand-in's Deployment as the API server stores an admitted Scale; its new
    ``resourceVersion``."""
    path = f"http://127.0.0.1:{api.port}/apis/apps/v1/namespaces/{ns}/deployments/serve/scale"
    body = {"spec": {"replicas": replicas}}
    headers = {"Content-Type": "application/merge-patch+json"}
    async with aiohttp.ClientSession() as s, s.patch(path, json=body, headers=headers) as r:
        assert r.status == 200
        return str((await r.json())["metadata"]["resourceVersion"])


async def used(hook: Webhook) -> float:
    state = await hook.runtime.snapshot.quota_stage.describe("ultimate_parent", "fjord-group")
    (row,) = [q for q in state["quotas"] if q["name"] == "foreign-monthly"]
    return float(row["used"])


async def test_dry_run_is_decided_as_the_real_write_and_charged_nothing(tmp_path: Path) -> None:
    async with running_webhook(tmp_path, tenants=TENANTS_FJORD) as hook:
        dry = await hook.answer(review_of(deployment(1), namespace="fjord", dry_run=True))
        assert dry["allowed"] is True and dry["auditAnnotations"]["dry-run"] == "true"
        assert await used(hook) == 0
        rec = hook.record(dry)
        assert rec["http"]["path"] == "/apis/apps/v1/namespaces/fjord/deployments?dryRun=All"
        assert rec["quota"]["name"] == "foreign-monthly" and rec["quota"]["consumed"] == 0
        real = await hook.answer(review_of(deployment(1), namespace="fjord"))
        assert real["allowed"] is True and await used(hook) == DAY
        # 70 pods of 8 H100s for a day exceed the 2e8 TPP-hours: refused, dry or not
        for dry_run in (True, False):
            big = await hook.answer(review_of(deployment(70), namespace="fjord", dry_run=dry_run))
            assert big["allowed"] is False, big
            assert (big["status"]["code"], big["status"]["reason"]) == (429, "quota-exhausted")
            assert hook.record(big)["decision"]["reasons"][-1] == "quota-exhausted"
        assert await used(hook) == DAY
        # the policy's refusal of a D:5-parented tenant stays one in a dry run
        d5 = await hook.answer(review_of(deployment(1, ns="team-a"), namespace="team-a",
                                         dry_run=True))  # fmt: skip
        assert d5["allowed"] is False and d5["status"]["reason"] == "d5-headquarters"


async def test_update_draws_only_its_increase(tmp_path: Path) -> None:
    async with running_webhook(tmp_path, tenants=TENANTS_FJORD) as hook:
        one, two = deployment(1), deployment(2)
        assert (await hook.answer(review_of(one, namespace="fjord")))["allowed"] is True
        assert await used(hook) == DAY
        # an edit that changes no pod count (a label, an image) draws nothing
        relabelled = copy.deepcopy(one)
        relabelled["metadata"]["labels"] = {"team": "inference"}
        same = await hook.answer(update(relabelled, one))
        assert same["allowed"] is True and same["auditAnnotations"]["gpus"] == "8"
        assert await used(hook) == DAY and hook.record(same)["quota"]["consumed"] == 0
        grown = await hook.answer(update(two, one))
        assert grown["allowed"] is True and grown["auditAnnotations"]["gpus"] == "16"
        assert await used(hook) == 2 * DAY
        shrunk = await hook.answer(update(one, two))
        assert shrunk["allowed"] is True and await used(hook) == 2 * DAY
        # an old object the gate cannot bound credits nothing: the new one is charged whole
        unknown = copy.deepcopy(one)
        unknown["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = {
            "example.com/h100": "8"
        }
        whole = await hook.answer(update(two, unknown))
        assert whole["allowed"] is True and await used(hook) == 4 * DAY
        # a dry-run update draws nothing either
        three = deployment(3)
        assert (await hook.answer(update(three, two, dry_run=True)))["allowed"] is True
        assert await used(hook) == 4 * DAY


async def test_update_is_decided_on_the_whole_new_object(tmp_path: Path) -> None:
    """An edit that adds nothing is still refused to a D:5-parented tenant: the policy sees the
    object, not the increase."""
    async with running_webhook(tmp_path, tenants=TENANTS_FJORD) as hook:
        old = deployment(1, ns="team-a")
        new = copy.deepcopy(old)
        new["metadata"]["labels"] = {"team": "x"}
        answer = await hook.answer(update(new, old))
        assert answer["allowed"] is False and answer["status"]["reason"] == "d5-headquarters"
        assert answer["auditAnnotations"]["gpus"] == "8"


async def test_scale_is_measured_on_the_workload_read_from_the_api_server(tmp_path: Path) -> None:
    stored = [(ns, deployment(1, ns=ns)) for ns in ("fjord", "team-a")]
    async with stand_in_api(tmp_path, stored) as (api, reads):
        async with running_webhook(tmp_path, tenants=TENANTS_FJORD, **reads) as hook:
            up = await hook.answer(scale_review(4, 1))
            assert up["allowed"] is True and up["auditAnnotations"]["gpus"] == "32"
            assert await used(hook) == 3 * DAY  # from 1 to 4 pods: three more
            version = await store_replicas(api, "fjord", 4)  # the API server stored it
            down = await hook.answer(scale_review(2, 4, version=version))
            assert down["allowed"] is True and down["auditAnnotations"]["gpus"] == "16"
            assert await used(hook) == 3 * DAY
            no = await hook.answer(scale_review(4, 1, ns="team-a"))
            assert no["allowed"] is False and no["status"]["reason"] == "d5-headquarters"
            # a workload the webhook cannot find is refused, not measured as zero pods
            lost = await hook.answer(scale_review(4, 1, ns="lab"))
            assert lost["allowed"] is False, lost
            assert lost["status"]["reason"] == "unmeasurable-request"
            assert "not found" in lost["status"]["message"]
        gets = [e for e in api.seen() if e["method"] == "GET"]
        assert all(e["bearer"] for e in gets)
        # one read of the workload per review: the new and the old state are measured on it
        assert [e["path"] for e in gets] == [
            f"/apis/apps/v1/namespaces/{ns}/deployments/serve"
            for ns in ("fjord", "fjord", "team-a", "lab")
        ]


async def test_scale_of_a_workload_that_changed_meanwhile_is_refused(tmp_path: Path) -> None:
    """The workload read at another ``resourceVersion`` than the Scale's: the API server's write
    fails its own version check, so the review is refused (409, charged nothing) rather than
    charged once now and again when the write is retried."""
    async with stand_in_api(tmp_path, [("fjord", deployment(1))]) as (api, reads):
        async with running_webhook(tmp_path, tenants=TENANTS_FJORD, **reads) as hook:
            fresh = await store_replicas(api, "fjord", 2)  # written since the API server read "1"
            stale = await hook.answer(scale_review(4, 1))
            assert stale["allowed"] is False, stale
            assert (stale["status"]["code"], stale["status"]["reason"]) == (409, "workload-changed")
            assert "resourceVersion 2, the Scale at 1" in stale["status"]["message"]
            assert await used(hook) == 0
            # the retry, on the workload as it now is: two more pods
            retried = await hook.answer(scale_review(4, 2, version=fresh))
            assert retried["allowed"] is True and await used(hook) == 2 * DAY
        assert sum(1 for e in api.seen() if e["method"] == "GET") == 2


async def test_scale_without_an_api_server_is_refused_with_its_reason(tmp_path: Path) -> None:
    async with running_webhook(tmp_path, tenants=TENANTS_FJORD) as hook:
        answer = await hook.answer(scale_review(4, 1))
        assert answer["allowed"] is False
        assert answer["status"]["reason"] == "unmeasurable-request"
        assert "admission.api_server" in answer["status"]["message"]
        assert await used(hook) == 0


async def test_an_unrecorded_review_admits_nothing_and_keeps_no_charge(tmp_path: Path) -> None:
    async with running_webhook(tmp_path, tenants=TENANTS_FJORD) as hook:
        await hook.runtime.audit.close()  # every append now fails: audit-unavailable
        answer = await hook.answer(review_of(deployment(1), namespace="fjord"))
        assert answer["allowed"] is False
        assert (answer["status"]["code"], answer["status"]["reason"]) == (503, "audit-unavailable")
        assert answer["auditAnnotations"]["action"] == "allow"  # the decision, as decided
        assert await used(hook) == 0  # reserved by the decision, given back
