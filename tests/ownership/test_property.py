"""The resolver against brute-force references on random graphs (≤ 12 nodes, cycles included).

References are written from the definitions in docs/entities.md, independently of ``resolve.py``:
affiliation by naive iteration to a fixpoint (and, for ≤ 8 nodes, as the intersection of every
closed set: the *least* fixpoint), listed_via by plain reachability through affiliated owners,
the parent by following the controlling owner with a visited set, look-through ownership by
enumerating every simple path. Monotonicity: adding a listing or raising an affiliated owner's
share never removes an affiliation.

Flag families: the US rule (``affiliated``, ``listed_share``, ``listed_via``) is seeded by the
entities carrying any of ``listing`` and nothing else; ``affiliated_flags`` is, per flag of
``affiliation``, the same reference fixpoint seeded by that flag alone. Both sets are drawn at
random too, so the resolver's shortcuts (a flag whose seeds are the US seeds, a flag whose seeds
are a subset of them, two flags with the same seeds) are all compared against the plain definition.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.ownership.model import (
    AFFILIATION_FLAGS,
    FULL,
    HALF,
    LISTING_FLAGS,
    Collector,
    Entity,
)
from gatekeeper.ownership.resolve import EXACT, MAX_PATHS, build_graph, resolve

SHARES = [0, 10_000, 250_000, 300_000, 333_333, 499_900, 500_000, 500_001, 600_000, 1_000_000]


# Flag sets an entity may carry: US lists, the Chinese designation, both, and a flag no rule reads.
VOCAB = ("entity_list", "sdn", "meu", "military_end_user", "pep")
FLAG_SETS = [
    frozenset(),
    frozenset({"sdn"}),
    frozenset({"entity_list"}),
    frozenset({"military_end_user"}),
    frozenset({"sdn", "military_end_user"}),
    frozenset({"entity_list", "sdn"}),
    frozenset({"meu"}),
    frozenset({"pep"}),
]


@dataclass
class Case:
    n: int
    flags: dict[int, frozenset[str]]  # entities without flags are absent
    persons: set[int]
    edges: dict[tuple[int, int], tuple[int, bool]]  # (owner, asset) -> (units, control)
    listing: frozenset[str] = LISTING_FLAGS
    affiliation: frozenset[str] = field(default=AFFILIATION_FLAGS)

    @property
    def listed(self) -> set[int]:
        """The US rule's seeds."""
        return {i for i, f in self.flags.items() if f & self.listing}

    def carrying(self, flag: str) -> set[int]:
        return {i for i, f in self.flags.items() if flag in f}

    def add_flag(self, e: int, flag: str) -> Case:
        return replace(self, flags={**self.flags, e: self.flags.get(e, frozenset()) | {flag}})


