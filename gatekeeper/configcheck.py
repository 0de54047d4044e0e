"""Configuration rules that span several keys, run after every key has been checked alone.

Route names and issuers are unique; a generic route has its section and valid JSON pointers; each
audit sink has what its type needs; inventory entries are unique, a Slurm partition belongs to one
entry, a route names an entry of its own scheduler and a Ray route must name one; Kubernetes
tables parse and the admission listener is served over TLS on a port of its own. Every problem
goes to the loader's ``Ctx`` with its line, so all of them are reported together.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .configload import Ctx
from .jsonpointer import PointerError, parse_pointer
from .yamlsrc import LocDict, LocList, line_of

if TYPE_CHECKING:
    from .config import (
        Config,
        GenericAdapterConfig,
        InventoryEntry,
        KubernetesConfig,
        RouteConfig,
    )


def cross_checks(cfg: Config, raw: LocDict, ctx: Ctx) -> None:
    """Rules that span several keys."""
    seen: set[str] = set()
    raw_routes = raw.get("routes") if isinstance(raw.get("routes"), list) else LocList()
    for i, route in enumerate(cfg.routes):
        line = line_of(raw_routes, i, raw.line)
        if route.name in seen:
            ctx.err(line, f"routes[{i}].name", f"duplicate route name {route.name!r}")
        seen.add(route.name)
        if route.adapter == "generic" and route.generic is None:
            ctx.err(line, f"routes[{i}].generic", "adapter generic needs a 'generic:' section")
        if route.generic is not None:
            _check_pointers(route.generic, ctx, line, f"routes[{i}].generic")
    raw_issuers = (
        raw.get("identity", {}).get("issuers", LocList())
        if isinstance(raw.get("identity"), dict)
        else LocList()
    )
    names: set[str] = set()
    for i, iss in enumerate(cfg.identity.issuers):
        line = line_of(raw_issuers, i, raw.line)
        if (iss.jwks_file is None) == (iss.jwks_url is None):
            ctx.err(
                line, f"identity.issuers[{i}]", "exactly one of jwks_file and jwks_url is needed"
            )
        if iss.issuer in names:
            ctx.err(line, f"identity.issuers[{i}].issuer", f"duplicate issuer {iss.issuer!r}")
        names.add(iss.issuer)
    raw_sinks = (
        raw.get("audit", {}).get("sinks", LocList())
        if isinstance(raw.get("audit"), dict)
        else LocList()
    )
    for i, sink in enumerate(cfg.audit.sinks):
        line = line_of(raw_sinks, i, raw.line)
        if sink.type == "file" and sink.path is None:
            ctx.err(line, f"audit.sinks[{i}].path", "a file sink needs a path")
        if sink.type == "redis_stream" and sink.url is None:
            ctx.err(line, f"audit.sinks[{i}].url", "a redis_stream sink needs a url")
    _check_inventory(cfg, raw, ctx)
    _check_kubernetes(cfg, raw, ctx)
    if (
        cfg.listen.port != 0
        and cfg.listen.port == cfg.admin.port
        and (cfg.listen.host == cfg.admin.host)
    ):
        ctx.err(raw.line_of("admin"), "admin.port", "the admin listener needs its own port")


def _check_inventory(cfg: Config, raw: LocDict, ctx: Ctx) -> None:
    """Inventory names are unique, a Slurm partition belongs to one entry, routes name entries
    of their own scheduler."""
    raw_inv = raw.get("inventory") if isinstance(raw.get("inventory"), list) else LocList()
    by_name: dict[str, InventoryEntry] = {}
    partitions: dict[str, str] = {}
    for i, entry in enumerate(cfg.inventory):
        line = line_of(raw_inv, i, raw.line)
        if entry.name in by_name:
            ctx.err(line, f"inventory[{i}].name", f"duplicate inventory name {entry.name!r}")
        by_name[entry.name] = entry
        if entry.scheduler != "slurm" and entry.partitions:
            ctx.err(line, f"inventory[{i}].partitions", "only slurm entries have partitions")
        if entry.scheduler != "slurm" and entry.exclusive:
            ctx.err(line, f"inventory[{i}].exclusive", "only slurm entries are exclusive")
        if entry.scheduler != "kubernetes" and entry.node_selector:
            ctx.err(line, f"inventory[{i}].node_selector", "only kubernetes entries select nodes")
        for name in entry.partitions:
            if name in partitions and partitions[name] != entry.name:
                ctx.err(
                    line,
                    f"inventory[{i}].partitions",
                    f"partition {name!r} is already in inventory entry {partitions[name]!r}",
                )
            partitions.setdefault(name, entry.name)
    raw_routes = raw.get("routes") if isinstance(raw.get("routes"), list) else LocList()
    for i, route in enumerate(cfg.routes):
        line = line_of(raw_routes, i, raw.line)
        _check_ray_pool(route, i, line, ctx)
        if route.inventory is None:
            continue
        target = by_name.get(route.inventory)
        if target is None:
            ctx.err(line, f"routes[{i}].inventory", f"no inventory entry {route.inventory!r}")
        elif route.adapter in ("slurm", "kubernetes", "ray") and target.scheduler != route.adapter:
            ctx.err(
                line,
                f"routes[{i}].inventory",
                f"inventory entry {route.inventory!r} is for {target.scheduler}, "
                f"the route's adapter is {route.adapter}",
            )


def _check_ray_pool(route: RouteConfig, i: int, line: int | None, ctx: Ctx) -> None:
    """A Ray route needs the cluster's pool: a job's code reserves GPUs it never declares."""
    if route.adapter != "ray":
        if route.unsafe_ray_without_inventory:
            ctx.err(line, f"routes[{i}].unsafe_ray_without_inventory", "only for adapter ray")
        return
    if route.inventory is None and not route.unsafe_ray_without_inventory:
        ctx.err(
            line,
            f"routes[{i}].inventory",
            f"Ray route {route.name!r} names no inventory pool: a job's code can reserve any GPU "
            "of the cluster, which only the pool bounds; declare the cluster's nodes as an "
            "inventory entry with scheduler: ray and name it here (unsafe_ray_without_inventory: "
            "true counts declared GPUs only)",
        )


def _check_kubernetes(cfg: Config, raw: LocDict, ctx: Ctx) -> None:
    """Kubernetes table paths parse; the admission listener's inventory entry exists."""
    from .adapters.kubernetes.kinds import check_tables

    sections: list[tuple[str, KubernetesConfig, Any]] = [
        ("kubernetes", cfg.kubernetes, raw.get("kubernetes"))
    ]
    routes_node = raw.get("routes")
    raw_routes: list[Any] = routes_node if isinstance(routes_node, list) else []
    for i, route in enumerate(cfg.routes):
        if route.kubernetes is not None:
            raw_route = raw_routes[i] if i < len(raw_routes) else None
            own = raw_route.get("kubernetes") if isinstance(raw_route, dict) else None
            sections.append((f"routes[{i}].kubernetes", route.kubernetes, own))
    for path, section, node in sections:
        for key, message in check_tables(section):
            ctx.err(_line_at(node, key, raw.line), f"{path}.{key}", message)
    adm = cfg.admission
    if adm is not None:
        line = raw.line_of("admission")
        names = {e.name: e for e in cfg.inventory}
        if adm.inventory is not None and adm.inventory not in names:
            ctx.err(line, "admission.inventory", f"no inventory entry {adm.inventory!r}")
        elif adm.inventory is not None and names[adm.inventory].scheduler != "kubernetes":
            ctx.err(line, "admission.inventory", f"{adm.inventory!r} is not a kubernetes entry")
        if adm.tls is None:
            ctx.err(line, "admission.tls", "the admission webhook is served over TLS only")
        if adm.port != 0 and adm.port in (cfg.listen.port, cfg.admin.port):
            ctx.err(line, "admission.port", "the admission listener needs its own port")


