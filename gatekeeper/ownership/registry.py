"""The loaded entity registry: every ownership profile precomputed, looked up in O(1).

``load_registry(cfg)`` reads every source, validates edges across sources, resolves the graph once
(``resolve.py``) and returns an immutable ``Registry``; hot reload builds a new one and swaps it, so
a broken source leaves the running registry in place.

Bad-row rule: the native file is strict (any problem fails the load). FtM and CSL files are bulk
data: each bad row is reported with ``file:line`` and loading continues; an FtM source with more
than ``entities.max_bad_rows`` bad rows fails the load, with every kept problem in the
``ConfigError``. A CSL file is published weekly by a third party, so one unreadable row must not
stop the gate: its bad rows fail the load only when they also outnumber the rows read (then the
file is not the CSL as published). Either way the counts are in ``stats['sources']`` and every
kept problem is logged — nothing is dropped silently. Rows kept with a caveat (an FtM share that
cannot be read becomes a holding of unknown size) are logged as warnings and counted.

Holdings are judged on a day (``as_of``, the load date unless given): FtM ownership dates decide
whether a holding counts, so the same files can resolve differently on another day, and the day
is part of ``Registry.version``.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import orjson

from ..config import EntitiesConfig
from ..context import OwnershipProfile
from ..errors import ConfigError, Problem
from .model import AFFILIATION_FLAGS, LISTING_FLAGS, Collector
from .resolve import BoLimits, build_graph, resolve
from .sources import LOADERS

log = logging.getLogger("gatekeeper.entities")
#: Warnings logged per source and load; every one is counted in the stats' ``notes``.
MAX_LOGGED = 20


class Registry:
    """Resolved ownership profiles by entity id (aliases included); immutable once built."""

    __slots__ = ("_count", "_profiles", "stats", "version")

    def __init__(
        self, profiles: dict[str, OwnershipProfile], count: int, version: str, stats: dict[str, Any]
    ) -> None:
        self._profiles = profiles
        self._count = count
        self.version = version
        self.stats = stats

    def profile(self, entity_id: str) -> OwnershipProfile:
        """The entity's profile; an unknown id gets ``known=False`` (the policy decides)."""
        p = self._profiles.get(entity_id)
        return p if p is not None else OwnershipProfile(id=entity_id, known=False)

    def get(self, entity_id: str) -> OwnershipProfile | None:
        """The entity's profile, or None when the registry does not know the id."""
        return self._profiles.get(entity_id)

    def profiles(self) -> Iterator[tuple[str, OwnershipProfile]]:
        """Every entity's (id, profile), aliases left out (they answer with their target)."""
        for entity_id, p in self._profiles.items():
            if p.id == entity_id:
                yield entity_id, p

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._profiles

    def __len__(self) -> int:
        return self._count


def load_registry(
    cfg: EntitiesConfig, *, limits: BoLimits | None = None, as_of: date | None = None
) -> Registry:
    """Load and resolve every source of ``cfg``; ``ConfigError`` lists every problem found.

    ``as_of``: the day holdings are judged on (default: today, UTC).
    """
    # The load allocates millions of acyclic containers; generational GC passes over an ever
    # larger heap would make it superlinear, and there are no cycles to collect.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(cfg, limits, as_of)
    finally:
        if was_enabled:
            gc.enable()


def _load(cfg: EntitiesConfig, limits: BoLimits | None, as_of: date | None) -> Registry:
    t0 = time.perf_counter()
    col = Collector(as_of)
    listing = cfg.listing_flags
    listing_flags = LISTING_FLAGS if listing is None else frozenset(listing)
    per_flag = cfg.affiliation_flags
    affiliation_flags = AFFILIATION_FLAGS if per_flag is None else frozenset(per_flag)
    hasher = hashlib.sha256()
    hasher.update(
        orjson.dumps(
            {
                "threshold": cfg.beneficial_owner_threshold,
                "listing": sorted(listing_flags),
                "affiliation": sorted(affiliation_flags),
                "sources": [[s.format, s.path] for s in cfg.sources],
                "as_of": col.as_of.isoformat(),
            }
        )
    )
    fatal: list[str] = []
    for i, src in enumerate(cfg.sources):
        col.add_report(
            src.path, src.format, strict=src.format == "native", lenient=src.format == "csl"
        )
        loader = LOADERS.get(src.format)
        if loader is None:
            fatal.append(str(Problem(src.path, None, "format", f"unknown format {src.format!r}")))
            continue
        hasher.update(b"\0source\0")
        try:
            loader(src.path, col, i, hasher)
        except ConfigError as exc:
            fatal.extend(exc.problems)
    t_load = time.perf_counter()
    graph = build_graph(col)  # reports dangling and self edges to their sources
    problems = list(fatal)
    for rep in col.reports:
        if rep.strict and rep.bad_rows:
            problems.extend(str(p) for p in rep.problems)
        elif rep.lenient and rep.bad_rows <= max(cfg.max_bad_rows, rep.entities):
            for p in rep.problems:
                log.warning("entities: skipped %s", p)
        elif rep.bad_rows > cfg.max_bad_rows:
            problems.extend(str(p) for p in rep.problems)
            if rep.bad_rows > len(rep.problems):
                problems.append(f"{rep.path}: ... {rep.bad_rows - len(rep.problems)} more bad rows")
            problems.append(
                f"{rep.path}: {rep.bad_rows} bad rows, more than entities.max_bad_rows="
                f"{cfg.max_bad_rows}"
                + (f" and more than the {rep.entities} rows read" if rep.lenient else "")
            )
    if problems:
        raise ConfigError(problems)
    for rep in col.reports:
        for p in rep.warnings[:MAX_LOGGED]:
            log.warning("entities: %s", p)
        if len(rep.warnings) > MAX_LOGGED:
            log.warning("entities: %s: ... more warnings (notes: %s)", rep.path, rep.notes)
    profiles, rstats = resolve(
        graph,
        listing_flags=listing_flags,
        affiliation_flags=affiliation_flags,
        bo_threshold=cfg.beneficial_owner_threshold,
        limits=limits or BoLimits(),
    )
    count = rstats["entities"]
    t_end = time.perf_counter()
    stats: dict[str, Any] = {
        "sources": [rep.to_json() for rep in col.reports],
        **rstats,
        "listing_flags": sorted(listing_flags),
        "affiliation_flags": sorted(affiliation_flags),
        "load_seconds": round(t_load - t0, 3),
        "resolve_seconds": round(t_end - t_load, 3),
    }
    return Registry(profiles, count, "sha256:" + hasher.hexdigest(), stats)