@st.composite
def cases(draw: st.DrawFn, max_nodes: int = 12, families: bool = False) -> Case:
    n = draw(st.integers(1, max_nodes))
    flagged = draw(st.sets(st.integers(0, n - 1), max_size=n))
    flags = {i: s for i in sorted(flagged) if (s := draw(st.sampled_from(FLAG_SETS)))}
    persons = draw(st.sets(st.integers(0, n - 1), max_size=n // 3))
    edges: dict[tuple[int, int], tuple[int, bool]] = {}
    for a in range(n):
        if a in persons:
            continue
        owners = draw(st.lists(st.integers(0, n - 1), max_size=4, unique=True))
        room = FULL
        has_control = False
        for o in owners:
            if o == a:
                continue
            units = draw(st.sampled_from(SHARES) | st.integers(0, FULL))
            units = min(units, room)
            room -= units
            control = not has_control and draw(st.booleans()) and draw(st.booleans())
            has_control |= control
            edges[(o, a)] = (units, control)
    case = Case(n, flags, persons, edges)
    if families:  # configurable families: any listing set, any per-flag set
        listing = draw(st.sets(st.sampled_from(VOCAB[:4])))
        affiliation = draw(st.sets(st.sampled_from(VOCAB)))
        case = replace(case, listing=frozenset(listing), affiliation=frozenset(affiliation))
    return case


def run(case: Case):  # type: ignore[no-untyped-def]
    col = Collector()
    col.add_report("test", "test", strict=False)
    for i in range(case.n):
        kind = "person" if i in case.persons else "company"
        col.add_entity(Entity(id=f"e{i:02d}", kind=kind, flags=case.flags.get(i, frozenset())))
    for (o, a), (u, c) in case.edges.items():
        col.add_edge(f"e{o:02d}", f"e{a:02d}", u, c, 0, None)
    profiles, _ = resolve(
        build_graph(col),
        listing_flags=case.listing,
        affiliation_flags=case.affiliation,
        bo_threshold=0.0,
        limits=EXACT,
    )
    return {int(k[1:]): v for k, v in profiles.items()}


def owners_of(case: Case, a: int) -> Iterator[tuple[int, int, bool]]:
    for (o, x), (u, c) in case.edges.items():
        if x == a:
            yield o, u, c


def ref_affiliated(case: Case, seeds: set[int] | None = None) -> set[int]:
    aff = set(case.listed if seeds is None else seeds)
    changed = True
    while changed:
        changed = False
        for a in range(case.n):
            if a not in aff and sum(u for o, u, _ in owners_of(case, a) if o in aff) >= HALF:
                aff.add(a)
                changed = True
    return aff


def ref_least_fixpoint(case: Case, seeds: set[int] | None = None) -> set[int]:
    """Intersection of every set closed under the rule (exponential: small graphs only)."""
    result = (1 << case.n) - 1
    base = sum(1 << i for i in (case.listed if seeds is None else seeds))
    for s in range(1 << case.n):
        if s & base != base:
            continue
        closed = all(
            s >> a & 1 or sum(u for o, u, _ in owners_of(case, a) if s >> o & 1) < HALF
            for a in range(case.n)
        )
        if closed:
            result &= s
    return {i for i in range(case.n) if result >> i & 1}


def ref_affiliated_flags(case: Case) -> dict[int, set[str]]:
    """Per entity: the flags of ``case.affiliation`` whose own fixpoint reaches it."""
    out: dict[int, set[str]] = {i: set() for i in range(case.n)}
    for flag in case.affiliation:
        for i in ref_affiliated(case, case.carrying(flag)):
            out[i].add(flag)
    return out


def ref_listed_via(case: Case, aff: set[int], e: int) -> set[int]:
    out = set()
    for start in case.listed:
        seen = {start}
        todo = [start]
        while todo:
            x = todo.pop()
            if x == e:
                out.add(start)
            if x not in aff:
                continue
            for (o, a), (u, _) in case.edges.items():
                if o == x and u > 0 and a not in seen:
                    seen.add(a)
                    todo.append(a)
    return out


def ref_parent(case: Case, e: int) -> list[int]:
    def controller(a: int) -> int | None:
        owners = list(owners_of(case, a))
        for o, _, c in owners:
            if c:
                return o
        for o, u, _ in owners:
            if u > HALF:
                return o
        return None

    path = [e]
    while (p := controller(path[-1])) is not None and p not in path:
        path.append(p)
    return path


def ref_beneficial(case: Case, e: int) -> dict[int, float]:
    res: dict[int, float] = {}

    def walk(x: int, prod: float, seen: frozenset[int]) -> None:
        owners = [] if x in case.persons else [(o, u) for o, u, _ in owners_of(case, x) if u > 0]
        if not owners and x != e:
            res[x] = res.get(x, 0.0) + prod
        for o, u in owners:
            if o not in seen:
                walk(o, prod * u / FULL, seen | {o})

    walk(e, 1.0, frozenset({e}))
    return {k: v for k, v in res.items() if v > 0}


@settings(max_examples=300, deadline=None)
@given(cases())
def test_matches_reference(case: Case) -> None:
    got = run(case)
    aff = ref_affiliated(case)
    assert {i for i, p in got.items() if p.affiliated} == aff
    for e, prof in got.items():
        share = sum(u for o, u, _ in owners_of(case, e) if o in aff)
        assert prof.listed_share == min(share, FULL) / 10_000
        via = ref_listed_via(case, aff, e)
        assert set(prof.listed_via) == {f"e{i:02d}" for i in via}
        # Each path: starts at e, ends at a listed entity, every step a real edge with a share,
        # every owner affiliated.
        assert len(prof.affiliated_paths) == min(len(via), MAX_PATHS)
        for path in prof.affiliated_paths:
            nodes = [int(p[1:]) for p in path]
            assert nodes[0] == e and nodes[-1] in case.listed
            for asset, owner in itertools.pairwise(nodes):
                assert owner in aff and case.edges[(owner, asset)][0] > 0
        assert prof.parent_path == tuple(f"e{i:02d}" for i in ref_parent(case, e))
        assert prof.ultimate_parent == prof.parent_path[-1]
        want = ref_beneficial(case, e)
        have = {int(i[1:]): s / 100 for i, s in prof.beneficial_owners}
        assert have.keys() == want.keys()
        for k, v in want.items():
            assert abs(have[k] - v) < 1e-7


@settings(max_examples=300, deadline=None)
@given(cases(families=True))
def test_flag_families_match_reference(case: Case) -> None:
    """Per-flag fixpoints, and the US rule over its own lists only, for any configured sets."""
    got = run(case)
    aff = ref_affiliated(case)
    per_flag = ref_affiliated_flags(case)
    for e, prof in got.items():
        assert prof.affiliated == (e in aff)
        share = sum(u for o, u, _ in owners_of(case, e) if o in aff)
        assert prof.listed_share == min(share, FULL) / 10_000
        assert set(prof.listed_via) == {f"e{i:02d}" for i in ref_listed_via(case, aff, e)}
        assert prof.affiliated_flags == per_flag[e], e
        assert prof.affiliated_flags <= case.affiliation
        # An entity's own flags from the per-flag set always count.
        assert case.flags.get(e, frozenset()) & case.affiliation <= prof.affiliated_flags
        # A single US list's rule reaching an entity implies the US rule does (same seeds or more).
        assert not (prof.affiliated_flags & case.listing) or prof.affiliated


@settings(max_examples=150, deadline=None)
@given(cases(max_nodes=8))
def test_least_fixpoint(case: Case) -> None:
    got = run(case)
    assert {i for i, p in got.items() if p.affiliated} == ref_least_fixpoint(case)
    for flag in case.affiliation:
        want = ref_least_fixpoint(case, case.carrying(flag))
        assert {i for i, p in got.items() if flag in p.affiliated_flags} == want, flag


@settings(max_examples=200, deadline=None)
@given(cases(), st.data())
def test_monotone(case: Case, data: st.DataObject) -> None:
    first = run(case)
    before = {i for i, p in first.items() if p.affiliated}
    # Adding a listed entity never removes an affiliation.
    extra = data.draw(st.integers(0, case.n - 1))
    flag = data.draw(st.sampled_from(sorted(AFFILIATION_FLAGS)))
    more = run(case.add_flag(extra, flag))
    assert before <= {i for i, p in more.items() if p.affiliated}
    # Nor, per flag, does adding a flag anywhere remove one.
    for i, p in first.items():
        assert p.affiliated_flags <= more[i].affiliated_flags
    # Neither does raising an affiliated owner's share (within what the asset has left).
    raisable = [(o, a) for (o, a) in case.edges if o in before]
    if raisable:
        o, a = data.draw(st.sampled_from(raisable))
        room = FULL - sum(u for _, u, _ in owners_of(case, a))
        bump = data.draw(st.integers(0, room))
        edges = dict(case.edges)
        units, control = edges[(o, a)]
        edges[(o, a)] = (units + bump, control)
        raised = replace(case, edges=edges)
        assert before <= {i for i, p in run(raised).items() if p.affiliated}
