"""Extended resources through the webhook, as through the proxy: an Ascend pod is an uncatalogued
accelerator the D:5-parented ``acme-sg`` (namespace ``team-a``) may not get, an unknown resource
is refused for everyone, and known non-accelerators beside a GPU are measured, not refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .support import review_of, running_webhook


def job(**limits: Any) -> dict[str, Any]:
    c = {"name": "main", "image": "trainer:1", "resources": {"limits": {"cpu": "4", **limits}}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [c]}}},
    }


async def test_extended_resources_through_the_webhook(tmp_path: Path) -> None:
    async with running_webhook(tmp_path) as hook:
        ascend = await hook.answer(review_of(job(**{"huawei.com/Ascend910": 8})))
        assert ascend["allowed"] is False, ascend
        assert ascend["status"]["reason"] == "d5-headquarters"
        assert ascend["auditAnnotations"]["gpus"] == "8"
        for namespace in ("team-a", "lab"):
            unknown = await hook.answer(
                review_of(job(**{"example.com/accel": 1}), namespace=namespace)
            )
            assert unknown["allowed"] is False, unknown
            assert unknown["status"]["reason"] == "unmeasurable-request"
            assert "example.com/accel" in unknown["status"]["message"]
        known = job(**{"nvidia.com/gpu": 2, "rdma/ib": 1, "devices.kubevirt.io/kvm": 1})
        lab = await hook.answer(review_of(known, namespace="lab"))
        assert lab["allowed"] is True and lab["auditAnnotations"]["gpus"] == "2", lab
        acme = await hook.answer(review_of(known))
        assert acme["allowed"] is False and acme["status"]["reason"] == "d5-headquarters"
