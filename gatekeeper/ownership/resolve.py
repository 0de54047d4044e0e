"""The ownership computation of DOMAIN §4, done once per load over the whole graph.

``build_graph`` turns a ``Collector`` into compact adjacency arrays (aliases merged, dangling and
self edges reported against the row that produced them, duplicate owner→asset edges merged), and
``resolve`` computes, for every entity:

1. **Affiliation (50% rule)** — the *least fixpoint* of "listed, or the direct shares held by
   affiliated owners sum to ≥ 50". A worklist adds each newly affiliated owner's shares to its
   assets exactly once, so it is O(edges) and terminates on cycles. Never a product of percentages.
   Each jurisdiction's rule aggregates only its own lists, so there is one fixpoint per family:
   the US rule over ``listing_flags`` (``affiliated``, ``listed_share``, ``listed_via``), and one
   per flag of ``affiliation_flags`` seeded by that flag alone (``affiliated_flags``). The per-flag
   runs are sparse (they touch only what their seeds reach), run only for flags some entity
   carries, reuse an identical seed set's result, and, when a flag's seeds are all US listings,
   stay inside the US result (the least fixpoint is monotone in its seeds).
2. **listed_via / affiliated paths** — a backward BFS from the entity through owners that are
   affiliated and hold a non-zero share; every listed entity reached is a listing that reaches it,
   and the BFS tree gives the shortest path (entity first, listed entity last).
3. **Ultimate parent** — follow the controlling owner (the ``control`` edge, which beats equity;
   otherwise the single owner holding > 50%) until none; on a cycle, stop before revisiting. Chains
   are memoised, so the whole pass is O(entities + total path length).
4. **Beneficial owners** — look-through ownership: the sum over simple upward paths of the product
   of shares, credited to natural persons and top entities (no equity owners). Depth, expansions and
   negligible products are bounded (``BoLimits``); every truncation is counted in the stats.

Edges duplicated across rows (the same owner and asset twice) keep the larger share; that is
reported as ``duplicate_edges``. Assets whose shares add up to more than 100% are counted as
``overowned`` and resolved as given (for the parent, the largest holding wins, ties by id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any

from ..context import License, OwnershipProfile
from .model import FULL, HALF, SCALE, Collector, Entity

MAX_PATHS = 16  # affiliated paths kept per profile (listed_via itself is complete)


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
    notes: dict[str, int]


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
    in_start = [0] * (n + 1)
    in_owner: list[int] = []
    in_units: list[int] = []
    in_control = bytearray()
    dups = overowned = multi_control = 0
    for a in range(n):
        lo, hi = start[a], start[a + 1]
        if hi - lo == 1:
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
                in_owner.append(o)
                in_units.append(u)
                in_control.append(c)
                total += u
                nctrl += c
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
        notes=notes,
    )


# ------------------------------------------------------------------------------ the computations


def affiliation(g: Graph, listed: bytearray) -> tuple[bytearray, list[int]]:
    """Least fixpoint of the 50% rule: (affiliated flags, share units held by affiliated owners)."""
    n = len(g.ids)
    aff = bytearray(listed)
    acc = [0] * n
    out_start, out_asset, out_units = g.out_start, g.out_asset, g.out_units
    stack = [i for i in range(n) if listed[i]]
    while stack:
        o = stack.pop()
        for k in range(out_start[o], out_start[o + 1]):
            a = out_asset[k]
            acc[a] += out_units[k]
            if not aff[a] and acc[a] >= HALF:
                aff[a] = 1
                stack.append(a)
    return aff, acc


def affiliated_set(g: Graph, seeds: Iterable[int], bound: bytearray | None = None) -> set[int]:
    """The least fixpoint of the 50% rule seeded by ``seeds`` alone, as a set of entities.

    Sparse: only assets the seeds reach are touched, so a flag carried by a handful of entities
    costs a handful of edges, not a pass over the graph. ``bound`` (optional) is a superset of the
    answer known in advance — the fixpoint of a superset of ``seeds`` — and prunes the rest.
    """
    aff = set(seeds)
    acc: dict[int, int] = {}
    get = acc.get
    out_start, out_asset, out_units = g.out_start, g.out_asset, g.out_units
    stack = list(aff)
    while stack:
        o = stack.pop()
        for k in range(out_start[o], out_start[o + 1]):
            a = out_asset[k]
            if a in aff or (bound is not None and not bound[a]):
                continue
            total = get(a, 0) + out_units[k]
            acc[a] = total
            if total >= HALF:
                aff.add(a)
                stack.append(a)
    return aff


def flag_affiliation(
    g: Graph, seeds_by_flag: dict[str, list[int]], listed: bytearray, aff: bytearray
) -> tuple[dict[int, frozenset[str]], dict[str, int], int]:
    """Per-flag 50% rules: (flags reaching each entity, entities per flag, fixpoints run).

    ``listed``/``aff`` are the US rule's seeds and result, shared where a flag's seeds allow it.
    Entities no flag reaches are absent from the first map.
    """
    n_listed = listed.count(1)
    memo: dict[frozenset[int], Sequence[int] | set[int]] = {}
    reached: dict[int, list[str]] = {}
    counts: dict[str, int] = {}
    runs = 0
    for flag in sorted(seeds_by_flag):
        seeds = seeds_by_flag[flag]
        key = frozenset(seeds)
        members = memo.get(key)
        if members is None:
            if all(listed[i] for i in key):
                if len(key) == n_listed:
                    members = list(compress(range(len(aff)), aff))  # the US rule's own seeds
                else:
                    members = affiliated_set(g, key, bound=aff)
                    runs += 1
            else:
                members = affiliated_set(g, key)
                runs += 1
            memo[key] = members
        counts[flag] = len(members)
        for i in members:
            got = reached.get(i)
            if got is None:
                reached[i] = [flag]
            else:
                got.append(flag)
    interned: dict[frozenset[str], frozenset[str]] = {}
    out: dict[int, frozenset[str]] = {}
    for i, flags in reached.items():
        fs = frozenset(flags)
        out[i] = interned.setdefault(fs, fs)
    return out, counts, runs


def controlling_owners(g: Graph) -> list[int]:
    """Per entity: the control-edge holder, else the owner with > 50%, else -1."""
    n = len(g.ids)
    ids = g.ids
    ctrl = [-1] * n
    in_start, in_owner, in_units, in_control = g.in_start, g.in_owner, g.in_units, g.in_control
    for a in range(n):
        best = -1
        best_u = 0
        for k in range(in_start[a], in_start[a + 1]):
            o = in_owner[k]
            if in_control[k]:
                best = o  # control beats equity; the native loader rejects a second control edge
                break
            u = in_units[k]
            if u > HALF and (best < 0 or u > best_u or (u == best_u and ids[o] < ids[best])):
                best, best_u = o, u
        ctrl[a] = best
    return ctrl


def parent_paths(g: Graph, ctrl: list[int]) -> tuple[list[tuple[str, ...]], list[int]]:
    """Per entity: the chain of ids up to its ultimate parent, and that parent (cycle-safe)."""
    n = len(g.ids)
    ids = g.ids
    paths: list[tuple[str, ...] | None] = [None] * n
    top = list(range(n))
    for s in range(n):
        if paths[s] is not None:
            continue
        seq: list[int] = []
        pos: dict[int, int] = {}
        x = s
        while x != -1 and paths[x] is None and x not in pos:
            pos[x] = len(seq)
            seq.append(x)
            x = ctrl[x]
        tail: tuple[str, ...]
        if x == -1:
            tail = ()
            t = seq[-1]
        elif paths[x] is not None:
            tail = paths[x]  # type: ignore[assignment]
            t = top[x]
        else:
            # A cycle seq[j:]: from each member, go round once and stop before revisiting.
            j = pos[x]
            cyc = seq[j:]
            m = len(cyc)
            for k in range(m):
                paths[cyc[k]] = tuple(ids[cyc[(k + d) % m]] for d in range(m))
                top[cyc[k]] = cyc[(k + m - 1) % m]
            seq = seq[:j]
            tail = paths[x]  # type: ignore[assignment]
            t = top[x]
        for i in range(len(seq) - 1, -1, -1):
            tail = (ids[seq[i]], *tail)
            paths[seq[i]] = tail
            top[seq[i]] = t
    return paths, top  # type: ignore[return-value]


def listed_reach(
    g: Graph, aff: bytearray, listed: bytearray, e: int
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(listed ids reaching ``e``, shortest path to each, entity first) via affiliated owners."""
    ids = g.ids
    in_start, in_owner, in_units = g.in_start, g.in_owner, g.in_units
    prev: dict[int, int] = {e: -1}
    queue = [e]
    found: list[int] = [e] if listed[e] else []
    for x in queue:
        for k in range(in_start[x], in_start[x + 1]):
            o = in_owner[k]
            if in_units[k] <= 0 or not aff[o] or o in prev:
                continue
            prev[o] = x
            queue.append(o)
            if listed[o]:
                found.append(o)
    if not found:
        return (), ()
    via = tuple(sorted(ids[f] for f in found))
    paths = []
    for f in found[:MAX_PATHS]:  # BFS order: shortest first
        chain = []
        x = f
        while x != -1:
            chain.append(ids[x])
            x = prev[x]
        chain.reverse()
        paths.append(tuple(chain))
    return via, tuple(paths)


