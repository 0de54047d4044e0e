"""Shared helpers for the Kubernetes adapter tests: URLs of objects, the real manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from multidict import CIMultiDict

from gatekeeper.adapters.kubernetes import ClaimResolver, measure_change, measure_object
from gatekeeper.adapters.kubernetes.kinds import plural
from gatekeeper.adapters.submission import Submission
from gatekeeper.config import RouteConfig
from gatekeeper.context import ComputeRequest
from gatekeeper.inventory import EMPTY_INVENTORY, Inventory

from ..helpers import CATALOG, route

DATA = Path(__file__).resolve().parents[2] / "data" / "k8s"
R = route("kubernetes", gpu_model="H100-SXM", max_hours=24.0)


def url_for(doc: dict[str, Any], namespace: str = "team-a") -> str:
    """The collection URL an object of this apiVersion/kind is created at."""
    api, kind = doc["apiVersion"], doc["kind"]
    base = f"/api/{api}" if "/" not in api else f"/apis/{api}"
    if kind == "Namespace":
        return f"{base}/namespaces"
    return f"{base}/namespaces/{namespace}/{plural(kind)}"


def manifests() -> list[tuple[str, list[dict[str, Any]], list[float]]]:
    """(file, documents, expected accelerators per document) for every manifest in DATA."""
    expected = yaml.safe_load((DATA / "EXPECTED.yaml").read_text())
    out = []
    for name, counts in expected.items():
        docs = [d for d in yaml.safe_load_all((DATA / name).read_text()) if d is not None]
        assert len(docs) == len(counts), name
        out.append((name, docs, [float(c) for c in counts]))
    return out


def resolver_for(docs: list[dict[str, Any]]) -> ClaimResolver:
    """A resolver that finds claims and claim templates among ``docs`` (as an API server would)."""
    by_key = {(d["kind"], d["metadata"].get("name")): d for d in docs}

    def resolve(kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return by_key.get((kind, name))

    return resolve


def post(
    doc: Any,
    r: RouteConfig = R,
    *,
    path: str | None = None,
    method: str = "POST",
    ctype: str = "application/json",
    inventory: Inventory = EMPTY_INVENTORY,
    current: dict[str, Any] | None = None,
    resolver: ClaimResolver | None = None,
) -> ComputeRequest:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    target = path if path is not None else url_for(doc)
    return measure_change(
        Submission(r, method, target, CIMultiDict({"Content-Type": ctype}), body),
        CATALOG,
        inventory,
        current=current,
        resolver=resolver,
    )


def measure(doc: dict[str, Any], r: RouteConfig = R, **kw: Any) -> ComputeRequest:
    return measure_object(r, doc, CATALOG, **kw)
