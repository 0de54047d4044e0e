"""Kubernetes API writes -> requested GPUs, model and hours (DOMAIN §5).

Measured resources (from the URL, which the API server trusts over the body's ``kind``):
``jobs`` (pods = ``parallelism``, default 1, at most ``completions``), ``cronjobs`` (one run of
``spec.jobTemplate``), ``pods`` (1), ``deployments``/``replicasets``/``statefulsets``/
``replicationcontrollers`` (``replicas``, default 1), and the ``scale`` subresource of any of them.
Other resources count as zero GPUs unless their body names a GPU resource, which is refused
(``unsupported-kubernetes-resource``): we cannot measure it, so we do not let it through.

GPUs per pod: ``resources.limits`` (or ``requests``, the larger) of ``nvidia.com/gpu``,
``nvidia.com/gpu.shared``, ``amd.com/gpu`` (1 each) and ``nvidia.com/mig-<g>g.<mem>`` (``g``/7 of a
GPU each); containers are summed, an init container runs alone so the pod needs
``max(sum(containers), max(initContainers))``, sidecars (init containers with
``restartPolicy: Always``) are added to both. Model: ``nodeSelector`` on ``nvidia.com/gpu.product``
(or the GKE / Karpenter / AMD equivalents), else required node affinity ``In`` on those labels when
every term constrains it (the most capable of the values counts), else the route's ``gpu_model``.
Hours: the smaller of ``spec.activeDeadlineSeconds`` and the label
``kueue.x-k8s.io/max-exec-time-seconds``, else the route's ``max_hours``.

**The patch rule.** ``POST`` and ``PUT`` carry the whole object and are measured as such. A
``PATCH`` (JSON merge patch, strategic merge patch, server-side apply, or an RFC 6902 JSON patch,
whose ``add``/``replace`` operations are applied to an empty object first) and any write to
``/scale`` are measured from the request alone, because the gate does not know the current object.
The request is measured as the new total if it touches the count (``parallelism``/``replicas``), a
GPU limit in the pod template, ``activeDeadlineSeconds`` or the Kueue label; what it does not say
is filled in as: count 1, GPUs per pod the route's ``assume_gpus_per_pod`` (reason
``gpus-per-pod-assumed``; default 8, one full node), hours ``max_hours``. A patch touching none of
these (labels, ``suspend``) asks for no new compute. JSON patch ``copy``/``move`` into ``/spec``
cannot be measured from the request and is refused (``unmeasurable-patch``).
Job pod templates are immutable after creation, so a patch that raises GPUs per pod is refused by
the API server anyway; the count (``parallelism``) is the field that matters, and it is counted.
"""

from __future__ import annotations

import re
from typing import Any

from ..config import RouteConfig
from ..context import ComputeRequest
from ..errors import BadRequest
from ..gpus import GpuCatalog
from ..inventory import EMPTY_INVENTORY, Inventory
from .common import (
    MAX_MULTIPLIER,
    Part,
    as_list,
    as_mapping,
    bounded,
    combine,
    header,
    load_body,
    number,
    sanitize,
    zero,
)

MODEL_LABELS = (
    "nvidia.com/gpu.product",
    "cloud.google.com/gke-accelerator",
    "karpenter.k8s.aws/instance-gpu-name",
    "amd.com/gpu.product-name",
)
KUEUE_MAX_EXEC = "kueue.x-k8s.io/max-exec-time-seconds"
R_GPUS_ASSUMED = "gpus-per-pod-assumed"