def beneficial(
    g: Graph, e: int, is_person: bytearray, limits: BoLimits
) -> tuple[dict[int, float], bool]:
    """Look-through shares (fractions) of persons/top entities in ``e``; (result, truncated).

    An explicit-stack DFS over simple upward paths (no recursion, no closures: a load builds a
    million of these and must not leave reference cycles behind).
    """
    in_start, in_owner, in_units = g.in_start, g.in_owner, g.in_units
    res: dict[int, float] = {}
    on_path = {e}
    budget = limits.max_expansions
    min_p = limits.min_product
    max_depth = limits.max_depth
    truncated = False
    # frame: [node, product, depth, next in-edge, end of in-edges, has an equity owner]
    lo = in_start[e + 1] if is_person[e] else in_start[e]
    frames: list[list[Any]] = [[e, 1.0, 0, lo, in_start[e + 1], False]]
    while frames:
        f = frames[-1]
        x, prod, depth, k, hi, has_owner = f
        pushed = False
        while k < hi:
            u = in_units[k]
            o = in_owner[k]
            k += 1
            if u <= 0:
                continue
            has_owner = True
            if o in on_path:
                continue
            p = prod * u / FULL
            if p < min_p or p == 0.0:
                continue  # a documented approximation, not a truncation
            if depth >= max_depth or budget <= 0:
                truncated = True
                continue
            budget -= 1
            f[3] = k
            f[5] = True
            on_path.add(o)
            olo = in_start[o + 1] if is_person[o] else in_start[o]
            frames.append([o, p, depth + 1, olo, in_start[o + 1], False])
            pushed = True
            break
        if pushed:
            continue
        frames.pop()
        if x != e:
            on_path.discard(x)
            if not has_owner:
                res[x] = res.get(x, 0.0) + prod
    return res, truncated


