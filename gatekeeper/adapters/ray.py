"""Ray Jobs submissions (``POST /api/jobs/``) -> requested GPUs, model and hours (DOMAIN §5).

GPUs: ``entrypoint_num_gpus`` (may be fractional, e.g. 0.5), plus a ``GPU`` entry in
``entrypoint_resources`` should one appear (Ray refuses it, the gate counts it anyway). Model: the
``accelerator_type:<X>`` keys of ``entrypoint_resources`` with a positive value (several: the most
capable), else the route's ``gpu_model``. Hours: Ray has no time limit in the body, so the route's
``max_hours`` (a limit the provider enforces) applies.

Only the entrypoint's own reservation is visible in the request: tasks and actors the entrypoint
starts use the cluster's GPUs without passing the gate. Size the route (and the cluster) with that
in mind. Other methods and paths (status, logs, stop, delete) ask for no compute.
"""

from __future__ import annotations

from typing import Any

from ..config import RouteConfig
from ..context import ComputeRequest
from ..errors import BadRequest
from ..gpus import GpuCatalog
from ..inventory import EMPTY_INVENTORY, Inventory
from .common import Part, as_mapping, combine, load_json, number, sanitize, zero

ACCELERATOR_PREFIX = "accelerator_type:"


def _is_submit(method: str, path: str) -> bool:
    return method.upper() == "POST" and path.split("?", 1)[0].rstrip("/").endswith("/api/jobs")


def measure_ray(
    route: RouteConfig,
    method: str,
    path: str,
    headers: Any,
    body: bytes,
    catalog: GpuCatalog,
    inventory: Inventory = EMPTY_INVENTORY,
) -> ComputeRequest:
    """Measure a Ray job submission (see the module docstring)."""
    if not _is_submit(method, path):
        return zero()
    doc = load_json(body) if body.strip() else {}
    if not isinstance(doc, dict):
        raise BadRequest("bad-body", "Ray job submission must be a JSON object")
    gpus = 0.0
    if doc.get("entrypoint_num_gpus") is not None:
        gpus = number(doc["entrypoint_num_gpus"], "entrypoint_num_gpus", allow_str=False)
    resources = as_mapping(doc.get("entrypoint_resources"), "entrypoint_resources")
    models: list[str] = []
    for key, value in resources.items():
        amount = number(value, f"entrypoint_resources[{sanitize(str(key))}]", allow_str=False)
        if key == "GPU":
            gpus += amount
        elif isinstance(key, str) and key.startswith(ACCELERATOR_PREFIX) and amount > 0:
            models.append(key[len(ACCELERATOR_PREFIX) :])
    return combine([Part(gpus=gpus, hours=route.max_hours, models=tuple(models))], route, catalog)
