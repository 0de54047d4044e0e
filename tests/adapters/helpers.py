"""Shared helpers for adapter tests: the shipped catalog and route factories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from multidict import CIMultiDict

from gatekeeper.adapters import measure
from gatekeeper.check import decide_offline
from gatekeeper.config import GenericAdapterConfig, RouteConfig, load_config
from gatekeeper.context import ComputeRequest
from gatekeeper.demo import DemoKeys, write_config
from gatekeeper.gpus import GpuCatalog, load_gpu_catalog
from gatekeeper.runtime import Runtime
from tests.support import repo_root

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


def us_pack_config(
    tmp: Path,
    keys: DemoKeys,
    port: int,
    admin: int,
    *,
    routes_first: tuple[dict[str, Any], ...] = (),
    **sections: Any,
) -> Path:
    """The demo configuration (real tokens, entities, GeoIP) under the shipped US pack, with
    ``routes_first`` put before the demo's routes and the top-level ``sections`` given replaced
    (e.g. ``inventory``)."""
    base = write_config(tmp, keys, port=port, admin=admin, scheduler="http://127.0.0.1:6820")
    cfg = yaml.safe_load(base.read_text())
    cfg["policy"]["files"] = [str(repo_root() / "policies" / "us-remote-access.yaml")]
    cfg["routes"][:0] = list(routes_first)
    cfg.update(sections)
    path = tmp / f"us-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# The demo's tenants for the D:5 view: a Singapore company whose ultimate parent is headquartered
# in a D:5 country, and a US lab (the control: allowed what the other is not).
D5_TENANT, D5_TENANT_IP = "acme-sg", "165.21.83.88"
US_LAB, US_LAB_IP = "frontier-labs", "8.8.8.8"

# One request to decide: (tenant, client address, method, path, body).
Ask = tuple[str, str, str, str, Any]


async def decide_offline_all(
    config: Path, keys: DemoKeys, asks: dict[str, Ask]
) -> dict[str, dict[str, Any]]:
    """Each request decided by the gate's own path (``gatekeeper check``'s ``decide_offline``),
    sent by its tenant's token through a trusted proxy from its address; nothing consumed."""
    runtime = Runtime(load_config(str(config)))
    await runtime.start(with_audit=False)
    try:
        out = {}
        for key, (who, ip, method, path, body) in asks.items():
            headers = {"X-Forwarded-For": ip, "Authorization": f"Bearer {keys.token(who)}"}
            payload = {"method": method, "path": path, "headers": headers,
                       "client_ip": "127.0.0.1", "body": body}  # fmt: skip
            out[key] = await decide_offline(runtime, payload, consume=False)
        return out
    finally:
        await runtime.close()
