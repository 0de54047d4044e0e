"""One pod spec -> the accelerators one pod of it holds, and the GPU models it may land on.

Accelerators are extended resources (a vendor list below plus ``kubernetes.accelerator_resources``),
each unit counted as the physical devices it can touch: a MIG slice or a time-sliced share
(``nvidia.com/gpu.shared``) touches one whole GPU, a Neuron core one Neuron device. Every other
resource name is refused unless it is known to hold no accelerator: the core resources, a short
list of device plugins that advertise no accelerator (``NOT_ACCELERATORS``), or an operator entry
with ``devices: 0``. A device plugin can advertise GPUs under any name, so an extended resource
nobody describes is not zero accelerators.

The pod's request is what the scheduler reserves: per resource, the larger of the init phase (each
init container plus the sidecars started before it) and the running phase (every app container
plus every sidecar -- init containers with ``restartPolicy: Always``), plus ``spec.overhead``. A
container's amount is the larger of its request and limit (extended resources default requests to
limits). Ephemeral containers may not request resources; one that tries is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ...config import KubernetesAccelerator
from ...context import R_UNMEASURABLE
from ...errors import BadRequest
from ...gpus import GpuCatalog
from ..body import sanitize
from ..common import LOOKS_ACCELERATOR, as_list, as_mapping, number

# name -> physical devices one unit touches; a trailing * is a prefix
VENDOR_ACCELERATORS: tuple[KubernetesAccelerator, ...] = (
    KubernetesAccelerator("nvidia.com/gpu"),
    KubernetesAccelerator("nvidia.com/gpu.shared"),  # time-slicing renamed: one GPU per share
    KubernetesAccelerator("nvidia.com/gpu.*"),
    KubernetesAccelerator("nvidia.com/mig-*"),  # a MIG slice lives on one physical GPU
    KubernetesAccelerator("amd.com/gpu"),
    KubernetesAccelerator("amd.com/gpu*"),
    KubernetesAccelerator("habana.ai/gaudi"),
    KubernetesAccelerator("habana.ai/*"),
    KubernetesAccelerator("aws.amazon.com/neuron"),
    KubernetesAccelerator("aws.amazon.com/neurondevice"),
    KubernetesAccelerator("aws.amazon.com/neuroncore"),  # a core is part of one device
    KubernetesAccelerator("aws.amazon.com/neuron*"),
    KubernetesAccelerator("google.com/tpu"),
    KubernetesAccelerator("cloud-tpus.google.com/*"),
    KubernetesAccelerator("gpu.intel.com/i915"),
    KubernetesAccelerator("gpu.intel.com/xe"),
    KubernetesAccelerator("gpu.intel.com/*"),
    KubernetesAccelerator("qualcomm.com/qaic"),
    # Chips outside the catalog name a model it does not know: priced as its most capable part
    # (``unknown_gpu``), never as the route's default model. A virtual NPU or an sMLU share unit
    # lives on one device, so one device per unit bounds every plugin mode.
    KubernetesAccelerator("huawei.com/Ascend*", model="Huawei-Ascend"),
    KubernetesAccelerator("huawei.com/npu*", model="Huawei-Ascend"),
    KubernetesAccelerator("cambricon.com/mlu*", model="Cambricon-MLU"),
)

# Device plugins that advertise no accelerator (RDMA and EFA network devices, KubeVirt's host
# devices, SGX enclave memory). Exact names except RDMA's, whose names its plugin's configuration
# chooses; a name that looks like an accelerator is refused even here. Operators add theirs as
# ``kubernetes.accelerator_resources`` entries with ``devices: 0``.
NOT_ACCELERATORS: tuple[str, ...] = (
    "rdma/*",
    "vpc.amazonaws.com/efa",
    "vpc.amazonaws.com/pod-eni",
    "vpc.amazonaws.com/privateipv4address",
    "devices.kubevirt.io/kvm",
    "devices.kubevirt.io/tun",
    "devices.kubevirt.io/vhost-net",
    "sgx.intel.com/epc",
    "sgx.intel.com/enclave",
    "sgx.intel.com/provision",
)

# Names that are certainly not accelerators (core resources).
_CORE = re.compile(r"^(cpu|memory|ephemeral-storage|storage|pods|hugepages-[A-Za-z0-9]+)$")

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

MODEL_LABELS = (
    "nvidia.com/gpu.product",
    "cloud.google.com/gke-accelerator",
    "cloud.google.com/gke-tpu-accelerator",
    "karpenter.k8s.aws/instance-gpu-name",
    "amd.com/gpu.product-name",
)


def unmeasurable(what: str, why: str) -> BadRequest:
    """The one refusal for what the gate cannot bound, naming the field path."""
    return BadRequest(R_UNMEASURABLE, f"{sanitize(what, 160)}: {why}")


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


class Accelerators:
    """Resource name -> physical accelerators per unit (operator entries before the vendor list)."""

    __slots__ = ("_catalog", "_exact", "_prefixes")

    def __init__(
        self, extra: Iterable[KubernetesAccelerator] = (), catalog: GpuCatalog | None = None
    ) -> None:
        self._catalog = catalog  # a name that is a catalogued model is an accelerator
        self._exact: dict[str, KubernetesAccelerator] = {}
        self._prefixes: list[tuple[str, KubernetesAccelerator]] = []
        for entry in (*extra, *VENDOR_ACCELERATORS):
            name = entry.name.lower()
            if name.endswith("*"):
                self._prefixes.append((name[:-1], entry))
            else:
                self._exact.setdefault(name, entry)
        # longest prefix first, so that a specific operator entry wins over a vendor wildcard
        self._prefixes.sort(key=lambda p: -len(p[0]))

    def lookup(self, name: str) -> KubernetesAccelerator | None:
        key = name.lower()
        hit = self._exact.get(key)
        if hit is not None:
            return hit
        for prefix, entry in self._prefixes:
            if key.startswith(prefix):
                return entry
        return None

    def unit(self, name: Any, what: str) -> KubernetesAccelerator | None:
        """The entry for a resource name; ``None`` for a non-accelerator; refuses the unknown."""
        if not isinstance(name, str):
            raise BadRequest("bad-value", f"{what}: resource names are strings")
        entry = self.lookup(name)
        if entry is not None:
            return entry if entry.devices > 0 else None
        if _CORE.match(name):
            return None
        named_model = self._catalog is not None and (
            self._catalog.resolve(name.rpartition("/")[2]) is not None
        )
        if named_model or LOOKS_ACCELERATOR.search(name):
            # SECURITY: an accelerator we have no count for is not zero accelerators
            raise unmeasurable(f"{what}[{name}]", "unknown accelerator resource")
        if _no_accelerator(name.lower()):
            return None
        # SECURITY: a device plugin may advertise accelerators under any name
        raise unmeasurable(
            f"{what}[{name}]",
            "unknown extended resource: declare it in kubernetes.accelerator_resources "
            "(devices: 0 for one that holds no accelerator)",
        )


def _no_accelerator(key: str) -> bool:
    return any(
        key.startswith(name[:-1]) if name.endswith("*") else key == name
        for name in NOT_ACCELERATORS
    )


@dataclass(frozen=True, slots=True)
class PodAccelerators:
    """What one pod of a spec holds: physical devices, models named by its resources."""

    devices: float
    models: tuple[str, ...]


def _container(c: Any, what: str, accel: Accelerators, models: set[str]) -> dict[str, float]:
    """Devices per accelerator resource name of one container."""
    cont = as_mapping(c, what)
    if "$patch" in cont:
        # SECURITY: a directive means something only in a strategic-merge patch
        raise unmeasurable(f"{what}.$patch", "patch directive in an object")
    resources = as_mapping(cont.get("resources"), f"{what}.resources")
    found: dict[str, float] = {}
    for section in ("limits", "requests"):
        amounts = as_mapping(resources.get(section), f"{what}.resources.{section}")
        for key, value in amounts.items():
            where = f"{what}.resources.{section}"
            entry = accel.unit(key, where)
            if entry is None:
                continue
            n = quantity(value, f"{where}[{sanitize(str(key))}]")
            name = str(key).lower()
            found[name] = max(found.get(name, 0.0), n * entry.devices)
            if entry.model:
                models.add(entry.model)
    return found


def _add(into: dict[str, float], more: Mapping[str, float]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0.0) + v


def pod_accelerators(spec: dict[Any, Any], what: str, accel: Accelerators) -> PodAccelerators:
    """The devices one pod of ``spec`` holds, as the scheduler reserves them."""
    models: set[str] = set()
    running: dict[str, float] = {}
    for i, c in enumerate(as_list(spec.get("containers"), f"{what}.containers")):
        _add(running, _container(c, f"{what}.containers[{i}]", accel, models))
    init_peak: dict[str, float] = {}
    sidecars: dict[str, float] = {}
    for i, c in enumerate(as_list(spec.get("initContainers"), f"{what}.initContainers")):
        own = _container(c, f"{what}.initContainers[{i}]", accel, models)
        if isinstance(c, dict) and c.get("restartPolicy") == "Always":
            _add(sidecars, own)  # a sidecar keeps running beside everything after it
            continue
        phase = dict(sidecars)
        _add(phase, own)
        for k, v in phase.items():
            init_peak[k] = max(init_peak.get(k, 0.0), v)
    _add(running, sidecars)
    for i, c in enumerate(as_list(spec.get("ephemeralContainers"), f"{what}.ephemeralContainers")):
        cont = as_mapping(c, f"{what}.ephemeralContainers[{i}]")
        if as_mapping(cont.get("resources"), f"{what}.ephemeralContainers[{i}].resources"):
            raise unmeasurable(
                f"{what}.ephemeralContainers[{i}].resources",
                "ephemeral containers get no resources",
            )
    total = {k: max(running.get(k, 0.0), init_peak.get(k, 0.0)) for k in {*running, *init_peak}}
    for key, value in as_mapping(spec.get("overhead"), f"{what}.overhead").items():
        entry = accel.unit(key, f"{what}.overhead")
        if entry is not None:
            n = quantity(value, f"{what}.overhead[{sanitize(str(key))}]") * entry.devices
            total[str(key).lower()] = total.get(str(key).lower(), 0.0) + n
    return PodAccelerators(sum(total.values()), tuple(sorted(models)))


def node_selector(spec: dict[Any, Any], what: str) -> dict[str, str]:
    sel = as_mapping(spec.get("nodeSelector"), f"{what}.nodeSelector")
    return {str(k): v for k, v in sel.items() if isinstance(v, str)}


def pod_models(spec: dict[Any, Any], what: str) -> tuple[str, ...]:
    """GPU models a pod may be scheduled on by its node labels (empty: not constrained)."""
    selector = node_selector(spec, what)
    for label in MODEL_LABELS:
        value = selector.get(label)
        if value:
            return (value,)
    affinity = as_mapping(spec.get("affinity"), f"{what}.affinity")
    node_aff = as_mapping(affinity.get("nodeAffinity"), f"{what}.affinity.nodeAffinity")
    required = as_mapping(
        node_aff.get("requiredDuringSchedulingIgnoredDuringExecution"),
        f"{what}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
    )
    terms = as_list(required.get("nodeSelectorTerms"), f"{what}.nodeSelectorTerms")
    models: list[str] = []
    for t, term in enumerate(terms):
        term_models: list[str] = []
        exprs = as_mapping(term, f"{what}.nodeSelectorTerms[{t}]").get("matchExpressions")
        for expr in as_list(exprs, f"{what}.nodeSelectorTerms[{t}].matchExpressions"):
            e = as_mapping(expr, f"{what}.matchExpressions[]")
            if e.get("key") in MODEL_LABELS and e.get("operator") == "In":
                values = as_list(e.get("values"), f"{what}.matchExpressions[].values")
                term_models.extend(v for v in values if isinstance(v, str))
        if not term_models:
            return ()  # SECURITY: an unconstrained term may land anywhere -> route default
        models.extend(term_models)
    return tuple(dict.fromkeys(models))


def pod_claims(spec: dict[Any, Any], what: str) -> list[tuple[str, str, str]]:
    """A pod's DRA claims as (field path, kind, name): ``ResourceClaim`` or
    ``ResourceClaimTemplate`` (``resourceClaimName`` / ``resourceClaimTemplateName``, or the
    older ``source`` wrapper)."""
    out: list[tuple[str, str, str]] = []
    for i, c in enumerate(as_list(spec.get("resourceClaims"), f"{what}.resourceClaims")):
        where = f"{what}.resourceClaims[{i}]"
        claim = as_mapping(c, where)
        source = as_mapping(claim.get("source"), f"{where}.source") or claim
        for key, kind in (
            ("resourceClaimName", "ResourceClaim"),
            ("resourceClaimTemplateName", "ResourceClaimTemplate"),
        ):
            name = source.get(key)
            if isinstance(name, str) and name:
                out.append((f"{where}.{key}", kind, name))
                break
        else:
            raise unmeasurable(where, "a resource claim names neither a claim nor a template")
    return out


__all__ = [
    "MODEL_LABELS",
    "NOT_ACCELERATORS",
    "VENDOR_ACCELERATORS",
    "Accelerators",
    "PodAccelerators",
    "node_selector",
    "pod_accelerators",
    "pod_claims",
    "pod_models",
    "quantity",
    "unmeasurable",
]
