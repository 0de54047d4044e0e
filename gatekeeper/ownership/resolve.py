"""The ownership computation (docs/entities.md), done once per load over the whole graph.

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
from itertools import compress
from typing import Any

from ..context import License, OwnershipProfile
from .graph import EXACT, BoLimits, Graph, build_graph
from .model import CONTROL, FULL, HALF, MAY_CONTROL, NO_HQ_KINDS, PERSON, SCALE

__all__ = ["EXACT", "MAX_PATHS", "BoLimits", "Graph", "build_graph", "resolve"]

MAX_PATHS = 16  # affiliated paths kept per profile (listed_via itself is complete)


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
            u = out_units[k]
            if u <= 0:
                continue  # no share, or one of unknown size (``possible_affiliation``)
            a = out_asset[k]
            acc[a] += u
            if not aff[a] and acc[a] >= HALF:
                aff[a] = 1
                stack.append(a)
    return aff, acc


def possible_affiliation(g: Graph, aff: bytearray, acc: list[int]) -> bytearray | None:
    """The 50% rule bounded from above: every holding as large as it may be.

    Least fixpoint of "affiliated, or the holdings of possibly affiliated owners reach 50", where
    a share stated as bounds ("< 40", ">= 25") counts at its upper bound, capped by what the other
    owners' stated shares leave, and a holding of unknown size adds everything the stated shares
    of all owners leave (100 minus their lower bounds) — once per asset, since the unknown holdings
    of one asset together can never exceed that rest. None when every share is exact.
    """
    out_start, out_asset, out_units, out_high = g.out_start, g.out_asset, g.out_units, g.out_high
    if not out_high and not any(u < 0 for u in out_units):
        return None
    n = len(g.ids)
    hi = bytearray(aff)
    hacc = list(acc)
    rest_added = bytearray(n)
    stack = [i for i in range(n) if aff[i]]
    while stack:
        o = stack.pop()
        fresh = not aff[o]  # its lower bounds are not in ``acc`` yet
        for k in range(out_start[o], out_start[o + 1]):
            a = out_asset[k]
            u = out_units[k]
            if hi[a]:
                continue
            if u < 0:
                if rest_added[a]:
                    continue
                rest_added[a] = 1
                hacc[a] += max(0, FULL - g.stated(a))
            elif out_high and k in out_high:
                top = max(u, min(out_high[k], FULL - (g.stated(a) - u)))
                hacc[a] += top if fresh else top - u
            elif fresh and u:
                hacc[a] += u
            else:
                continue
            if hacc[a] >= HALF:
                hi[a] = 1
                stack.append(a)
    return hi


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
            u = out_units[k]
            if u <= 0 or a in aff or (bound is not None and not bound[a]):
                continue
            total = get(a, 0) + u
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


def controlling_owners(g: Graph) -> tuple[list[int], bytearray]:
    """Per entity: the control-edge holder, else the owner with > 50%, else -1; and which
    entities' control is uncertain.

    Holdings of unknown size: when no stated holding controls the entity and the stated shares
    leave more than 50% unaccounted for, an owner of unknown size may hold a majority. One such
    owner is taken as the controlling owner (OpenSanctions' "subsidiary of" has no percentage);
    with several, which of them controls is unknown, so the entity is marked uncertain and its
    parent's headquarters is reported unknown, never as its own. A share stated as a range or a
    lower bound (``MAY_CONTROL``) is a candidate in the same way when its upper bound exceeds 50%
    and the other stated shares leave it room for a majority.
    """
    n = len(g.ids)
    ids = g.ids
    ctrl = [-1] * n
    uncertain = bytearray(n)
    in_start, in_owner, in_units, in_control = g.in_start, g.in_owner, g.in_units, g.in_control
    for a in range(n):
        best = -1
        best_u = 0
        known = 0
        unknown: list[int] = []
        ranged: list[tuple[int, int]] = []
        for k in range(in_start[a], in_start[a + 1]):
            o = in_owner[k]
            if in_control[k] & CONTROL:
                best = o  # control beats equity; the native loader rejects a second control edge
                break
            u = in_units[k]
            if u < 0:
                unknown.append(o)
                continue
            known += u
            if in_control[k] & MAY_CONTROL:
                ranged.append((o, u))
            if u > HALF and (best < 0 or u > best_u or (u == best_u and ids[o] < ids[best])):
                best, best_u = o, u
        if best < 0:
            # SECURITY: a holding that may be the majority is a possible parent, never ignored
            possible = [o for o, u in ranged if FULL - (known - u) > HALF]
            if FULL - known > HALF:
                possible += unknown
            if len(possible) == 1:
                best = possible[0]
            elif possible:
                uncertain[a] = 1
        ctrl[a] = best
    return ctrl, uncertain


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
    limits: BoLimits | None = None,
) -> tuple[dict[str, OwnershipProfile], dict[str, Any]]:
    """Every profile, keyed by id (aliases map to their canonical profile), and resolve stats."""
    limits = limits or BoLimits()
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
            # Only a known person ends the look-through; a party of unknown kind is looked
            # through like an organisation when it has owners.
            if ent.kind == PERSON:
                is_person[i] = 1
    aff, acc = affiliation(g, listed)
    maybe = possible_affiliation(g, aff, acc)
    # Only flags some entity carries get a fixpoint; the rest reach nobody.
    flags_reaching, flag_counts, flag_runs = flag_affiliation(g, seeds_by_flag, listed, aff)
    no_flags: frozenset[str] = frozenset()
    ctrl, uncertain = controlling_owners(g)
    ppaths, tops = parent_paths(g, ctrl)

    threshold = bo_threshold / 100.0
    in_start, in_units, inexact = g.in_start, g.in_units, g.inexact
    out: dict[str, OwnershipProfile] = {}
    frozen_cache: dict[frozenset[str], frozenset[str]] = {}
    empty_lic: tuple[License, ...] = ()
    bo_truncated = 0
    counts = {
        "entities": 0,
        "listed": 0,
        "affiliated": 0,
        "possibly_affiliated": 0,
        "with_parent": 0,
    }
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
        # is taken to sit where it is incorporated. A person has no headquarters, and a party of
        # unknown kind may be a person: its HQ is unknown, not its country.
        parent_hq = parent.hq_country
        if uncertain[tops[i]]:
            parent_hq = None  # an owner of unknown size may control the top: unknown, not its own
        elif parent_hq is None and parent.kind not in NO_HQ_KINDS:
            parent_hq = parent.country
        flags = frozen_cache.setdefault(ent.flags, ent.flags)
        listed_n = listed[i]
        counts["listed"] += listed_n
        counts["affiliated"] += aff[i]
        counts["with_parent"] += len(path) > 1
        unknown: tuple[str, ...] = ()
        bounded: tuple[tuple[str, float, float], ...] = ()
        if i in inexact:
            sizeless, ranged = g.uncertain_holdings(i)
            if sizeless:
                unknown = tuple(sorted(ids[o] for o in sizeless))
            if ranged:
                bounded = tuple(sorted((ids[o], lo / SCALE, hi / SCALE) for o, lo, hi in ranged))
        possibly = maybe is not None and bool(maybe[i]) and not aff[i]
        counts["possibly_affiliated"] += possibly
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
            possibly_affiliated=possibly,
            unknown_share_edges=unknown,
            bounded_share_edges=bounded,
            datasets=ent.datasets,
            alt_names=ent.alt_names,
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
