"""``AdmissionReview`` in and out: parse the API server's request, answer with its ``uid``.

Parsing is strict (the body comes from the API server, but the listener is reachable by whatever
can reach its port): JSON with duplicate keys refused, ``apiVersion``/``kind`` checked, every field
the gate reads type-checked. The request becomes what the proxy would have seen for the same write:
``CREATE`` a ``POST`` of ``request.object`` to the collection, ``UPDATE`` a ``PUT`` of the new
object, ``DELETE`` a ``DELETE``, ``CONNECT`` (exec, attach, port-forward, proxy) a ``POST`` to the
subresource; ``dryRun`` is the request's dry-run flag (recorded as ``?dryRun=All``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..adapters.body import load_json
from ..config import AdmissionTenants
from ..errors import BadRequest

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
_METHODS = {"CREATE": "POST", "UPDATE": "PUT", "DELETE": "DELETE", "CONNECT": "POST"}


class ReviewError(ValueError):
    """A body that is not an ``AdmissionReview`` the gate can answer (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Review:
    """The fields of ``request`` the gate reads."""

    uid: str
    operation: str
    api_version: str  # group/version of the resource
    resource: str
    sub_resource: str | None
    namespace: str | None
    name: str | None
    username: str
    obj: dict[str, Any] | None
    old: dict[str, Any] | None
    dry_run: bool


def _str(node: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = node.get(key)
    if value is None or value == "":
        if required:
            raise ReviewError(f"{where}.{key} is required")
        return None
    if not isinstance(value, str) or len(value) > 253:
        raise ReviewError(f"{where}.{key} must be a string of at most 253 characters")
    return value


def _map(node: Any, where: str) -> dict[str, Any]:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ReviewError(f"{where} must be an object")
    return node


def parse_review(body: bytes) -> Review:
    """The review in ``body``; ``ReviewError`` for anything else."""
    try:
        doc = load_json(body)
    except BadRequest as exc:
        raise ReviewError(f"{exc.reason}: {exc.detail}") from None
    doc = _map(doc, "body")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise ReviewError(f"expected apiVersion {API_VERSION} kind {KIND}")
    req = _map(doc.get("request"), "request")
    if not req:
        raise ReviewError("request is required")
    operation = _str(req, "operation", "request", required=True)
    if operation not in _METHODS:
        raise ReviewError(f"request.operation {str(operation)[:16]!r} is not one the gate knows")
    resource = _map(req.get("resource"), "request.resource")
    group = _str(resource, "group", "request.resource") or ""
    version = _str(resource, "version", "request.resource", required=True)
    plural = _str(resource, "resource", "request.resource", required=True)
    user = _map(req.get("userInfo"), "request.userInfo")
    dry_run = req.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise ReviewError("request.dryRun must be a boolean")
    obj, old = req.get("object"), req.get("oldObject")
    for key, value in (("object", obj), ("oldObject", old)):
        if value is not None and not isinstance(value, dict):
            raise ReviewError(f"request.{key} must be an object or null")
    if operation in ("CREATE", "UPDATE") and obj is None:
        raise ReviewError(f"request.object is required for {operation}")
    return Review(
        uid=str(_str(req, "uid", "request", required=True)),
        operation=operation,
        api_version=f"{group}/{version}" if group else str(version),
        resource=str(plural),
        sub_resource=_str(req, "subResource", "request"),
        namespace=_str(req, "namespace", "request"),
        name=_str(req, "name", "request"),
        username=_str(user, "username", "request.userInfo") or "",
        obj=obj,
        old=old,
        dry_run=dry_run,
    )


def as_request(review: Review) -> tuple[str, str, bytes]:
    """(method, API path, body) of the write the review describes."""
    group_version = review.api_version
    base = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
    parts = [base]
    if review.namespace:
        parts.append(f"namespaces/{review.namespace}")
    parts.append(review.resource)
    whole = review.operation == "CREATE" and review.sub_resource is None
    if review.name and not whole:
        parts.append(review.name)
        if review.sub_resource:
            parts.append(review.sub_resource)
    path = "/".join(parts)
    carries = review.operation in ("CREATE", "UPDATE") and review.obj is not None
    body = orjson.dumps(review.obj) if carries else b""
    return _METHODS[review.operation], path, body


def tenant_of(review: Review, tenants: AdmissionTenants) -> str | None:
    """The entity behind a review: the user mapping first, then the namespace's."""
    entity = tenants.users.get(review.username)
    if entity is None and review.namespace:
        entity = tenants.namespaces.get(review.namespace)
    return entity


def response(
    uid: str,
    *,
    allowed: bool,
    code: int,
    reason: str,
    message: str,
    annotations: dict[str, str],
    warnings: list[str],
) -> dict[str, Any]:
    """The ``AdmissionReview`` answer."""
    answer: dict[str, Any] = {"uid": uid, "allowed": allowed, "auditAnnotations": annotations}
    if not allowed:
        answer["status"] = {"code": code, "reason": reason, "message": message}
    if warnings:
        answer["warnings"] = warnings
    return {"apiVersion": API_VERSION, "kind": KIND, "response": answer}


__all__ = ["Review", "ReviewError", "as_request", "parse_review", "response", "tenant_of"]