def _line_at(node: Any, key: str, default: int | None) -> int | None:
    """The line of ``key`` (``a[0].b``) inside a located mapping, as deep as it can be found."""
    line = line_of(node, None, default)
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        index: str | int = int(part[1:-1]) if part.startswith("[") else part
        found = (isinstance(node, dict) and index in node) or (
            isinstance(node, list) and isinstance(index, int) and index < len(node)
        )
        if not found:
            break
        line, node = line_of(node, index, line), node[index]
    return line


def inherit_kubernetes(cfg: Config) -> Config:
    """Kubernetes routes without their own ``kubernetes:`` take the top-level section."""
    routes = tuple(
        replace(r, kubernetes=cfg.kubernetes)
        if r.adapter == "kubernetes" and r.kubernetes is None
        else r
        for r in cfg.routes
    )
    return replace(cfg, routes=routes)


def _check_pointers(generic: GenericAdapterConfig, ctx: Ctx, line: int | None, path: str) -> None:
    for name in ("gpus_pointer", "model_pointer", "hours_pointer"):
        pointer = getattr(generic, name)
        if pointer is None:
            continue
        try:
            parse_pointer(pointer)
        except PointerError as exc:
            ctx.err(line, f"{path}.{name}", f"not a JSON pointer: {exc}")


__all__ = ["cross_checks", "inherit_kubernetes"]
