"""One job's request (``Ask``) -> a sound upper bound of what slurmctld could allocate (``Part``).

The bound answers "at most how many accelerators, of which model, for how long". Where the job's
own fields leave a count open, the inventory closes it (the partition's nodes, the accelerators
of each node); where neither does, the job is refused -- never counted as nothing:

- nodes: the largest node count given; with no maximum, Slurm may add nodes for tasks, CPUs or a
  host list, so the bound is the largest of those (each node holds at least one of each); a
  spread job, or a count nobody gave, is every node of the partition;
- per-node GPUs x nodes, per-task GPUs x tasks, per-job GPUs as given; per-socket GPUs are a
  node's GPUs (the socket count of a node is not known here); shards and MPS units land on one
  device each, so they touch at most min(units, the job's nodes x GPUs per node) devices (per
  job and without a maximum node count: the units, as Slurm may add nodes for them);
- ``ntasks-per-gpu``: tasks / tasks-per-GPU rounded up, at least one per node;
- whole-node jobs (exclusive, ``shared`` other than ``oversubscribe``, specialised cores) get
  every GPU of their nodes, as does every job on an ``exclusive`` pool (a partition with
  ``OverSubscribe=EXCLUSIVE``, whatever the job asks);
- a per-job count beside per-node counts: Slurm spreads the per-job GPUs over as many nodes as
  the smallest per-node count needs, and gives each of those nodes its per-node GPUs;
- the sum of all that is capped by what the partition holds (and by the job's nodes' GPUs when a
  maximum node count is given); hours by the partition's ``max_hours``;
- the partition names the model (a pool's nodes hold its model, whatever GPU type a request
  names); a partition neither the inventory nor the catalog knows is an unknown model (priced
  as the catalog's most capable part), never the route's default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ...config import RouteConfig
from ...gpus import GpuCatalog
from ...inventory import Inventory, Pool
from ..common import Part
from . import schema as s
from .fields import Ask, unmeasurable
from .gres import GPU

# Assumptions a bound may rest on (``compute.assumptions``).
A_PER_NODE = "gpus-per-node-from-inventory"
A_NODES_INVENTORY = "nodes-from-inventory"
A_HOURS = "hours-from-route-max"
A_HOURS_POOL = "hours-from-inventory"
A_HOSTLIST = "nodes-from-hostlist"
A_SHARES = "gpus-from-shards"
A_TASKS = "gpus-from-tasks"
A_UPDATE = "update-bounded-by-inventory"


class Site:
    """What a bound is taken against: the route, the catalog and the inventory. A site lives for
    one request; ``targets`` holds the places each partition list read in it may run."""

    __slots__ = ("catalog", "inventory", "route", "targets")

    def __init__(self, route: RouteConfig, catalog: GpuCatalog, inventory: Inventory) -> None:
        self.route = route
        self.catalog = catalog
        self.inventory = inventory
        self.targets: dict[str | None, list[_Target]] = {}


@dataclass(frozen=True, slots=True)
class _Target:
    """One place the job may run: a pool (or none known) and the model names it may land on."""

    pool: Pool | None
    models: tuple[str, ...]


def _targets(ask: Ask, site: Site) -> list[_Target]:
    """Where the job may run: a function of its partition list and the site alone (both
    readings of a job, body alone and over its block, mostly name the same list)."""
    targets = site.targets.get(ask.partition)
    if targets is None:
        targets = site.targets[ask.partition] = _find_targets(ask.partition, site)
    return targets


def _find_targets(partition: str | None, site: Site) -> list[_Target]:
    route_pool = site.inventory.entry(site.route.inventory)
    if not partition:
        return [_Target(route_pool, (route_pool.model.name,) if route_pool else ())]
    targets: list[_Target] = []
    for raw in partition.split(","):
        name = raw.strip()
        if not name:
            continue
        pool = site.inventory.slurm_partition(name)
        if pool is not None:
            targets.append(_Target(pool, (pool.model.name,)))
        elif route_pool is not None:
            named = (name,) if site.catalog.resolve(name) is not None else ()
            targets.append(_Target(route_pool, (route_pool.model.name, *named)))
        else:
            # SECURITY: a partition nothing describes names an unknown model (priced as the
            # most capable part), never silently the route's default model
            targets.append(_Target(None, (name,)))
    return targets or [_Target(route_pool, (route_pool.model.name,) if route_pool else ())]


def _need_pool(pool: Pool | None, path: str, why: str) -> Pool:
    if pool is None:
        raise unmeasurable(path, f"{why}, and the inventory does not describe the partition")
    return pool


def _nodes(ask: Ask, pool: Pool | None, notes: set[str]) -> int:
    explicit = max(ask.nodes.values()) if ask.nodes else None
    n: int | None
    n = explicit if ask.max_nodes_given() else max(explicit or 1, ask.tasks or 1, ask.min_cpus or 1)
    if ask.hosts is not None and (n is None or ask.hosts > n):
        n = ask.hosts
        notes.add(A_HOSTLIST)
    if ask.spread and not ask.max_nodes_given():
        n = None
    if n is None:
        path = ask.paths.get(s.SPREAD) or ask.paths.get(s.FLAGS) or "job"
        n = _need_pool(pool, path, "the node count is open").nodes
        notes.add(A_NODES_INVENTORY)
    n = max(n, 1)
    return min(n, pool.nodes) if pool is not None else n


def _tasks(ask: Ask, nodes: int) -> int | None:
    """Tasks of the job; ``None`` when only per-core/socket/board counts make them."""
    per_node = (ask.tasks_per_node or 0) * nodes
    if ask.tasks is not None:
        return max(ask.tasks, per_node)
    if per_node:
        return per_node
    return None if ask.tasks_per_other else nodes


def _gpus(ask: Ask, pool: Pool | None, nodes: int, notes: set[str]) -> float:
    tasks = _tasks(ask, nodes)
    node_gpus = nodes * pool.per_node if pool is not None else None
    by_unit: dict[str, float] = {}
    node_counts: list[float] = []  # the whole-device counts given per node, one per role
    for role, specs in ask.gpus.items():
        unit = s.GPU_ROLES[role][0]
        devices: float = 0  # as ``sum`` would give: 0 with nothing to add
        shares: float = 0
        for spec in specs:
            if spec.kind == GPU:
                devices += spec.count
            else:
                shares += spec.count
        if not devices and not shares:
            continue
        if devices and unit == s.NODE:
            node_counts.append(float(devices))
        mult = (
            1 if unit == s.JOB else nodes if unit == s.NODE else tasks if unit == s.TASK else None
        )
        if mult is None:  # per socket, or per task with an open task count
            why = "GPUs per socket" if unit == s.SOCKET else "the task count is open"
            where = ask.paths[role]
            total = float(nodes * _need_pool(pool, where, why).per_node)
            notes.add(A_PER_NODE)
        else:
            total = devices * mult
            if shares:
                touched = shares * mult
                # shares per node or task stay on the job's nodes; shares per job may make
                # Slurm add nodes, so only what the partition holds caps them (``_cap``)
                on_nodes = unit != s.JOB or ask.max_nodes_given()
                if on_nodes and node_gpus is not None:
                    touched = min(touched, node_gpus)
                total += touched
                notes.add(A_SHARES)
        by_unit[unit] = by_unit.get(unit, 0.0) + total
    gpus = max(by_unit.values(), default=0.0)
    per_job = by_unit.get(s.JOB)
    spread = nodes
    if per_job and node_counts and not ask.max_nodes_given():
        spread = max(nodes, math.ceil(per_job / min(node_counts)))
        gpus = max(gpus, float(sum(node_counts) * spread))
    if ask.tasks_per_gpu is not None:
        path = ask.paths[s.TASKS_PER_GPU]
        if ask.tasks_per_gpu == 0:
            raise unmeasurable(path, "zero tasks per GPU")
        if tasks is None:
            derived = float(nodes * _need_pool(pool, path, "the task count is open").per_node)
            notes.add(A_PER_NODE)
        else:
            # at least one GPU on each node the job is held to (a node count or host list
            # given); otherwise Slurm places the tasks on as few nodes as their GPUs need
            held = max([*ask.nodes.values(), ask.hosts or 0, 1])
            derived = float(max(math.ceil(tasks / ask.tasks_per_gpu), min(held, nodes)))
            notes.add(A_TASKS)
        gpus = max(gpus, derived)
    if ask.whole or (pool is not None and pool.exclusive):
        named = [ask.paths[r] for r in (s.EXCLUSIVE, s.SHARED, s.WHOLE) if r in ask.paths]
        whole = _need_pool(
            pool, named[0] if named else "job", "a whole-node job gets every GPU of its nodes"
        )
        # the nodes it needs for its GPUs (a per-job count may span more nodes than asked),
        # each whole
        needed = max(spread, math.ceil(gpus / whole.per_node)) if whole.per_node else spread
        gpus = float(needed * whole.per_node)
        notes.add(A_PER_NODE)
    return gpus


def _cap(ask: Ask, pool: Pool | None, nodes: int, gpus: float) -> float:
    if pool is None:
        return gpus
    cap = pool.accelerators
    if ask.max_nodes_given():
        cap = min(cap, nodes * pool.per_node)
    return min(gpus, float(cap))


def _hours(ask: Ask, pool: Pool | None, route: RouteConfig, notes: set[str]) -> float:
    pool_max = pool.max_hours if pool is not None else None
    if ask.time_given and ask.minutes is not None:
        hours = ask.minutes / 60.0
    elif pool_max is not None:
        hours = pool_max
        notes.add(A_HOURS_POOL)
    else:
        hours = route.max_hours
        notes.add(A_HOURS)
    return min(hours, pool_max) if pool_max is not None else hours


def bound(ask: Ask, site: Site) -> Part:
    """The bound of one job (all its array tasks), over every partition it may run in."""
    gpus = hours = 0.0
    models: list[str] = []
    notes: set[str] = set()
    for target in _targets(ask, site):
        pool = target.pool
        nodes = _nodes(ask, pool, notes)
        gpus = max(gpus, _cap(ask, pool, nodes, _gpus(ask, pool, nodes, notes)))
        hours = max(hours, _hours(ask, pool, site.route, notes))
        models.extend(target.models)
        if pool is None:
            # GPU types the request names count where no pool says what the nodes hold; a
            # pool's nodes hold its model whatever type name a request uses
            for specs in ask.gpus.values():
                models.extend([m.model for m in specs if m.model])
    array = ask.array or 1
    return Part(gpus * array, hours, tuple(dict.fromkeys(models)), _sorted(notes))


def _covers(a: Part, b: Part) -> bool:
    """Whether ``a`` rests on every assumption ``b`` does."""
    return a.assumptions == b.assumptions or set(a.assumptions).issuperset(b.assumptions)


def _sorted(notes: set[str]) -> tuple[str, ...]:
    return tuple(sorted(notes)) if notes else ()


def bound_update(ask: Ask, site: Site, path: str) -> Part:
    """A job update: the job it produces. Only neutral fields change nothing; otherwise the
    current job is not known here, so every accelerator the partition (or the given maximum
    node count) holds is the bound."""
    if not ask.paths:
        return Part(0.0, 0.0)
    notes = {A_UPDATE}
    gpus = hours = 0.0
    models: list[str] = []
    for target in _targets(ask, site):
        pool = _need_pool(target.pool, path, "a job update changes a job not known here")
        nodes = min(max(ask.nodes.values()), pool.nodes) if ask.max_nodes_given() else pool.nodes
        gpus = max(gpus, _cap(ask, pool, nodes, float(pool.accelerators)))
        hours = max(hours, _hours(ask, pool, site.route, notes))
        models.extend(target.models)
    return Part(gpus * (ask.array or 1), hours, tuple(dict.fromkeys(models)), tuple(sorted(notes)))


def larger(parts: Sequence[Part]) -> Part:
    """The larger of the readings of one job (body alone, body over a script's ``#SBATCH``
    block), each as ``bound`` gives it (models without repeats, assumptions sorted)."""
    if len(parts) == 1:
        return parts[0]
    # A reading that grants no accelerator does not lengthen the others.
    counted = [p for p in parts if p.gpus > 0] or list(parts)
    first = counted[0]
    if len(counted) == 1:
        return first  # the one reading that grants accelerators: nothing to merge
    if len(counted) == 2:
        # the usual pair: when one reading is at least the other in every respect (and names
        # the same models in the same order) it is the merge below
        a, b = counted
        if a.models == b.models:
            if a.gpus >= b.gpus and a.hours >= b.hours and _covers(a, b):
                return a
            if b.gpus >= a.gpus and b.hours >= a.hours and _covers(b, a):
                return b
    gpus, hours = first.gpus, first.hours
    models: dict[str, None] = {}
    notes: set[str] = set()
    for p in counted:
        gpus, hours = max(gpus, p.gpus), max(hours, p.hours)
        models.update(dict.fromkeys(p.models))
        notes.update(p.assumptions)
    return Part(gpus, hours, tuple(models), _sorted(notes))
