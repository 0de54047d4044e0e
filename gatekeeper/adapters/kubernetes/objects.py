"""One whole Kubernetes object -> the parts of compute it can make the cluster grant.

The kind's row of the table (``kinds.py``) says where its pod templates are and how many pods of
each can run at once; ``pods.py`` says what one pod holds; the inventory bounds both (see the
package docstring). Pure: a pod's DRA claims are read through a resolver the face hands in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...config import KubernetesConfig, KubernetesTemplate, KubernetesWorkload, RouteConfig
from ...context import ComputeRequest
from ...errors import BadRequest
from ...gpus import GpuCatalog
from ...inventory import EMPTY_INVENTORY, Inventory, Pool
from ..body import sanitize
from ..common import MAX_MULTIPLIER, Part, as_list, as_mapping, combine, number
from .dra import DeviceClasses, object_claim
from .kinds import Factor, Kinds, build_kinds, parse_factor
from .pods import (
    Accelerators,
    node_selector,
    pod_accelerators,
    pod_claims,
    pod_models,
    unmeasurable,
)

KUEUE_MAX_EXEC = "kueue.x-k8s.io/max-exec-time-seconds"
A_HOURS_ROUTE = "hours-from-route-max"
A_HOURS_POOL = "hours-from-inventory"
A_NODE_CAP = "gpus-per-node-from-inventory"
A_POOL_CAP = "gpus-capped-by-inventory"
A_REPLICAS_POOL = "replicas-from-inventory"
A_MODEL_POOL = "model-from-inventory"
A_CLAIMS_NODE = "dra-claims-bound-by-node"

DRA_KINDS = frozenset({"ResourceClaim", "ResourceClaimTemplate"})
# LimitRange sections the API server writes into containers that name no amount of a resource.
DEFAULTING_SECTIONS = ("default", "defaultRequest")

# A pod's claim, resolved by the face: (kind, namespace, name) -> the object, or None.
ClaimResolver = Callable[[str, str | None, str], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Tables:
    """The kind table, accelerator names and device classes of one ``kubernetes:`` section."""

    kinds: Kinds
    accelerators: Accelerators
    classes: DeviceClasses
    trust_kueue: bool


_BUILTIN = KubernetesConfig()


@functools.lru_cache(maxsize=64)
def _tables(section: KubernetesConfig, catalog: GpuCatalog | None) -> Tables:
    return Tables(
        build_kinds(section.workloads),
        Accelerators(section.accelerator_resources, catalog),
        DeviceClasses(section.device_classes),
        section.kueue_enforces_max_exec_time,
    )


def tables_for(section: KubernetesConfig | None, catalog: GpuCatalog | None = None) -> Tables:
    """The (cached) tables of a configuration section (``None``: the built-in ones); with the
    catalog, a resource named after a catalogued model is an accelerator."""
    return _tables(section or _BUILTIN, catalog)


# ----------------------------------------------------------------------------- paths


@dataclass(frozen=True, slots=True)
class ApiPath:
    """The parts of an API URL: group/version, resource, namespace, name, subresource."""

    api_version: str
    resource: str
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_path(path: str) -> ApiPath | None:
    segs = [s for s in path.split("?", 1)[0].split("/") if s]
    if len(segs) >= 3 and segs[0] == "api":
        api_version, rest = segs[1], segs[2:]
    elif len(segs) >= 4 and segs[0] == "apis":
        api_version, rest = f"{segs[1]}/{segs[2]}", segs[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    return ApiPath(
        api_version,
        rest[0].lower(),
        namespace,
        rest[1] if len(rest) > 1 else None,
        rest[2].lower() if len(rest) > 2 else None,
    )


# ----------------------------------------------------------------------------- field paths


def get_field(node: Any, path: str, root: Any) -> Any:
    if path.startswith("$."):
        node, path = root, path[2:]
    if path == "":
        return node
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _factor(f: Factor, element: Any, root: Any, base: str) -> int | None:
    """One replica factor of ``element`` (at field path ``base``; ``$.`` paths from ``root``)."""
    best: int | None = None
    for path in f.paths:
        value = get_field(element, path, root)
        if value is None:
            continue
        where = path[2:] if path.startswith("$.") else ".".join(p for p in (base, path) if p)
        n = number(value, where, allow_str=False)
        if n > MAX_MULTIPLIER:
            raise BadRequest("bad-value", f"{where}: replica count {n:.0f} out of range")
        best = int(n) if best is None else max(best, int(n))
    if best is None:
        return f.default
    return max(best - f.minus, 0)


def _holds(obj: Any, condition: str) -> bool:
    """``path``: the field is present; ``path=value``: it is, and reads ``value`` (YAML's
    ``true``/``false`` as written in JSON)."""
    path, eq, wanted = condition.partition("=")
    value = get_field(obj, path, obj)
    if not eq:
        return value is not None
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return value is not None and text == wanted


def _elements(obj: Any, t: KubernetesTemplate) -> list[tuple[str, Any]]:
    if t.each is None:
        return [("", obj)]
    value = get_field(obj, t.each, obj)
    if isinstance(value, list):
        pairs = [(f"{t.each}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        pairs = [(f"{t.each}.{k}", v) for k, v in value.items()]
    else:
        pairs = None
    if pairs is not None:
        for where, element in pairs:
            as_mapping(element, where)
        return pairs
    if value is None:
        return []
    raise BadRequest("bad-value", f"{t.each}: expected a list or an object")


# ----------------------------------------------------------------------------- measurement


@dataclass(frozen=True, slots=True)
class _Measure:
    """One object's measurement: the parts of its templates and claims."""

    route: RouteConfig
    tables: Tables
    inventory: Inventory
    resolver: ClaimResolver | None
    namespace: str | None

    def pools(self, spec: dict[Any, Any], what: str) -> list[Pool]:
        """The pools a pod may land on: those its node selector picks, else the route's entry.

        A pod that selects no declared pool on a route without one may land on nodes the
        inventory does not list, so no pool bounds it (``[]``), not even all of them together.
        """
        found = self.inventory.kubernetes_pool(node_selector(spec, what))
        if found:
            return found
        default = self.inventory.entry(self.route.inventory)
        return [default] if default is not None else []

    def hours(
        self, obj: dict[Any, Any], w: KubernetesWorkload, pools: list[Pool]
    ) -> tuple[float, tuple[str, ...]]:
        limits = [
            number(v, h, allow_str=False) / 3600.0
            for h in w.hours
            if (v := get_field(obj, h, obj)) is not None
        ]
        if self.tables.trust_kueue:
            meta = as_mapping(obj.get("metadata"), "metadata")
            label = as_mapping(meta.get("labels"), "metadata.labels").get(KUEUE_MAX_EXEC)
            if label is not None:
                limits.append(number(label, f"metadata.labels[{KUEUE_MAX_EXEC}]") / 3600.0)
        pool_max = [p.max_hours for p in pools]
        if pools and all(m is not None for m in pool_max):
            bound = max(m for m in pool_max if m is not None)
            return (min([bound, *limits]), () if limits else (A_HOURS_POOL,))
        if limits:
            return min(limits), ()
        return self.route.max_hours, (A_HOURS_ROUTE,)

    def claims(
        self, spec: dict[Any, Any], what: str, pools: list[Pool]
    ) -> tuple[float, set[str], bool]:
        """Devices of a pod's DRA claims; ``True`` when only the node bounds them."""
        devices = 0.0
        models: set[str] = set()
        for where, kind, name in pod_claims(spec, what):
            obj = self.resolver(kind, self.namespace, name) if self.resolver else None
            if obj is None:
                if pools:
                    return 0.0, models, True
                raise unmeasurable(
                    where, f"cannot resolve {kind} {sanitize(name)!r} (no inventory pool bounds it)"
                )
            claim = object_claim(obj, kind, self.tables.classes)
            if claim.unbounded:
                if pools:
                    return 0.0, models, True
                raise unmeasurable(where, "allocationMode All needs an inventory pool to bound it")
            devices += claim.devices
            models |= claim.models
        return devices, models, False

    def template(
        self,
        obj: dict[Any, Any],
        w: KubernetesWorkload,
        t: KubernetesTemplate,
        hours_of: Callable[[list[Pool]], tuple[float, tuple[str, ...]]],
    ) -> list[Part]:
        if t.when is not None and not _holds(obj, t.when):
            return []
        if t.unless is not None and _holds(obj, t.unless):
            return []
        parts: list[Part] = []
        for base, element in _elements(obj, t):
            tpl = get_field(element, t.template, obj)
            if tpl is None:
                for text in t.count:  # no pods; the counts must still be numbers
                    f = parse_factor(text)
                    if not f.nodes:
                        _factor(f, element, obj, base)
                continue
            where = ".".join(p for p in (base, t.template) if p)
            tpl_map = as_mapping(tpl, where or "object")
            spec_where = f"{where}.spec" if where else "spec"
            spec = as_mapping(tpl_map.get("spec"), spec_where)
            parts.extend(self._pod(obj, element, base, spec, spec_where, t, hours_of))
        return parts

    def _pod(
        self,
        obj: dict[Any, Any],
        element: Any,
        base: str,
        spec: dict[Any, Any],
        what: str,
        t: KubernetesTemplate,
        hours_of: Callable[[list[Pool]], tuple[float, tuple[str, ...]]],
    ) -> list[Part]:
        pod = pod_accelerators(spec, what, self.tables.accelerators)
        pools = self.pools(spec, what)
        # Every factor and the hours are read (and checked) even when the pod holds nothing.
        count: int | None = 1
        per_node_pods = False
        for text in t.count:
            f = parse_factor(text)
            if f.nodes:
                per_node_pods = True
                continue
            n = _factor(f, element, obj, base)
            count = None if count is None or n is None else count * n
        hours, hour_assumptions = hours_of(pools)
        claim_devices, claim_models, node_bound = self.claims(spec, what, pools)
        per_node = max((p.per_node for p in pools), default=None)
        assumptions: list[str] = []
        devices = pod.devices + claim_devices
        if node_bound and per_node is not None:
            devices = float(per_node)
            assumptions.append(A_CLAIMS_NODE)
        if devices <= 0:
            return []
        if per_node is not None and devices > per_node:
            devices = float(per_node)  # a pod runs on one node
            assumptions.append(A_NODE_CAP)
        if per_node_pods:
            if not pools:
                raise unmeasurable(what, "one pod per node needs an inventory pool")
            count = None if count is None else count * sum(p.nodes for p in pools)
            assumptions.append(A_REPLICAS_POOL)
        pool_total = sum(p.accelerators for p in pools) if pools else None
        if count is None:
            if pool_total is None:
                raise unmeasurable(
                    what, "replica count unbounded (no maximum and no inventory pool)"
                )
            total = float(pool_total)
            assumptions.append(A_REPLICAS_POOL)
        else:
            total = count * devices
        if pool_total is not None and total > pool_total:
            total = float(pool_total)
            assumptions.append(A_POOL_CAP)
        models = (*pod_models(spec, what), *pod.models, *sorted(claim_models))
        if not models and pools:
            models = tuple(p.model.name for p in pools)
            assumptions.append(A_MODEL_POOL)
        return [Part(total, hours, tuple(dict.fromkeys(models)), (*assumptions, *hour_assumptions))]

    def object(self, obj: dict[Any, Any], w: KubernetesWorkload) -> list[Part]:
        if w.kind in DRA_KINDS:
            return self.dra(obj, w.kind)
        if (w.api_version, w.kind) == ("v1", "LimitRange"):
            self.limit_range(obj)
            return []
        if w.kind == "DeviceClass" and w.api_version.startswith("resource.k8s.io/"):
            name = as_mapping(obj.get("metadata"), "metadata").get("name")
            if self.tables.classes.counts_none(name):
                # SECURITY: its selectors could be rewritten to pick GPUs its claims never count
                raise unmeasurable(
                    "metadata.name",
                    f"claims of device class {sanitize(str(name))!r} are counted as no "
                    "accelerator: it is not written through the gate",
                )
        parts: list[Part] = []
        for t in w.templates:
            parts.extend(self.template(obj, w, t, lambda pools: self.hours(obj, w, pools)))
        return parts

    def limit_range(self, obj: dict[Any, Any]) -> None:
        """Refuse a LimitRange that defaults accelerators: it grants nothing itself, but the
        API server writes its defaults into every later container that names no amount."""
        spec = as_mapping(obj.get("spec"), "spec")
        for i, item in enumerate(as_list(spec.get("limits"), "spec.limits")):
            entry = as_mapping(item, f"spec.limits[{i}]")
            for section in DEFAULTING_SECTIONS:
                where = f"spec.limits[{i}].{section}"
                for name in as_mapping(entry.get(section), where):
                    if self.tables.accelerators.unit(name, where) is not None:
                        # SECURITY: a pod measured with no accelerator would run with these
                        raise unmeasurable(
                            f"{where}[{name}]",
                            "a namespace default of accelerators reaches pods measured "
                            "without them",
                        )

    def dra(self, obj: dict[Any, Any], kind: str) -> list[Part]:
        claim = object_claim(obj, kind, self.tables.classes)
        pools = self.pools({}, "spec")
        devices = claim.devices
        assumptions: list[str] = []
        if claim.unbounded:
            if not pools:
                raise unmeasurable(
                    "spec.devices", "allocationMode All needs an inventory pool to bound it"
                )
            devices = float(max(p.per_node for p in pools))
            assumptions.append(A_CLAIMS_NODE)
        if devices <= 0:
            return []
        models = tuple(sorted(claim.models))
        if not models and pools:
            models = tuple(p.model.name for p in pools)
            assumptions.append(A_MODEL_POOL)
        hours, more = self.hours(obj, KubernetesWorkload(kind, ""), pools)
        return [Part(devices, hours, models, (*assumptions, *more))]


