"""``AdmissionReview`` parsing and conversion: malformed and hostile bodies, exact messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.admission.review import ReviewError, as_request, parse_review, tenant_of
from gatekeeper.config import AdmissionTenants

from .support import review, running_webhook

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}


def _body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _with(**request: Any) -> dict[str, Any]:
    doc = review(POD, group="", version="v1", resource="pods")
    doc["request"].update(request)
    return doc


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "body must be an object"),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "apiVersion": "x"}',
            "duplicate-key: duplicate JSON key 'apiVersion'",
        ),
        (
            _body(
                {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}
            ),
            "expected apiVersion admission.k8s.io/v1 kind AdmissionReview",
        ),
        (
            _body({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            "request is required",
        ),
        (_body(_with(uid="")), "request.uid is required"),
        (_body(_with(uid=7)), "request.uid must be a string of at most 253 characters"),
        (_body(_with(operation="PATCH")), "request.operation 'PATCH' is not one the gate knows"),
        (
            _body(_with(resource={"group": "", "version": "v1"})),
            "request.resource.resource is required",
        ),
        (_body(_with(object=None)), "request.object is required for CREATE"),
        (_body(_with(object=[1])), "request.object must be an object or null"),
        (_body(_with(dryRun="yes")), "request.dryRun must be a boolean"),
        (_body(_with(userInfo="admin")), "request.userInfo must be an object"),
        (b"[" * 100 + b"]" * 100, "body-too-deep: nesting deeper than 64"),
        (b"\xff", "bad-json: body is not UTF-8: invalid start byte"),
    ],
)
def test_malformed_reviews(body: bytes, message: str) -> None:
    with pytest.raises(ReviewError) as e:
        parse_review(body)
    assert str(e.value) == message


def test_conversion_follows_the_proxy_paths() -> None:
    r = parse_review(_body(review(POD, group="", version="v1", resource="pods", namespace="lab")))
    assert as_request(r)[:2] == ("POST", "/api/v1/namespaces/lab/pods")
    upd = parse_review(
        _body(
            review(
                POD,
                operation="UPDATE",
                group="apps",
                version="v1",
                resource="deployments",
                name="d",
                sub_resource="scale",
                dry_run=True,
            )
        )
    )
    assert as_request(upd)[:2] == (
        "PUT",
        "/apis/apps/v1/namespaces/team-a/deployments/d/scale",
    )
    assert upd.dry_run  # a flag on the request, not a query policies would see in the path
    conn = parse_review(
        _body(
            review(
                None,
                operation="CONNECT",
                group="",
                version="v1",
                resource="pods",
                name="p",
                sub_resource="exec",
            )
        )
    )
    assert as_request(conn) == ("POST", "/api/v1/namespaces/team-a/pods/p/exec", b"")
    tenants = AdmissionTenants(
        users={"alice@example.com": "frontier-labs"}, namespaces={"team-a": "acme-sg"}
    )
    assert tenant_of(conn, tenants) == "frontier-labs"


@pytest.mark.parametrize(
    ("raw", "ctype", "status"),
    [(b"not json", "application/json", 400), (b"{}", "text/plain", 415)],
)
async def test_listener_refuses_what_is_not_a_review(
    tmp_path: Path, raw: bytes, ctype: str, status: int
) -> None:
    async with running_webhook(tmp_path) as hook:
        got, doc = await hook.send(None, raw=raw, ctype=ctype)
        assert got == status and doc["status"] == status


async def test_oversized_review_is_413(tmp_path: Path) -> None:
    async with running_webhook(tmp_path) as hook:
        got, _doc = await hook.send(None, raw=b" " * (8 * 1024 * 1024 + 1))
        assert got == 413
