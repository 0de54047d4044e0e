"""The generic adapter: GPU count, model and hours from configured headers or JSON pointers.

``RouteConfig.generic`` names, for each of GPUs, model and hours, a request header or an RFC 6901
JSON pointer into a JSON body (the header wins when both are set and present). Only ``POST``,
``PUT`` and ``PATCH`` are measured. A configured GPU source that the request does not fill is a
``BadRequest`` (``missing-gpu-count``): a client must not be able to skip the gate by leaving it
out. A missing model falls back to the route's ``gpu_model``, missing hours to ``max_hours``.
"""

from __future__ import annotations

from typing import Any

from ..config import GenericAdapterConfig
from ..context import ComputeRequest
from ..errors import BadRequest, DependencyError
from ..gpus import GpuCatalog
from ..inventory import Inventory
from ..jsonpointer import MISSING as _MISSING
from ..jsonpointer import PointerError, parse_pointer, resolve_pointer
from .body import load_json
from .common import Part, combine, header, number, zero
from .submission import Submission

__all__ = ["PointerError", "measure_generic", "parse_pointer", "resolve_pointer"]


def _source(headers: Any, doc_loader: Any, header_name: str | None, pointer: str | None) -> Any:
    if header_name:
        value = header(headers, header_name)
        if value is not None:
            return value
    if pointer is not None:
        try:
            tokens = parse_pointer(pointer)
        except PointerError as exc:
            raise DependencyError("adapter-misconfigured", str(exc)) from None
        return resolve_pointer(doc_loader(), tokens)
    return _MISSING


def measure_generic(req: Submission, catalog: GpuCatalog, inventory: Inventory) -> ComputeRequest:
    """Measure a request with the route's ``generic`` settings (see the module docstring)."""
    route, method, headers, body = req.route, req.method, req.headers, req.body
    cfg: GenericAdapterConfig | None = route.generic
    if cfg is None:
        raise DependencyError(
            "adapter-misconfigured", f"route {route.name}: generic settings missing"
        )
    if method.upper() not in ("POST", "PUT", "PATCH"):
        return zero()
    cache: list[Any] = []

    def doc() -> Any:
        if not cache:
            cache.append(load_json(body) if body.strip() else {})
        return cache[0]

    raw_gpus = _source(headers, doc, cfg.gpus_header, cfg.gpus_pointer)
    if raw_gpus is _MISSING or raw_gpus is None:
        raise BadRequest("missing-gpu-count", "the request does not say how many GPUs it needs")
    gpus = number(raw_gpus, "gpus")
    raw_model = _source(headers, doc, cfg.model_header, cfg.model_pointer)
    models: tuple[str, ...] = ()
    if raw_model is not _MISSING and raw_model is not None:
        if not isinstance(raw_model, str):
            raise BadRequest("bad-value", "GPU model must be a string")
        models = (raw_model,)
    raw_hours = _source(headers, doc, cfg.hours_header, cfg.hours_pointer)
    hours = route.max_hours
    if raw_hours is not _MISSING and raw_hours is not None:
        hours = number(raw_hours, "hours")
    return combine([Part(gpus=gpus, hours=hours, models=models)], route, catalog)