def resolve(
    g: Graph,
    *,
    listing_flags: frozenset[str],
    affiliation_flags: frozenset[str] = frozenset(),
    bo_threshold: float,
    limits: BoLimits = BoLimits(),
) -> tuple[dict[str, OwnershipProfile], dict[str, Any]]:
    """Every profile, keyed by id (aliases map to their canonical profile), and resolve stats."""
    n = len(g.ids)
    ids, ents = g.ids, g.entities
    listed = bytearray(n)
    is_person = bytearray(n)
    seeds_by_flag: dict[str, list[int]] = {}
    for i, ent in enumerate(ents):
        if ent is not None:
            fl = ent.flags
            if fl:
                if not listing_flags.isdisjoint(fl):
                    listed[i] = 1
                if not affiliation_flags.isdisjoint(fl):
                    for f in affiliation_flags.intersection(fl):
                        seeds_by_flag.setdefault(f, []).append(i)
            if ent.kind == "person":
                is_person[i] = 1
    aff, acc = affiliation(g, listed)
    # Only flags some entity carries get a fixpoint; the rest reach nobody.
    flags_reaching, flag_counts, flag_runs = flag_affiliation(g, seeds_by_flag, listed, aff)
    no_flags: frozenset[str] = frozenset()
    ctrl = controlling_owners(g)
    ppaths, tops = parent_paths(g, ctrl)

    threshold = bo_threshold / 100.0
    in_start, in_units = g.in_start, g.in_units
    out: dict[str, OwnershipProfile] = {}
    frozen_cache: dict[frozenset[str], frozenset[str]] = {}
    empty_lic: tuple[License, ...] = ()
    bo_truncated = 0
    counts = {"entities": 0, "listed": 0, "affiliated": 0, "with_parent": 0}
    for i in range(n):
        ent = ents[i]
        if ent is None:
            continue
        counts["entities"] += 1
        # listed_via only when some affiliated owner holds a share, or the entity is listed.
        via: tuple[str, ...] = ()
        apaths: tuple[tuple[str, ...], ...] = ()
        if listed[i] or acc[i] > 0:
            via, apaths = listed_reach(g, aff, listed, i)
        bos: tuple[tuple[str, float], ...] = ()
        if in_start[i + 1] > in_start[i] and any(
            in_units[k] > 0 for k in range(in_start[i], in_start[i + 1])
        ):
            shares, trunc = beneficial(g, i, is_person, limits)
            bo_truncated += trunc
            if shares:
                bos = tuple(
                    sorted(
                        (
                            (ids[o], round(s * 100.0, 6))
                            for o, s in shares.items()
                            if s >= threshold
                        ),
                        key=lambda t: (-t[1], t[0]),
                    )
                )
        path = ppaths[i]
        parent = ents[tops[i]]
        assert parent is not None  # parents are reached over edges between defined entities
        # The headquarters test looks at the parent's HQ; an organisation without a recorded HQ
        # is taken to sit where it is incorporated. A person has no headquarters.
        parent_hq = parent.hq_country
        if parent_hq is None and parent.kind != "person":
            parent_hq = parent.country
        flags = frozen_cache.setdefault(ent.flags, ent.flags)
        listed_n = listed[i]
        counts["listed"] += listed_n
        counts["affiliated"] += aff[i]
        counts["with_parent"] += len(path) > 1
        out[ids[i]] = OwnershipProfile(
            id=ids[i],
            known=True,
            name=ent.name,
            kind=ent.kind,
            country=ent.country,
            hq_country=ent.hq_country,
            flags=flags,
            affiliated=bool(aff[i]),
            listed_share=min(acc[i], FULL) / SCALE,
            listed_via=via,
            ultimate_parent=parent.id,
            parent_hq_country=parent_hq,
            beneficial_owners=bos,
            parent_path=path,
            affiliated_paths=apaths,
            licenses=ent.licenses or empty_lic,
            affiliated_flags=flags_reaching.get(i, no_flags),
        )
    for i, c in enumerate(g.canon):
        if c != i and ids[c] in out:
            out[ids[i]] = out[ids[c]]  # an alias answers with its native entity's profile
    stats: dict[str, Any] = dict(counts)
    stats["edges"] = len(g.in_units)
    stats["beneficial_truncated"] = bo_truncated
    stats["affiliated_by_flag"] = flag_counts
    stats["affiliation_runs"] = flag_runs  # per-flag fixpoints actually computed (not shared)
    stats.update(g.notes)
    return out, stats
