"""What one job asks for (``Ask``), filled field by field from a body or an ``#SBATCH`` block.

Every field arrives as (role, value, path); ``apply`` reads the value the way Slurm does for that
role and records it. Counts keep the last value given for the same role (Slurm's options
overwrite each other in the order read); exclusivity is sticky (any request for a whole node
counts, whatever came after it, which can only over-estimate). Values that cannot be read are
refused with the field's path in the message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...context import R_UNMEASURABLE
from ...errors import BadRequest
from ..body import sanitize
from ..common import (
    MAX_MULTIPLIER,
    bounded,
    number,
    parse_array_count,
    parse_node_count,
    parse_slurm_time,
)
from . import schema as s
from .gres import GpuSpec, gpus_option_specs, host_count, tres_specs


@dataclass(slots=True)
class Ask:
    """One job's request; ``None`` is "not given". ``paths`` name the field behind each role."""

    gpus: dict[str, tuple[GpuSpec, ...]] = field(default_factory=dict)  # by GPU role
    nodes: dict[str, int] = field(default_factory=dict)  # NODES / MIN_NODES / MAX_NODES
    tasks: int | None = None
    tasks_per_node: int | None = None
    tasks_per_gpu: int | None = None
    tasks_per_other: bool = False
    min_cpus: int | None = None
    hosts: int | None = None
    whole: bool = False
    spread: bool = False
    time_given: bool = False
    minutes: float | None = None
    array: int | None = None
    partition: str | None = None
    paths: dict[str, str] = field(default_factory=dict)

    def copy(self) -> Ask:
        """A copy whose containers can change without touching this one."""
        return Ask(
            dict(self.gpus),
            dict(self.nodes),
            self.tasks,
            self.tasks_per_node,
            self.tasks_per_gpu,
            self.tasks_per_other,
            self.min_cpus,
            self.hosts,
            self.whole,
            self.spread,
            self.time_given,
            self.minutes,
            self.array,
            self.partition,
            dict(self.paths),
        )

    def max_nodes_given(self) -> bool:
        """Whether a maximum node count was given (``nodes`` or ``maximum_nodes``)."""
        return s.NODES in self.nodes or s.MAX_NODES in self.nodes


def unmeasurable(path: str, why: str) -> BadRequest:
    """The refusal of what cannot be bounded; ``path`` (client text) is made safe here."""
    return BadRequest(R_UNMEASURABLE, f"{sanitize(path, 200)}: {why}")


def _int(value: Any, path: str) -> int | None:
    """A Slurm integer (number, numeric string, ``{set, infinite, number}``); ``None``: unset."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("set") is False:
            return None
        if value.get("infinite") is True:
            raise unmeasurable(path, "an infinite count cannot be bounded")
        value = value.get("number")
        if value is None:
            return None
    n = number(value, path)
    return int(bounded(n, MAX_MULTIPLIER, "bad-value", path))


def _time(value: Any, path: str) -> tuple[bool, float | None]:
    """(given, minutes or ``None`` for no limit) from a time limit in any of Slurm's shapes."""
    if isinstance(value, dict):
        if value.get("set") is False:
            return False, None
        if value.get("infinite") is True:
            return True, None
        if "number" not in value:
            return False, None
        value = value["number"]
    if isinstance(value, str):
        return True, parse_slurm_time(value)
    minutes = number(value, path, allow_str=False)
    return True, (None if minutes == 0 else minutes)