def refuse_directives(doc: Any) -> None:
    """Refuse ``$``-keys anywhere in an object (see the module docstring)."""
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key.startswith("$"):
                    # SECURITY: the API server drops what the gate would have read as a directive
                    raise unmeasurable(f"{where}.{key}".lstrip("."), "patch directive in an object")
                stack.append((value, f"{where}.{key}"))
        elif isinstance(node, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))


def workload_of(tables: Tables, api: ApiPath | None, doc: dict[Any, Any]) -> KubernetesWorkload:
    """The table row for an object at ``api`` (the URL's type wins; the body must agree)."""
    body_api, body_kind = doc.get("apiVersion"), doc.get("kind")
    w = tables.kinds.resource(api.api_version, api.resource) if api is not None else None
    if w is None and api is None and isinstance(body_api, str) and isinstance(body_kind, str):
        w = tables.kinds.kind(body_api, body_kind)
    if w is None:
        what = f"{api.api_version} {api.resource}" if api is not None else f"{body_api} {body_kind}"
        raise unmeasurable(
            "kind", f"unknown kind {sanitize(str(what))!r}: where it keeps pods is not known"
        )
    if (body_kind is not None and body_kind != w.kind) or (
        body_api is not None and body_api != w.api_version
    ):
        raise BadRequest(
            "bad-body",
            f"body is {sanitize(str(body_api))} {sanitize(str(body_kind))}, "
            f"the URL {w.api_version} {w.kind}",
        )
    return w


def measure_object(
    route: RouteConfig,
    doc: Any,
    catalog: GpuCatalog,
    inventory: Inventory = EMPTY_INVENTORY,
    *,
    api: ApiPath | None = None,
    resolver: ClaimResolver | None = None,
) -> ComputeRequest:
    """The compute a whole object can make the cluster grant (for any face)."""
    if not isinstance(doc, dict):
        raise BadRequest("bad-body", "Kubernetes body must be an object")
    refuse_directives(doc)
    tables = tables_for(route.kubernetes, catalog)
    w = workload_of(tables, api, doc)
    namespace = api.namespace if api is not None else None
    if namespace is None:
        meta = as_mapping(doc.get("metadata"), "metadata")
        namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else None
    parts = _Measure(route, tables, inventory, resolver, namespace).object(doc, w)
    return combine(parts, route, catalog)


__all__ = [
    "ApiPath",
    "ClaimResolver",
    "Tables",
    "get_field",
    "measure_object",
    "parse_path",
    "refuse_directives",
    "tables_for",
    "workload_of",
]
