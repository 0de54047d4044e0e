"""Shared helpers for adapter tests: the shipped catalog and route factories."""

from __future__ import annotations

import json
from typing import Any

from multidict import CIMultiDict

from gatekeeper.adapters import measure
from gatekeeper.config import GenericAdapterConfig, RouteConfig
from gatekeeper.context import ComputeRequest
from gatekeeper.gpus import GpuCatalog, load_gpu_catalog

CATALOG: GpuCatalog = load_gpu_catalog(None)
TPP = {m.name: m.tpp for m in CATALOG.models}


def route(adapter: str, **kw: Any) -> RouteConfig:
    kw.setdefault("gpu_model", "H100-SXM")
    kw.setdefault("max_hours", 168.0)
    return RouteConfig(name=f"{adapter}-test", upstream="http://127.0.0.1:1", adapter=adapter, **kw)


def generic_route(**kw: Any) -> RouteConfig:
    return route("generic", generic=GenericAdapterConfig(**kw))


def run(
    r: RouteConfig,
    body: Any,
    *,
    method: str = "POST",
    path: str = "/",
    headers: dict[str, str] | None = None,
) -> ComputeRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    result = measure(r, method, path, CIMultiDict(headers or {}), raw, CATALOG)
    assert result is not None
    return result


def check(c: ComputeRequest, gpus: float, hours: float, model: str | None) -> None:
    """Assert the measured numbers, including the derived GPU-hours and TPP-hours."""
    assert c.gpus == gpus, c
    assert c.hours == hours, c
    assert c.gpu_model == model, c
    assert c.gpu_hours == gpus * hours, c
    if gpus == 0:
        assert c.controlled is False and c.tpp_hours == 0 and c.eccn is None, c
    elif model in TPP:
        assert c.tpp == TPP[model], c
        assert c.tpp_hours == gpus * hours * TPP[model], c
