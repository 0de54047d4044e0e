"""Compute adapters: pure functions from a request to the compute it asks for.

``measure(route, method, path, headers, body, catalog, inventory)`` dispatches on
``route.adapter`` to ``slurm``, ``kubernetes``, ``ray`` or ``generic`` and returns a
``ComputeRequest`` (``None`` for ``adapter: none``). Malformed or unmeasurable bodies raise
``BadRequest`` with a kebab-case reason (``bad-json``, ``bad-yaml``, ``duplicate-key``,
``body-too-deep``, ``unknown-gpu-syntax``, ``unknown-gpu-model``, ...). Adapters never see aiohttp
types: headers are any case-insensitive mapping with ``.get`` (and optionally ``.getall``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import RouteConfig
from ..context import ComputeRequest
from ..errors import DependencyError
from ..gpus import GpuCatalog
from ..inventory import EMPTY_INVENTORY, Inventory
from .generic import measure_generic
from .kubernetes import measure_kubernetes
from .ray import measure_ray
from .slurm import measure_slurm
from .submission import Submission

Adapter = Callable[[Submission, GpuCatalog, Inventory], ComputeRequest]

ADAPTERS: dict[str, Adapter] = {
    "slurm": measure_slurm,
    "kubernetes": measure_kubernetes,
    "ray": measure_ray,
    "generic": measure_generic,
}


def measure(
    route: RouteConfig,
    method: str,
    path: str,
    headers: Any,
    body: bytes,
    catalog: GpuCatalog,
    inventory: Inventory = EMPTY_INVENTORY,
) -> ComputeRequest | None:
    """The compute ``route``'s adapter measures in this request; ``None`` for ``adapter: none``."""
    if route.adapter == "none":
        return None
    adapter = ADAPTERS.get(route.adapter)
    if adapter is None:
        raise DependencyError("adapter-misconfigured", f"unknown adapter {route.adapter!r}")
    return adapter(Submission(route, method, path, headers, body), catalog, inventory)


__all__ = ["ADAPTERS", "measure"]