_REPLICATED = {"deployments", "replicasets", "statefulsets", "replicationcontrollers"}
_MEASURED = {"jobs", "cronjobs", "pods", *_REPLICATED}
_MIG = re.compile(r"^nvidia\.com/mig-(\d+)g\.")
_QUANTITY = re.compile(
    r"^\s*\+?(\d+(?:\.\d*)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?\s*$"
)
_SUFFIX = {
    None: 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


# ----------------------------------------------------------------------------- values


def quantity(value: Any, what: str) -> float:
    """A Kubernetes resource quantity (``8``, ``"8"``, ``"1k"``, ``"1000m"``) as a float."""
    if isinstance(value, bool):
        raise BadRequest("bad-value", f"{what}: expected a quantity")
    if isinstance(value, int | float):
        return number(value, what)
    if not isinstance(value, str) or len(value) > 64:
        raise BadRequest("bad-value", f"{what}: expected a quantity")
    m = _QUANTITY.match(value)
    if not m:
        raise BadRequest("bad-value", f"{what}: bad quantity {sanitize(value)!r}")
    suffix = m.group(2)
    scale = float("1" + suffix) if suffix and suffix[0] in "eE" else _SUFFIX[suffix]
    try:
        result = float(m.group(1)) * scale
    except OverflowError:
        raise BadRequest("bad-value", f"{what}: quantity too large") from None
    return number(result, what)


def _gpu_unit(key: Any) -> float | None:
    """GPUs per unit of an extended resource name, ``None`` when it is not a GPU resource."""
    if not isinstance(key, str):
        return None
    k = key.lower()
    if k in ("nvidia.com/gpu", "amd.com/gpu") or k.startswith("nvidia.com/gpu."):
        return 1.0
    if k.startswith("nvidia.com/mig-"):
        m = _MIG.match(k)
        # A MIG slice is g of 7 compute slices; an unreadable profile counts as a whole GPU.
        return min(int(m.group(1)), 7) / 7.0 if m else 1.0
    return None


def _count(value: Any, what: str) -> int:
    return int(bounded(number(value, what), MAX_MULTIPLIER, "bad-value", what))


def _items(value: Any, what: str) -> list[Any]:
    """A list, or the values of a dict (JSON-patch-built objects index lists by position)."""
    if isinstance(value, dict):
        return list(value.values())
    return as_list(value, what)


# ----------------------------------------------------------------------------- pod spec


def _container_gpus(container: Any, what: str) -> float | None:
    c = as_mapping(container, what)
    if c.get("$patch") == "delete":
        return None
    resources = as_mapping(c.get("resources"), f"{what}.resources")
    found: dict[str, float] = {}
    for section in ("limits", "requests"):
        for key, value in as_mapping(resources.get(section), f"{what}.resources.{section}").items():
            unit = _gpu_unit(key)
            if unit is None:
                continue
            n = quantity(value, f"{what}.resources.{section}[{sanitize(str(key))}]")
            k = key.lower()
            found[k] = max(found.get(k, 0.0), n * unit)
    return sum(found.values()) if found else None


def pod_gpus(spec: dict[Any, Any]) -> float | None:
    """GPUs one pod of this spec needs; ``None`` when no container mentions a GPU resource."""
    mentioned = False
    main = 0.0
    for i, c in enumerate(_items(spec.get("containers"), "containers")):
        g = _container_gpus(c, f"containers[{i}]")
        if g is not None:
            mentioned = True
            main += g
    sidecars = 0.0
    init_peak = 0.0
    for i, c in enumerate(_items(spec.get("initContainers"), "initContainers")):
        g = _container_gpus(c, f"initContainers[{i}]")
        if g is None:
            continue
        mentioned = True
        if isinstance(c, dict) and c.get("restartPolicy") == "Always":
            sidecars += g  # a sidecar keeps running next to the main containers
        else:
            init_peak = max(init_peak, g)
    if not mentioned:
        return None
    return max(main, init_peak) + sidecars


def pod_models(spec: dict[Any, Any]) -> tuple[str, ...]:
    """GPU models a pod may be scheduled on (empty: not constrained -> route default)."""
    selector = as_mapping(spec.get("nodeSelector"), "nodeSelector")
    for label in MODEL_LABELS:
        value = selector.get(label)
        if isinstance(value, str) and value:
            return (value,)
    affinity = as_mapping(spec.get("affinity"), "affinity")
    node_aff = as_mapping(affinity.get("nodeAffinity"), "affinity.nodeAffinity")
    required = as_mapping(
        node_aff.get("requiredDuringSchedulingIgnoredDuringExecution"),
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
    )
    terms = _items(required.get("nodeSelectorTerms"), "nodeSelectorTerms")
    models: list[str] = []
    for t, term in enumerate(terms):
        term_models: list[str] = []
        for expr in _items(
            as_mapping(term, f"nodeSelectorTerms[{t}]").get("matchExpressions"), "matchExpressions"
        ):
            e = as_mapping(expr, "matchExpressions[]")
            if e.get("key") in MODEL_LABELS and e.get("operator") == "In":
                term_models.extend(
                    v for v in _items(e.get("values"), "values") if isinstance(v, str)
                )
        if not term_models:
            return ()  # SECURITY: an unconstrained term may land anywhere -> route default
        models.extend(term_models)
    return tuple(dict.fromkeys(models))


# ----------------------------------------------------------------------------- hours


def _deadline_hours(spec: dict[Any, Any], labels: dict[Any, Any]) -> float | None:
    limits: list[float] = []
    if spec.get("activeDeadlineSeconds") is not None:
        limits.append(number(spec["activeDeadlineSeconds"], "activeDeadlineSeconds"))
    if labels.get(KUEUE_MAX_EXEC) is not None:
        limits.append(number(labels[KUEUE_MAX_EXEC], KUEUE_MAX_EXEC))
    return min(limits) / 3600.0 if limits else None


# ----------------------------------------------------------------------------- workloads


class _Workload:
    """The measured facts of one object (or patch): count, pod spec, hours; ``None`` = not said."""

    __slots__ = ("count", "hours", "spec")

    def __init__(self, count: int | None, spec: dict[Any, Any] | None, hours: float | None) -> None:
        self.count = count
        self.spec = spec
        self.hours = hours


def _labels(obj: dict[Any, Any], what: str) -> dict[Any, Any]:
    meta = as_mapping(obj.get("metadata"), f"{what}.metadata")
    return as_mapping(meta.get("labels"), f"{what}.metadata.labels")


def _job(job: dict[Any, Any], extra_labels: dict[Any, Any]) -> _Workload:
    spec = as_mapping(job.get("spec"), "spec")
    count: int | None = None
    if spec.get("parallelism") is not None:
        count = _count(spec["parallelism"], "spec.parallelism")
        if spec.get("completions") is not None:
            count = min(count, _count(spec["completions"], "spec.completions"))
    template = as_mapping(spec.get("template"), "spec.template")
    pod = as_mapping(template.get("spec"), "spec.template.spec") if "spec" in template else None
    labels = {**extra_labels, **_labels(job, "job")}
    return _Workload(count, pod, _deadline_hours(spec, labels))


def _workload(resource: str, obj: dict[Any, Any]) -> _Workload:
    if resource == "jobs":
        return _job(obj, {})
    if resource == "cronjobs":
        spec = as_mapping(obj.get("spec"), "spec")
        template = as_mapping(spec.get("jobTemplate"), "spec.jobTemplate")
        return _job(template, _labels(obj, "cronjob"))
    if resource == "pods":
        pod_spec = as_mapping(obj.get("spec"), "spec") if "spec" in obj else None
        hours = _deadline_hours(pod_spec or {}, _labels(obj, "pod"))
        return _Workload(None, pod_spec, hours)
    spec = as_mapping(obj.get("spec"), "spec")
    count = _count(spec["replicas"], "spec.replicas") if spec.get("replicas") is not None else None
    template = as_mapping(spec.get("template"), "spec.template")
    pod = as_mapping(template.get("spec"), "spec.template.spec") if "spec" in template else None
    return _Workload(count, pod, None)


# ----------------------------------------------------------------------------- JSON patch


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_json_patch(ops: list[Any]) -> dict[Any, Any]:
    """The object an RFC 6902 patch's ``add``/``replace`` operations build on an empty object."""
    root: dict[Any, Any] = {}
    for i, op in enumerate(ops):
        o = as_mapping(op, f"patch[{i}]")
        kind, path = o.get("op"), o.get("path")
        if not isinstance(kind, str) or not isinstance(path, str):
            raise BadRequest("bad-patch", f"patch[{i}]: op and path must be strings")
        if path and not path.startswith("/"):
            raise BadRequest("bad-patch", f"patch[{i}]: bad JSON pointer")
        if kind in ("copy", "move"):
            if path.startswith(("/spec", "/metadata")) or path == "":
                # SECURITY: the copied value lives in the current object, which we cannot see
                raise BadRequest("unmeasurable-patch", f"patch[{i}]: {kind} into {sanitize(path)}")
            continue
        if kind not in ("add", "replace"):
            continue  # remove and test add no compute
        if "value" not in o:
            raise BadRequest("bad-patch", f"patch[{i}]: value missing")
        tokens = [_unescape(t) for t in path.split("/")[1:]]
        if not tokens:
            root = dict(as_mapping(o["value"], "patch value"))
            continue
        node = root
        for tok in tokens[:-1]:
            nxt = node.get(tok)
            if isinstance(nxt, list):
                nxt = {str(j): v for j, v in enumerate(nxt)}
                node[tok] = nxt
            elif not isinstance(nxt, dict):
                nxt = {}
                node[tok] = nxt
            node = nxt
        node[tokens[-1]] = o["value"]
    return root


# ----------------------------------------------------------------------------- routing


def _parse_path(path: str) -> tuple[str | None, str | None, str | None]:
    """(resource, name, subresource) of an API path (``None`` when not namespaced/recognised)."""
    segs = [s for s in path.split("?", 1)[0].split("/") if s]
    if "namespaces" in segs:
        i = segs.index("namespaces")
        rest = segs[i + 2 :]
        if rest:
            return (
                rest[0].lower(),
                rest[1] if len(rest) > 1 else None,
                rest[2].lower() if len(rest) > 2 else None,
            )
    for marker in ("api", "apis"):
        if marker in segs:
            i = segs.index(marker)
            rest = segs[i + (2 if marker == "api" else 3) :]
            if rest:
                return (
                    rest[0].lower(),
                    rest[1] if len(rest) > 1 else None,
                    rest[2].lower() if len(rest) > 2 else None,
                )
    return None, None, None


def _mentions_gpu(doc: Any) -> bool:
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if _gpu_unit(key) is not None:
                    return True
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return False


def measure_kubernetes(
    route: RouteConfig,
    method: str,
    path: str,
    headers: Any,
    body: bytes,
    catalog: GpuCatalog,
    inventory: Inventory = EMPTY_INVENTORY,
) -> ComputeRequest:
    """Measure a Kubernetes write (see the module docstring, including the patch rule)."""
    method = method.upper()
    if method not in ("POST", "PUT", "PATCH"):
        return zero()
    resource, _name, sub = _parse_path(path)
    ctype = (header(headers, "Content-Type") or "").split(";", 1)[0].strip().lower()
    doc = load_body(body, ctype) if body.strip() else {}
    if method == "PATCH" and (ctype == "application/json-patch+json" or isinstance(doc, list)):
        doc = apply_json_patch(doc if isinstance(doc, list) else [])
    if not isinstance(doc, dict):
        raise BadRequest("bad-body", "Kubernetes body must be an object")
    if sub == "status":
        return zero()
    if sub == "scale":
        spec = as_mapping(doc.get("spec"), "spec")
        count = (
            _count(spec["replicas"], "spec.replicas") if spec.get("replicas") is not None else None
        )
        work = _Workload(count, None, None)
        partial = True
    elif resource in _MEASURED and sub is None:
        work = _workload(resource, doc)
        partial = method == "PATCH"
    else:
        if _mentions_gpu(doc):
            raise BadRequest(
                "unsupported-kubernetes-resource",
                f"cannot measure GPUs of {sanitize(resource or path)!r} requests",
            )
        return zero()
    gpus_per_pod = pod_gpus(work.spec) if work.spec is not None else None
    models = pod_models(work.spec) if work.spec is not None else ()
    reasons: tuple[str, ...] = ()
    if partial:
        touched = work.count is not None or gpus_per_pod is not None or work.hours is not None
        if not touched:
            return zero()
        if gpus_per_pod is None:
            gpus_per_pod = float(route.assume_gpus_per_pod)
            reasons = (R_GPUS_ASSUMED,)
    count = 1 if work.count is None else work.count
    hours = route.max_hours if work.hours is None else work.hours
    part = Part(gpus=count * (gpus_per_pod or 0.0), hours=hours, models=models, assumptions=reasons)
    return combine([part], route, catalog)
