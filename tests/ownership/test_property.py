"""The resolver against brute-force references on random graphs (≤ 12 nodes, cycles included).

References are written from the DOMAIN §4 definitions, independently of ``resolve.py``:
affiliation by naive iteration to a fixpoint (and, for ≤ 8 nodes, as the intersection of every
closed set: the *least* fixpoint), listed_via by plain reachability through affiliated owners,
the parent by following the controlling owner with a visited set, look-through ownership by
enumerating every simple path. Monotonicity: adding a listing or raising an affiliated owner's
share never removes an affiliation.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.ownership.model import FULL, HALF, LISTING_FLAGS, Collector, Entity
from gatekeeper.ownership.resolve import EXACT, MAX_PATHS, build_graph, resolve

SHARES = [0, 10_000, 250_000, 300_000, 333_333, 499_900, 500_000, 500_001, 600_000, 1_000_000]


@dataclass
class Case:
    n: int
    listed: set[int]
    persons: set[int]
    edges: dict[tuple[int, int], tuple[int, bool]]  # (owner, asset) -> (units, control)


@st.composite
def cases(draw: st.DrawFn, max_nodes: int = 12) -> Case:
    n = draw(st.integers(1, max_nodes))
    listed = draw(st.sets(st.integers(0, n - 1), max_size=n))
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
    return Case(n, listed, persons, edges)


def run(case: Case):  # type: ignore[no-untyped-def]
    col = Collector()
    col.add_report("test", "test", strict=False)
    for i in range(case.n):
        flags = frozenset({"sdn"}) if i in case.listed else frozenset()
        kind = "person" if i in case.persons else "company"
        col.add_entity(Entity(id=f"e{i:02d}", kind=kind, flags=flags))
    for (o, a), (u, c) in case.edges.items():
        col.add_edge(f"e{o:02d}", f"e{a:02d}", u, c, 0, None)
    profiles, _ = resolve(
        build_graph(col), listing_flags=LISTING_FLAGS, bo_threshold=0.0, limits=EXACT
    )
    return {int(k[1:]): v for k, v in profiles.items()}


def owners_of(case: Case, a: int) -> Iterator[tuple[int, int, bool]]:
    for (o, x), (u, c) in case.edges.items():
        if x == a:
            yield o, u, c


def ref_affiliated(case: Case) -> set[int]:
    aff = set(case.listed)
    changed = True
    while changed:
        changed = False
        for a in range(case.n):
            if a not in aff and sum(u for o, u, _ in owners_of(case, a) if o in aff) >= HALF:
                aff.add(a)
                changed = True
    return aff


def ref_least_fixpoint(case: Case) -> set[int]:
    """Intersection of every set closed under the rule (exponential: small graphs only)."""
    result = (1 << case.n) - 1
    base = sum(1 << i for i in case.listed)
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


@settings(max_examples=150, deadline=None)
@given(cases(max_nodes=8))
def test_least_fixpoint(case: Case) -> None:
    got = run(case)
    assert {i for i, p in got.items() if p.affiliated} == ref_least_fixpoint(case)


@settings(max_examples=200, deadline=None)
@given(cases(), st.data())
def test_monotone(case: Case, data: st.DataObject) -> None:
    before = {i for i, p in run(case).items() if p.affiliated}
    # Adding a listed entity never removes an affiliation.
    extra = data.draw(st.integers(0, case.n - 1))
    more = Case(case.n, case.listed | {extra}, case.persons, case.edges)
    assert before <= {i for i, p in run(more).items() if p.affiliated}
    # Neither does raising an affiliated owner's share (within what the asset has left).
    raisable = [(o, a) for (o, a) in case.edges if o in before]
    if raisable:
        o, a = data.draw(st.sampled_from(raisable))
        room = FULL - sum(u for _, u, _ in owners_of(case, a))
        bump = data.draw(st.integers(0, room))
        edges = dict(case.edges)
        units, control = edges[(o, a)]
        edges[(o, a)] = (units + bump, control)
        raised = Case(case.n, case.listed, case.persons, edges)
        assert before <= {i for i, p in run(raised).items() if p.affiliated}
