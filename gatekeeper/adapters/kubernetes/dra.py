"""Dynamic Resource Allocation (``resource.k8s.io``): the devices a claim asks for.

A ResourceClaim (``spec.devices.requests``) or ResourceClaimTemplate (``spec.spec.devices...``)
lists device requests. Shapes by API version: ``v1alpha3``/``v1beta1`` put ``deviceClassName``,
``allocationMode`` and ``count`` on the request (``v1beta1`` may instead give ``firstAvailable``
alternatives); ``v1beta2``/``v1`` put them under ``exactly`` or ``firstAvailable``. A request is
``count`` devices (default 1) of its class, the largest alternative of ``firstAvailable``;
``allocationMode: All`` takes every matching device, which only the inventory can bound (the
devices of one node). The device class names the accelerator: a built-in list of drivers' classes
plus ``kubernetes.device_classes``; an unknown class is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...config import KubernetesAccelerator
from ..common import as_list, as_mapping, number
from .pods import unmeasurable

# Device classes of public DRA drivers: GPUs (and MIG slices, one GPU each) count one device per
# allocated device; NVIDIA's ComputeDomain channels are not accelerators.
VENDOR_CLASSES: tuple[KubernetesAccelerator, ...] = (
    KubernetesAccelerator("gpu.nvidia.com"),
    KubernetesAccelerator("mig.nvidia.com"),
    KubernetesAccelerator("vfio.gpu.nvidia.com"),
    KubernetesAccelerator("compute-domain-daemon.nvidia.com", devices=0),
    KubernetesAccelerator("compute-domain-default-channel.nvidia.com", devices=0),
    KubernetesAccelerator("gpu.amd.com"),
    KubernetesAccelerator("gpu.intel.com"),
    KubernetesAccelerator("neuron.aws.com"),
    KubernetesAccelerator("tpu.google.com"),
    KubernetesAccelerator("gpu.example.com"),  # the dra-example-driver of the Kubernetes docs
)


class DeviceClasses:
    """DeviceClass name -> devices per allocated device and model (operator entries first)."""

    __slots__ = ("_by_name",)

    def __init__(self, extra: Iterable[KubernetesAccelerator] = ()) -> None:
        self._by_name: dict[str, KubernetesAccelerator] = {}
        for entry in (*extra, *VENDOR_CLASSES):
            self._by_name.setdefault(entry.name, entry)

    def counts_none(self, name: Any) -> bool:
        """Whether claims of class ``name`` are counted as no accelerator."""
        entry = self._by_name.get(name) if isinstance(name, str) else None
        return entry is not None and entry.devices <= 0

    def get(self, name: Any, what: str) -> KubernetesAccelerator:
        if not isinstance(name, str) or not name:
            raise unmeasurable(what, "a device request names no device class")
        entry = self._by_name.get(name)
        if entry is None:
            # SECURITY: a device class we cannot count may be any number of accelerators
            raise unmeasurable(what, f"unknown device class {name[:64]!r}")
        return entry


class ClaimDevices:
    """The devices of one claim: ``devices`` counted, ``unbounded`` when any request takes
    ``All`` devices of a class, ``models`` the classes name."""

    __slots__ = ("devices", "models", "unbounded")

    def __init__(self) -> None:
        self.devices = 0.0
        self.unbounded = False
        self.models: set[str] = set()


def _one(req: dict[Any, Any], what: str, classes: DeviceClasses, out: ClaimDevices) -> float:
    """Devices of one exact request (``deviceClassName``, ``allocationMode``, ``count``)."""
    entry = classes.get(req.get("deviceClassName"), f"{what}.deviceClassName")
    if entry.devices <= 0:
        return 0.0
    if entry.model:
        out.models.add(entry.model)
    mode = req.get("allocationMode", "ExactCount")
    if mode == "All":
        out.unbounded = True
        return 0.0
    if mode != "ExactCount":
        raise unmeasurable(f"{what}.allocationMode", f"unknown allocation mode {str(mode)[:32]!r}")
    count = number(req.get("count", 1), f"{what}.count", allow_str=False)
    return count * entry.devices


def claim_devices(spec: Any, what: str, classes: DeviceClasses) -> ClaimDevices:
    """Devices a claim spec (``{devices: {requests: [...]}}``) asks for, in any known shape."""
    out = ClaimDevices()
    devices = as_mapping(as_mapping(spec, what).get("devices"), f"{what}.devices")
    for i, r in enumerate(as_list(devices.get("requests"), f"{what}.devices.requests")):
        where = f"{what}.devices.requests[{i}]"
        req = as_mapping(r, where)
        alternatives = as_list(req.get("firstAvailable"), f"{where}.firstAvailable")
        if "exactly" in req:
            out.devices += _one(
                as_mapping(req["exactly"], f"{where}.exactly"), f"{where}.exactly", classes, out
            )
        elif alternatives:
            # the scheduler takes the first that fits: any of them may be the one
            best = 0.0
            for j, alt in enumerate(alternatives):
                sub = f"{where}.firstAvailable[{j}]"
                best = max(best, _one(as_mapping(alt, sub), sub, classes, out))
            out.devices += best
        else:
            out.devices += _one(req, where, classes, out)
    return out


def object_claim(obj: dict[Any, Any], kind: str, classes: DeviceClasses) -> ClaimDevices:
    """The devices of a ResourceClaim or ResourceClaimTemplate object."""
    spec = as_mapping(obj.get("spec"), "spec")
    if kind == "ResourceClaimTemplate":
        return claim_devices(spec.get("spec"), "spec.spec", classes)
    return claim_devices(spec, "spec", classes)


__all__ = ["VENDOR_CLASSES", "ClaimDevices", "DeviceClasses", "claim_devices", "object_claim"]
