"""The inventory: what the schedulers behind the gate can physically grant.

Operators declare, per Slurm partition group, Kubernetes node pool or Ray cluster, how many nodes
there are, which accelerators (catalog model, count) each node holds, how many shares (Slurm
shards, MPS units, time-slices) each device is cut into, the longest job allowed, and whether a
Slurm pool gives every job whole nodes. Adapters use it to turn requests into sound upper bounds:
a whole-node job (or any job on an exclusive pool) gets every accelerator of its nodes,
a share lands on at most one physical device per share, no request gets more than its pool holds,
and the pool names the model when the request does not.

The inventory is configuration (``inventory:`` in ``gatekeeper.yaml``); this module checks it
against the GPU catalog (every model must be catalogued: an operator declares real hardware) and
answers look-ups. It is immutable and rebuilt with the snapshot on reload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from .config import InventoryEntry
from .errors import ConfigError, Problem
from .gpus import GpuCatalog, GpuModel


@dataclass(frozen=True, slots=True)
class Pool:
    """One inventory entry, resolved against the catalog."""

    name: str
    scheduler: str
    nodes: int
    model: GpuModel
    per_node: int  # accelerators per node
    shards_per_gpu: int
    mps_per_gpu: int
    max_hours: float | None
    partitions: tuple[str, ...]
    node_selector: Mapping[str, str]
    exclusive: bool = False  # every job gets whole nodes (Slurm OverSubscribe=EXCLUSIVE)

    @property
    def accelerators(self) -> int:
        """Every accelerator of the pool: the cap on any one request."""
        return self.nodes * self.per_node


class Inventory:
    """Pools by name, Slurm partition and Kubernetes node labels. Empty when not configured."""

    __slots__ = ("_by_name", "_by_partition", "digest", "pools")

    def __init__(self, pools: Iterable[Pool] = ()) -> None:
        self.pools: tuple[Pool, ...] = tuple(pools)
        self._by_name = {p.name: p for p in self.pools}
        self._by_partition = {part: p for p in self.pools for part in p.partitions}
        self.digest = _digest(self.pools)

    def __len__(self) -> int:
        return len(self.pools)

    def entry(self, name: str | None) -> Pool | None:
        """The pool called ``name`` (a route's ``inventory:``), or ``None``."""
        return self._by_name.get(name) if name is not None else None

    def slurm_partition(self, partition: str) -> Pool | None:
        """The pool that holds Slurm partition ``partition``, or ``None``."""
        return self._by_partition.get(partition)

    def kubernetes_pool(self, labels: Mapping[str, str]) -> list[Pool]:
        """Kubernetes pools whose ``node_selector`` is satisfied by ``labels`` (a pod's
        ``nodeSelector``): every pool the pod may be scheduled on."""
        return [
            p
            for p in self.pools
            if p.scheduler == "kubernetes"
            and p.node_selector
            and all(labels.get(k) == v for k, v in p.node_selector.items())
        ]

    def for_scheduler(self, scheduler: str) -> list[Pool]:
        """Every pool of one scheduler kind (``slurm``, ``kubernetes``, ``ray``)."""
        return [p for p in self.pools if p.scheduler == scheduler]


def build_inventory(
    entries: Iterable[InventoryEntry], catalog: GpuCatalog, source: str = "<config>"
) -> Inventory:
    """Resolve configured entries against ``catalog``; every problem raised at once."""
    problems: list[Problem] = []
    pools: list[Pool] = []
    for i, entry in enumerate(entries):
        accel = entry.node.accelerators
        model = catalog.resolve(accel.model)
        if model is None:
            problems.append(
                Problem(
                    source,
                    None,
                    f"inventory[{i}].node.accelerators.model",
                    f"{accel.model!r} is not in the GPU catalog",
                )
            )
            continue
        pools.append(
            Pool(
                name=entry.name,
                scheduler=entry.scheduler,
                nodes=entry.nodes,
                model=model,
                per_node=accel.count,
                shards_per_gpu=entry.node.shards_per_gpu,
                mps_per_gpu=entry.node.mps_per_gpu,
                max_hours=entry.max_hours,
                partitions=entry.partitions,
                node_selector=dict(entry.node_selector),
                exclusive=entry.exclusive,
            )
        )
    if problems:
        raise ConfigError(problems)
    return Inventory(pools)


def _digest(pools: tuple[Pool, ...]) -> str:
    doc = [
        [
            p.name,
            p.scheduler,
            p.nodes,
            p.model.name,
            p.per_node,
            p.shards_per_gpu,
            p.mps_per_gpu,
            p.max_hours,
            list(p.partitions),
            sorted(p.node_selector.items()),
            p.exclusive,
        ]
        for p in pools
    ]
    return "sha256:" + hashlib.sha256(orjson.dumps(doc)).hexdigest()


EMPTY_INVENTORY = Inventory()

__all__ = ["EMPTY_INVENTORY", "Inventory", "Pool", "build_inventory"]
