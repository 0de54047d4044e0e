"""The entity graph in compressed-row form, built once per load from a ``Collector``.

``build_graph`` validates edge endpoints (dangling and self edges are reported against the row
that produced them), merges alias records into their native entity, merges duplicate
owner->asset edges (the larger share wins; a stated share beats one of unknown size; of shares
stated as bounds, the larger bounds) and builds adjacency in both directions for the computations
in ``resolve.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .model import CONTROL, FULL, Collector, Entity


@dataclass(frozen=True, slots=True)
class BoLimits:
    """Bounds on the look-through search, so one pathological group cannot stall a load."""

    max_depth: int = 32
    max_expansions: int = 5_000  # path steps per entity
    min_product: float = 1e-3  # fraction (0.1 points); thinner paths are not followed


EXACT = BoLimits(max_depth=1_000, max_expansions=10**9, min_product=0.0)


@dataclass(slots=True)
class Graph:
    """Entities (canonical only) and deduplicated edges in compressed-row form, both directions."""

    ids: list[str]
    entities: list[Entity | None]  # None for aliases and never-defined ids
    canon: list[int]
    in_start: list[int]
    in_owner: list[int]
    in_units: list[int]
    in_control: bytearray
    out_start: list[int]
    out_asset: list[int]
    out_units: list[int]
    out_high: dict[int, int]  # out-edge -> upper bound of a share stated as bounds (sparse)
    in_high: dict[int, int]  # the same bounds by in-edge (sparse)
    inexact: set[int]  # assets with a holding of unknown size or stated as bounds
    notes: dict[str, int]

    def stated(self, a: int) -> int:
        """The share units of ``a`` its owners certainly hold (lower bounds; unknown sizes: 0)."""
        return sum(x for x in self.in_units[self.in_start[a] : self.in_start[a + 1]] if x > 0)

    def uncertain_holdings(self, a: int) -> tuple[list[int], list[tuple[int, int, int]]]:
        """The holdings in ``a`` whose size is not one number: the owners of those of unknown
        size, and (owner, lower, upper) of those stated as bounds, in share units."""
        unknown: list[int] = []
        bounded: list[tuple[int, int, int]] = []
        in_owner, in_units, in_high = self.in_owner, self.in_units, self.in_high
        for k in range(self.in_start[a], self.in_start[a + 1]):
            if in_units[k] < 0:
                unknown.append(in_owner[k])
            elif in_high and k in in_high:
                bounded.append((in_owner[k], in_units[k], in_high[k]))
        return unknown, bounded


def _csr(n: int, keys: Iterable[int]) -> tuple[list[int], list[int]]:
    """Counting-sort helper: (start offsets, position of each item in key order)."""
    keys = list(keys)
    start = [0] * (n + 1)
    for k in keys:
        start[k + 1] += 1
    for i in range(n):
        start[i + 1] += start[i]
    fill = start[:-1].copy()
    pos = [0] * len(keys)
    for j, k in enumerate(keys):
        pos[j] = fill[k]
        fill[k] += 1
    return start, pos


def build_graph(col: Collector) -> Graph:
    """Validate edge endpoints (problems go to the edge's source report) and build adjacency."""
    n = len(col.ids)
    canon = list(range(n))
    for alias, target in col.alias_of.items():
        canon[alias] = target
    ents: list[Entity | None] = list(col.entities)
    notes: dict[str, int] = {}
    # Merge alias records into their canonical entity: flags union; the native record wins the
    # rest (it is the operator's own KYC file).
    for alias, target in col.alias_of.items():
        a_ent = ents[alias]
        t_ent = ents[target]
        if a_ent is not None and t_ent is not None:
            if not a_ent.flags <= t_ent.flags:
                t_ent.flags = t_ent.flags | a_ent.flags
            notes["aliases_merged"] = notes.get("aliases_merged", 0) + 1
        elif a_ent is None:
            notes["aliases_unmatched"] = notes.get("aliases_unmatched", 0) + 1
        ents[alias] = None

    owners: list[int] = []
    assets: list[int] = []
    units: list[int] = []
    ctrl = bytearray()
    ids = col.ids
    for j in range(len(col.e_owner)):
        o = canon[col.e_owner[j]]
        a = canon[col.e_asset[j]]
        missing = [ids[x] for x in (o, a) if ents[x] is None]
        if missing:
            rep = col.reports[col.e_source[j]]
            line = col.e_line[j] or None
            which = "owner" if ents[o] is None else "asset"
            rep.bad(line, "", f"{which} {missing[0]!r} is not defined in any source")
            continue
        if o == a:
            rep = col.reports[col.e_source[j]]
            if col.e_owner[j] == col.e_asset[j]:
                rep.bad(col.e_line[j] or None, "", f"entity {ids[o]!r} cannot own itself")
            else:  # two records the native file declared the same entity
                notes["self_edges_merged"] = notes.get("self_edges_merged", 0) + 1
            continue
        owners.append(o)
        assets.append(a)
        units.append(col.e_units[j])
        ctrl.append(col.e_control[j])

    # In-edges, grouped by asset, duplicates merged.
    start, pos = _csr(n, assets)
    m = len(assets)
    s_owner = [0] * m
    s_units = [0] * m
    s_ctrl = bytearray(m)
    for j in range(m):
        p = pos[j]
        s_owner[p] = owners[j]
        s_units[p] = units[j]
        s_ctrl[p] = ctrl[j]
    del owners, assets, units, ctrl, pos
    # Upper bounds by asset and owner (the largest of duplicate rows); sparse, so the loop below
    # pays one test per asset when there are none.
    highs: dict[int, dict[int, int]] = {}
    for j, h in col.e_high.items():
        o, by_owner = canon[col.e_owner[j]], highs.setdefault(canon[col.e_asset[j]], {})
        by_owner[o] = max(by_owner.get(o, 0), h)
    in_start = [0] * (n + 1)
    in_owner: list[int] = []
    in_units: list[int] = []
    in_control = bytearray()
    in_high: dict[int, int] = {}
    dups = overowned = multi_control = 0
    for a in range(n):
        lo, hi = start[a], start[a + 1]
        hs = highs.get(a) if highs else None
        if hi - lo == 1:
            if hs and hs.get(s_owner[lo], -1) > s_units[lo]:
                in_high[len(in_owner)] = hs[s_owner[lo]]
            in_owner.append(s_owner[lo])
            in_units.append(s_units[lo])
            in_control.append(s_ctrl[lo])
        elif hi > lo:
            merged: dict[int, list[int]] = {}
            for k in range(lo, hi):
                cur = merged.get(s_owner[k])
                if cur is None:
                    merged[s_owner[k]] = [s_units[k], s_ctrl[k]]
                else:
                    dups += 1
                    cur[0] = max(cur[0], s_units[k])
                    cur[1] |= s_ctrl[k]
            total = 0
            nctrl = 0
            for o, (u, c) in merged.items():
                if hs and hs.get(o, -1) > u:
                    in_high[len(in_owner)] = hs[o]
                in_owner.append(o)
                in_units.append(u)
                in_control.append(c)
                total += max(u, 0)
                nctrl += c & CONTROL
            overowned += total > FULL
            multi_control += nctrl > 1
        in_start[a + 1] = len(in_owner)
    for key, val in (
        ("duplicate_edges", dups),
        ("overowned", overowned),
        ("multiple_control", multi_control),
    ):
        if val:
            notes[key] = val

    # Out-edges (owner -> asset), for the affiliation worklist.
    in_asset = [0] * len(in_owner)
    for a in range(n):
        for k in range(in_start[a], in_start[a + 1]):
            in_asset[k] = a
    out_start, pos = _csr(n, in_owner)
    out_asset = [0] * len(in_owner)
    out_units = [0] * len(in_owner)
    for k, p in enumerate(pos):
        out_asset[p] = in_asset[k]
        out_units[p] = in_units[k]
    out_high = {pos[k]: h for k, h in in_high.items()}
    inexact = {in_asset[k] for k in in_high}
    inexact.update(in_asset[k] for k, u in enumerate(in_units) if u < 0)
    return Graph(
        ids=ids,
        entities=ents,
        canon=canon,
        in_start=in_start,
        in_owner=in_owner,
        in_units=in_units,
        in_control=in_control,
        out_start=out_start,
        out_asset=out_asset,
        out_units=out_units,
        out_high=out_high,
        in_high=in_high,
        inexact=inexact,
        notes=notes,
    )
