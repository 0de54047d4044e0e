"""What the webhook charges: a dry run nothing, and an unrecorded review nothing.

The tenant ``fjord-research`` (namespace ``fjord``) is a Norwegian company: allowed within the US
pack's ``foreign-monthly`` TPP-hours budget, kept per ultimate parent (``fjord-group``). Objects
carry what the API server adds to what it sends (uid, resourceVersion, generation, status).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .support import TENANTS, Webhook, review_of, running_webhook

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


async def used(hook: Webhook) -> float:
    state = await hook.runtime.snapshot.quota_stage.describe("ultimate_parent", "fjord-group")
    (row,) = [q for q in state["quotas"] if q["name"] == "foreign-monthly"]
    return float(row["used"])


def record(hook: Webhook, answer: dict[str, Any]) -> dict[str, Any]:
    wanted = answer["auditAnnotations"]["decision-id"]
    return next(r for r in hook.records() if r.get("decision_id") == wanted)


async def test_dry_run_is_decided_as_the_real_write_and_charged_nothing(tmp_path: Path) -> None:
    async with running_webhook(tmp_path, tenants=TENANTS_FJORD) as hook:
        dry = await hook.answer(review_of(deployment(1), namespace="fjord", dry_run=True))
        assert dry["allowed"] is True and dry["auditAnnotations"]["dry-run"] == "true"
        assert await used(hook) == 0
        rec = record(hook, dry)
        assert rec["http"]["path"] == "/apis/apps/v1/namespaces/fjord/deployments?dryRun=All"
        assert rec["quota"]["name"] == "foreign-monthly" and rec["quota"]["consumed"] == 0
        real = await hook.answer(review_of(deployment(1), namespace="fjord"))
        assert real["allowed"] is True and await used(hook) == DAY
        # 70 pods of 8 H100s for a day exceed the 2e8 TPP-hours: refused, dry or not
        for dry_run in (True, False):
            big = await hook.answer(review_of(deployment(70), namespace="fjord", dry_run=dry_run))
            assert big["allowed"] is False, big
            assert (big["status"]["code"], big["status"]["reason"]) == (429, "quota-exhausted")
            assert record(hook, big)["decision"]["reasons"][-1] == "quota-exhausted"
        assert await used(hook) == DAY
        # the policy's refusal of a D:5-parented tenant stays one in a dry run
        d5 = await hook.answer(review_of(deployment(1, ns="team-a"), namespace="team-a",
                                         dry_run=True))  # fmt: skip
        assert d5["allowed"] is False and d5["status"]["reason"] == "d5-headquarters"


async def test_an_unrecorded_review_admits_nothing_and_keeps_no_charge(tmp_path: Path) -> None:
    async with running_webhook(tmp_path, tenants=TENANTS_FJORD) as hook:
        await hook.runtime.audit.close()  # every append now fails: audit-unavailable
        answer = await hook.answer(review_of(deployment(1), namespace="fjord"))
        assert answer["allowed"] is False
        assert (answer["status"]["code"], answer["status"]["reason"]) == (503, "audit-unavailable")
        assert answer["auditAnnotations"]["action"] == "allow"  # the decision, as decided
        assert await used(hook) == 0  # reserved by the decision, given back
