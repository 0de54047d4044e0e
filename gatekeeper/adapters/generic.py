"""The generic adapter: GPU count, model and hours from configured headers or JSON pointers.

``RouteConfig.generic`` names, for each of GPUs, model and hours, a request header or an RFC 6901
JSON pointer into a JSON body (the header wins when both are set and present). Only ``POST``,
``PUT`` and ``PATCH`` are measured. A configured GPU source that the request does not fill is a
``BadRequest`` (``missing-gpu-count``): a client must not be able to skip the gate by leaving it
out. A missing model falls back to the route's ``gpu_model``, missing hours to ``max_hours``.
"""

from __future__ import annotations

from typing import Any

from ..config import GenericAdapterConfig, RouteConfig
from ..context import ComputeRequest
from ..errors import BadRequest, DependencyError
from ..gpus import GpuCatalog
from ..inventory import EMPTY_INVENTORY, Inventory
from .common import Part, combine, header, load_json, number, zero

_MISSING = object()


class PointerError(ValueError):
    """A JSON pointer that is not valid RFC 6901 syntax (a configuration error)."""


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901 reference tokens of ``pointer`` (``""`` is the whole document)."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise PointerError(f"JSON pointer {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for tok in tokens:
        rest = tok.replace("~0", "").replace("~1", "")
        if "~" in rest:
            raise PointerError(f"JSON pointer {pointer!r}: '~' must be followed by 0 or 1")
    # ~1 first, then ~0 (RFC 6901 §4), so "~01" becomes "~1", not "/".
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def resolve_pointer(doc: Any, tokens: tuple[str, ...]) -> Any:
    """The value at ``tokens`` in ``doc``, or ``_MISSING``."""
    node = doc
    for tok in tokens:
        if isinstance(node, dict):
            if tok not in node:
                return _MISSING
            node = node[tok]
        elif isinstance(node, list):
            if not tok.isdigit() or (len(tok) > 1 and tok[0] == "0") or not tok.isascii():
                return _MISSING
            idx = int(tok)
            if idx >= len(node):
                return _MISSING
            node = node[idx]
        else:
            return _MISSING
    return node


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


def measure_generic(
    route: RouteConfig,
    method: str,
    path: str,
    headers: Any,
    body: bytes,
    catalog: GpuCatalog,
    inventory: Inventory = EMPTY_INVENTORY,
) -> ComputeRequest:
    """Measure a request with the route's ``generic`` settings (see the module docstring)."""
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