def _text(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest("bad-value", f"{path}: expected a string")
    return str(value)


def _gpus(role: str, value: Any, path: str) -> tuple[GpuSpec, ...]:
    _, syntax = s.GPU_ROLES[role]
    if value is None or value == "":
        return ()
    if syntax == "gpus" and not isinstance(value, bool) and isinstance(value, int | float):
        return (GpuSpec(float(_int(value, path) or 0)),)
    if not isinstance(value, str):
        raise BadRequest("unknown-gpu-syntax", f"{path}: expected a string")
    return gpus_option_specs(value) if syntax == "gpus" else tres_specs(value, path)


def _nodes(value: Any, path: str) -> int | None:
    if isinstance(value, str):
        return parse_node_count(value) if value.strip() else None
    if isinstance(value, list):  # v0.0.37/38: [minimum, maximum]
        if len(value) != 2:
            raise BadRequest("bad-nodes", f"{path}: expected [minimum, maximum]")
        counts = [_int(v, path) for v in value]
        return max(c or 0 for c in counts)
    return _int(value, path)


def _hosts(value: Any, path: str) -> int | None:
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise BadRequest("bad-value", f"{path}: expected a list of host names")
        value = ",".join(value)
    if not isinstance(value, str):
        raise BadRequest("bad-value", f"{path}: expected a host list")
    return host_count(value, path) if value.strip() else None


_SHARING = frozenset({"false", "oversubscribe"})


def _exclusive(value: Any) -> bool:
    """Whether an ``exclusive`` value asks for whole nodes (anything but an explicit "share")."""
    if value is None or value is False:
        return False
    return not (isinstance(value, str) and value.strip().lower() in _SHARING)


def _shared(value: Any, path: str) -> bool:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise BadRequest("bad-value", f"{path}: expected sharing flags")
    return any(v.strip().lower() not in _SHARING for v in items)


def _flags(value: Any, path: str) -> bool:
    """Whether job ``flags`` spread the job; unknown flags are refused."""
    items = value if isinstance(value, list) else [value]
    spread = False
    for item in items:
        if not isinstance(item, str) or item.upper() not in s.KNOWN_FLAGS:
            shown = sanitize(str(item))
            raise unmeasurable(path, f"unknown job flag {shown!r}")
        spread = spread or item.upper() in s.SPREAD_FLAGS
    return spread


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no")
    return bool(value)


def _set_nodes(ask: Ask, role: str, value: Any, path: str) -> None:
    n = _nodes(value, path)
    if n is None:
        ask.nodes.pop(role, None)
    else:
        ask.nodes[role] = n


def _set_time(ask: Ask, role: str, value: Any, path: str) -> None:
    ask.time_given, ask.minutes = _time(value, path)


def _set_array(ask: Ask, role: str, value: Any, path: str) -> None:
    text = _text(value, path) if value is not None else ""
    ask.array = parse_array_count(text) if text.strip() else None


def _set_partition(ask: Ask, role: str, value: Any, path: str) -> None:
    text = _text(value, path) if value is not None else ""
    ask.partition = text.strip() or None


def _set_int(name: str) -> Callable[[Ask, str, Any, str], None]:
    def setter(ask: Ask, role: str, value: Any, path: str) -> None:
        setattr(ask, name, _int(value, path))

    return setter


def _set_whole(read: Callable[[Any, str], bool]) -> Callable[[Ask, str, Any, str], None]:
    def setter(ask: Ask, role: str, value: Any, path: str) -> None:
        ask.whole = read(value, path) or ask.whole

    return setter


def _set_spread(read: Callable[[Any, str], bool]) -> Callable[[Ask, str, Any, str], None]:
    def setter(ask: Ask, role: str, value: Any, path: str) -> None:
        ask.spread = read(value, path) or ask.spread

    return setter


def _set_gpus(ask: Ask, role: str, value: Any, path: str) -> None:
    ask.gpus[role] = _gpus(role, value, path)


def _set_hosts(ask: Ask, role: str, value: Any, path: str) -> None:
    ask.hosts = _hosts(value, path)


def _set_open_tasks(ask: Ask, role: str, value: Any, path: str) -> None:
    ask.tasks_per_other = _int(value, path) is not None


def _local_cluster_only(ask: Ask, role: str, value: Any, path: str) -> None:
    # SECURITY: a federated job may be run by another cluster, whose hardware the inventory
    # does not describe
    if value not in (None, "", []):
        raise unmeasurable(path, "a job for other clusters of a federation cannot be bounded")


def _ignore(ask: Ask, role: str, value: Any, path: str) -> None:
    """Sharing allowed (``oversubscribe``): never lowers the bound."""


_SETTERS: dict[str, Callable[[Ask, str, Any, str], None]] = {
    **dict.fromkeys(s.GPU_ROLES, _set_gpus),
    **dict.fromkeys((s.NODES, s.MIN_NODES, s.MAX_NODES), _set_nodes),
    s.TASKS: _set_int("tasks"),
    s.TASKS_PER_NODE: _set_int("tasks_per_node"),
    s.TASKS_PER_GPU: _set_int("tasks_per_gpu"),
    s.TASKS_PER_OTHER: _set_open_tasks,
    s.MIN_CPUS: _set_int("min_cpus"),
    s.HOSTS: _set_hosts,
    s.EXCLUSIVE: _set_whole(lambda value, path: _exclusive(value)),
    s.SHARED: _set_whole(_shared),
    s.WHOLE: _set_whole(lambda value, path: _int(value, path) is not None),
    s.SPREAD: _set_spread(lambda value, path: _truthy(value)),
    s.FLAGS: _set_spread(_flags),
    s.TIME: _set_time,
    s.ARRAY: _set_array,
    s.PARTITION: _set_partition,
    s.OVERSUBSCRIBE: _ignore,
    s.FEDERATION: _local_cluster_only,
}
# What each role sets besides ``gpus``, ``nodes``, ``whole`` and ``spread`` (see ``overlay``).
_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    s.TASKS: ("tasks",),
    s.TASKS_PER_NODE: ("tasks_per_node",),
    s.TASKS_PER_GPU: ("tasks_per_gpu",),
    s.TASKS_PER_OTHER: ("tasks_per_other",),
    s.MIN_CPUS: ("min_cpus",),
    s.HOSTS: ("hosts",),
    s.TIME: ("time_given", "minutes"),
    s.ARRAY: ("array",),
    s.PARTITION: ("partition",),
}


def apply(ask: Ask, role: str, value: Any, path: str) -> None:
    """Record one field (``path``, of ``role``) in ``ask``."""
    if role == s.NEUTRAL:
        return
    setter = _SETTERS.get(role)
    if setter is None:  # DISABLED and anything a table does not know
        raise unmeasurable(path, "field refused by slurmrestd or not measurable")
    ask.paths[role] = path
    setter(ask, role, value, path)


def overlay(base: Ask, top: Ask) -> Ask:
    """``top``'s fields over ``base``'s, as sbatch puts a command line over a script: each role
    ``top`` gives replaces ``base``'s; a TRES role replaces every GPU role of its unit (it is the
    scheduler's whole request for that unit); whole-node and spread requests stay."""
    out = base.copy()
    for role, specs in top.gpus.items():
        if role.startswith("tres-"):
            unit = s.GPU_ROLES[role][0]
            for other in [r for r in out.gpus if s.GPU_ROLES[r][0] == unit]:
                del out.gpus[other]
        out.gpus[role] = specs
    for role in top.paths:
        if role in (s.NODES, s.MIN_NODES, s.MAX_NODES):
            if role in top.nodes:
                out.nodes[role] = top.nodes[role]
            else:
                out.nodes.pop(role, None)
        for name in _ATTRIBUTES.get(role, ()):
            setattr(out, name, getattr(top, name))
    out.whole = base.whole or top.whole
    out.spread = base.spread or top.spread
    out.paths.update(top.paths)
    return out
