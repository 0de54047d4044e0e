"""Kubernetes API writes -> the accelerators, model and hours they can make the cluster grant.

The type of an object is the URL's (group, version, resource), which the API server trusts; a
body whose ``apiVersion``/``kind`` disagree is refused. Every kind is a row of the table in
``kinds.py`` (plus the operator's ``kubernetes.workloads``): its pod templates, walked by
``pods.py``, times its replica factors. A kind not in the table is refused
(``unmeasurable-request``); kinds that never carry pods measure zero.

- ``POST``/``PUT`` carry the whole object and are measured as such. A key starting with ``$`` in
  an object is refused: strategic-merge directives mean something only in a patch, and the API
  server drops unknown fields under a lenient ``fieldValidation``.
- ``PATCH`` and the ``/scale`` subresource change a stored object: ``measure_change`` measures
  the object after the change when the face hands it the stored object (``patch.py``). Without
  it, only a patch of labels and annotations is measured (zero); anything else is refused, naming
  the admission webhook, which sees the stored result.
- Subresources: ``status`` zero; ``exec``, ``attach``, ``portforward``, ``log``, ``binding``,
  ``eviction`` zero compute (identity and policy still apply); writes through ``proxy`` are
  refused (they reach services the gate cannot measure); ``ephemeralcontainers`` and ``resize``
  are refused when they touch accelerators; any other subresource is refused.
- Hours: the smallest of the kind's deadline fields (``activeDeadlineSeconds``), Kueue's
  ``kueue.x-k8s.io/max-exec-time-seconds`` only with ``kubernetes.kueue_enforces_max_exec_time``,
  the pool's ``max_hours``, else the route's ``max_hours`` (assumption ``hours-from-route-max``).
- The inventory bounds: a pod gets at most one node's accelerators, a template at most its pools'
  accelerators, and an unbounded replica count (KubeRay without ``maxReplicas``) or a DaemonSet is
  counted from the pools; without a pool both are refused.
"""

from __future__ import annotations

import copy
from typing import Any

from ...config import RouteConfig
from ...context import ComputeRequest
from ...gpus import GpuCatalog
from ...inventory import Inventory
from ..body import load_body, sanitize
from ..common import as_mapping, header, zero
from ..submission import Submission
from .objects import (
    ApiPath,
    ClaimResolver,
    get_field,
    measure_object,
    parse_path,
    refuse_directives,
    tables_for,
)
from .patch import apply_patch, metadata_only
from .pods import pod_accelerators, unmeasurable

ZERO_SUBRESOURCES = frozenset(
    {
        "status",
        "exec",
        "attach",
        "portforward",
        "log",
        "binding",
        "eviction",
        "token",
        "approval",
        "finalize",
    }
)


def _query(path: str, name: str) -> str | None:
    if "?" not in path:
        return None
    for pair in path.split("?", 1)[1].split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return value
    return None


def measure_change(
    req: Submission,
    catalog: GpuCatalog,
    inventory: Inventory,
    *,
    current: dict[str, Any] | None = None,
    resolver: ClaimResolver | None = None,
) -> ComputeRequest:
    """Measure a Kubernetes write; ``current`` is the stored object when the face read it."""
    route, method, path, headers, body = req
    method = method.upper()
    if method not in ("POST", "PUT", "PATCH"):
        return zero()
    api = parse_path(path)
    ctype = (header(headers, "Content-Type") or "").split(";", 1)[0].strip().lower()
    doc = load_body(body, ctype) if body.strip() else {}
    if api is not None and api.subresource is not None:
        sub = api.subresource
        return _subresource(
            route, method, api, sub, doc, ctype, catalog, inventory, current, resolver
        )
    if method == "PATCH":
        if current is None:
            if metadata_only(doc, ctype):
                return zero()
            raise unmeasurable(
                "PATCH",
                "measured on the stored object, which this face cannot read: "
                "send the whole object (PUT) or decide with the admission webhook",
            )
        refuse_directives(current)
        doc = apply_patch(current, doc, ctype)
    elif isinstance(doc, dict) and _query(path, "fieldValidation") not in (None, "Strict"):
        refuse_directives(doc)  # named here too: the reason is the lenient validation
    return measure_object(route, doc, catalog, inventory, api=api, resolver=resolver)


def _subresource(
    route: RouteConfig,
    method: str,
    api: ApiPath,
    sub: str,
    doc: Any,
    ctype: str,
    catalog: GpuCatalog,
    inventory: Inventory,
    current: dict[str, Any] | None,
    resolver: ClaimResolver | None,
) -> ComputeRequest:
    if sub in ZERO_SUBRESOURCES:
        return zero()
    if sub == "proxy":
        raise unmeasurable(
            f"{api.resource}/proxy",
            "writes through the API server's proxy reach a service the gate cannot measure",
        )
    if sub in ("ephemeralcontainers", "resize"):
        tables = tables_for(route.kubernetes, catalog)
        spec = as_mapping(as_mapping(doc, "body").get("spec"), "spec")
        if sub == "resize" and pod_accelerators(spec, "spec", tables.accelerators).devices > 0:
            raise unmeasurable("spec.containers", "accelerators cannot be resized in place")
        pod_accelerators(
            {"ephemeralContainers": spec.get("ephemeralContainers")}, "spec", tables.accelerators
        )
        return zero()
    if sub == "scale":
        tables = tables_for(route.kubernetes, catalog)
        w = tables.kinds.resource(api.api_version, api.resource)
        if w is None or w.scale is None:
            raise unmeasurable(f"{api.resource}/scale", "no known replica field")
        if current is None:
            raise unmeasurable(
                f"{api.resource}/scale",
                "measured on the stored object, which this face cannot read: "
                "send the whole object (PUT) or decide with the admission webhook",
            )
        replicas = get_field(current, w.scale, current)
        scale = {"spec": {"replicas": replicas}}
        scale = apply_patch(scale, doc, ctype) if method == "PATCH" else as_mapping(doc, "body")
        new = as_mapping(scale.get("spec"), "spec").get("replicas")
        result = _set(current, w.scale, new)
        return measure_object(route, result, catalog, inventory, api=_main(api), resolver=resolver)
    raise unmeasurable(f"{api.resource}/{sanitize(sub)}", "unknown subresource")


def _main(api: ApiPath) -> ApiPath:
    return ApiPath(api.api_version, api.resource, api.namespace, api.name, None)


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def measure_kubernetes(
    req: Submission, catalog: GpuCatalog, inventory: Inventory
) -> ComputeRequest:
    """The adapter entry point (no stored object: see ``measure_change``)."""
    return measure_change(req, catalog, inventory)


__all__ = [
    "ApiPath",
    "ClaimResolver",
    "measure_change",
    "measure_kubernetes",
    "measure_object",
    "parse_path",
    "tables_for",
]
