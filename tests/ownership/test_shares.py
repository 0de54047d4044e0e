"""Shares as published: free text that cannot be read, ranges and bounds, hostile values.

The FollowTheMoney ``Ownership.percentage`` property is a plain string (``followthemoney/schema/
Ownership.yaml`` in ``alephdata/followthemoney``: no type, so no normalisation), and OpenSanctions'
crawlers pass the registers' own text through. The records below have the shape of the published
export in ``tests/data/entities/opensanctions_zala.ftm.json`` (OpenSanctions ids, ``datasets``,
``sharesCount``, ``startDate`` as ``ext_ru_egrul`` writes them); only the percentage text varies.

A holding whose size cannot be read is kept as one of unknown size (never dropped, never 0) with a
warning naming it; a share stated as bounds counts at its lower bound in the 50% rule and at its
upper bound in ``possibly_affiliated``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gatekeeper.errors import ConfigError
from gatekeeper.ownership import Registry
from gatekeeper.ownership.model import FULL, HALF, Collector, Entity
from gatekeeper.ownership.resolve import build_graph, resolve
from gatekeeper.ownership.screening import diff

from .helpers import registry, write_ftm

X, Y, Z, A, B = (
    "NK-nR5AXM9AVPq4pQaSPSaVam",
    "NK-aU5ybkbRFJucf8YMwsJvDw",
    "NK-3NyeuT6JeJDLhGEyH3JD52",
    "NK-abdzbEBkqyT29GyREbiURZ",
    "NK-iE6m5ryPeTAMZozfECVSL7",
)


def org(eid: str, *topics: str) -> dict[str, Any]:
    return {
        "id": eid,
        "schema": "Company",
        "properties": {"name": [eid], "jurisdiction": ["ru"], "topics": list(topics)},
        "datasets": ["ext_ru_egrul"],
    }


def holding(n: int, owner: str, asset: str, *pct: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "owner": [owner],
        "asset": [asset],
        "sharesCount": ["10000"],
        "startDate": ["2005-09-16"],
    }
    if pct:
        props["percentage"] = list(pct)
    return {
        "id": f"ru-159c785ad927d3e153b23a26620730465ed26f1{n}",
        "schema": "Ownership",
        "properties": props,
        "datasets": ["ext_ru_egrul"],
    }


def load(tmp_path: Path, *records: dict[str, Any], name: str = "f.ftm.json") -> Registry:
    return registry((write_ftm(tmp_path / name, list(records)), "ftm"))


UNREADABLE: list[Any] = [
    "unknown",
    "approx. 30 %",
    "n/a",
    "NaN",
    "inf",
    "-5",
    "150",
    "1e309",
    "30 %%",
    "5" * 10_000,
    None,
    True,
    {"value": 60},
    ["60"],
]


@pytest.mark.parametrize("text", UNREADABLE, ids=lambda t: repr(t)[:20])
def test_unreadable_share_is_a_holding_of_unknown_size(tmp_path: Path, text: Any) -> None:
    """The sanctioned X holds A at a share nobody can read: A may be X's, and X its parent."""
    reg = load(tmp_path, org(X, "sanction"), org(A), holding(0, X, A, text))
    a = reg.profile(f"ftm:{A}")
    assert a.unknown_share_edges == (f"ftm:{X}",)
    assert a.possibly_affiliated and not a.affiliated and a.listed_share == 0.0
    assert a.ultimate_parent == f"ftm:{X}"  # the only owner, of unknown size
    src = reg.stats["sources"][0]
    assert (src["edges"], src["bad_rows"]) == (1, 0)
    assert src["notes"] == {"unreadable_percentages": 1}
    [warning] = src["warnings"]
    assert (
        f"ownership 'ru-159c785ad927d3e153b23a26620730465ed26f10' (ftm:{X} -> ftm:{A})" in warning
    )
    assert len(warning) < 400  # a hostile value is not echoed whole


def test_a_bare_value_is_read_as_a_list_of_one(tmp_path: Path) -> None:
    """FtM values are lists; a bare "60" still states 60, a bare "junk" still warns."""
    bare = holding(0, X, A)
    bare["properties"]["percentage"] = "60"
    junk = holding(1, X, B)
    junk["properties"]["percentage"] = "junk"
    reg = load(tmp_path, org(X, "sanction"), org(A), org(B), bare, junk)
    assert reg.profile(f"ftm:{A}").affiliated
    b = reg.profile(f"ftm:{B}")
    assert b.possibly_affiliated and b.unknown_share_edges == (f"ftm:{X}",)
    [warning] = reg.stats["sources"][0]["warnings"]
    assert "'junk' cannot be read" in warning


def test_unreadable_beside_a_readable_value_keeps_the_readable_lower_bound(tmp_path: Path) -> None:
    """Two values, "30" and one unreadable: at least 30, and possibly anything above."""
    reg = load(
        tmp_path,
        org(X, "sanction"),
        org(Y, "sanction"),
        org(A),
        holding(0, X, A, "30", "approx. 30 %"),
        holding(1, Y, A, "15"),
    )
    a = reg.profile(f"ftm:{A}")
    assert a.listed_share == 45.0 and not a.affiliated and a.possibly_affiliated
    assert a.unknown_share_edges == ()
    assert reg.stats["sources"][0]["notes"] == {"unreadable_percentages": 1}


# (X's share in A as published, Y's share in A (None: Y holds nothing), both listed?) ->
# (affiliated, possibly_affiliated)
BOUNDED = [
    ("> 50", None, (True, False)),
    (">50%", None, (True, False)),
    ("majority", None, (True, False)),
    ("51-100%", None, (True, False)),
    ("50-100", None, (True, False)),
    ("at least 50%", None, (True, False)),
    ("30,5", "19,5", (True, False)),
    ("30,5", "19.4", (False, False)),
    ("< 40", None, (False, False)),  # at most 40
    ("< 40", "20", (False, True)),  # 40 + 20 may reach 50: never counted as 0
    ("< 40", "5", (False, False)),  # 45 at most
    ("up to 45%", "5%", (False, True)),
    ("25-40%", "< 10", (False, True)),  # exactly 50 at most, and 50 is enough
    ("25-40%", "< 9.99", (False, False)),
    ("minority", "< 10", (False, True)),
    (">= 25", "20", (False, True)),
    ("10-49%", "40", (True, False)),  # the lower bounds alone reach 50
]


@pytest.mark.parametrize(("x_share", "y_share", "want"), BOUNDED)
def test_bounds_in_the_50_percent_rule(
    tmp_path: Path, x_share: str, y_share: str | None, want: tuple[bool, bool]
) -> None:
    records = [org(X, "sanction"), org(Y, "export.control"), org(A), holding(0, X, A, x_share)]
    if y_share is not None:
        records.append(holding(1, Y, A, y_share))
    reg = load(tmp_path, *records)
    a = reg.profile(f"ftm:{A}")
    assert (a.affiliated, a.possibly_affiliated) == want
    assert reg.stats["sources"][0]["bad_rows"] == 0


def test_upper_bound_is_capped_by_the_other_owners(tmp_path: Path) -> None:
    """X (listed) holds ">= 25" of A while Z (not listed) holds 60: X has at most 40."""
    reg = load(
        tmp_path,
        org(X, "sanction"),
        org(Z),
        org(A),
        org(B),
        holding(0, X, A, ">= 25"),
        holding(1, Z, A, "60"),
        holding(2, A, B, "100"),
    )
    assert not reg.profile(f"ftm:{A}").possibly_affiliated
    assert reg.profile(f"ftm:{A}").ultimate_parent == f"ftm:{Z}"


def test_upper_bound_carries_down_the_chain(tmp_path: Path) -> None:
    """X (listed) holds "< 60" of A, A all of B: both may be affiliates, neither is."""
    reg = load(
        tmp_path,
        org(X, "sanction"),
        org(A),
        org(B),
        holding(0, X, A, "< 60"),
        holding(1, A, B, "100%"),
    )
    for eid in (A, B):
        p = reg.profile(f"ftm:{eid}")
        assert p.possibly_affiliated and not p.affiliated, eid
    assert reg.stats["possibly_affiliated"] == 2


def test_duplicate_rows_keep_the_larger_bounds(tmp_path: Path) -> None:
    """The same holding published twice, "30" and "< 45": at least 30, at most 45."""
    reg = load(
        tmp_path,
        org(X, "sanction"),
        org(Y, "sanction"),
        org(A),
        holding(0, X, A, "30"),
        holding(1, X, A, "< 45"),
        holding(2, Y, A, "7"),
    )
    a = reg.profile(f"ftm:{A}")
    assert a.listed_share == 37.0 and not a.affiliated and a.possibly_affiliated
    assert a.bounded_share_edges == ((f"ftm:{X}", 30.0, 45.0),)
    assert reg.stats["duplicate_edges"] == 1


def test_profile_names_every_holding_that_is_not_one_number(tmp_path: Path) -> None:
    """A is possibly affiliated through X ("25-40%") and Y ("< 10"), both listed: the profile
    names both with their bounds, the holding of unknown size apart, and no exact one."""
    reg = load(
        tmp_path,
        org(X, "sanction"),
        org(Y, "sanction"),
        org(Z),
        org(B),
        org(A),
        holding(0, X, A, "25-40%"),
        holding(1, Y, A, "< 10"),
        holding(2, Z, A, "30"),
        holding(3, B, A, "unknown"),
    )
    a = reg.profile(f"ftm:{A}")
    assert not a.affiliated and a.possibly_affiliated
    assert a.unknown_share_edges == (f"ftm:{B}",)
    assert a.bounded_share_edges == ((f"ftm:{Y}", 0.0, 10.0), (f"ftm:{X}", 25.0, 40.0))
    doc = a.to_json()
    assert doc["unknown_share_edges"] == [{"owner": f"ftm:{B}"}]
    assert doc["bounded_share_edges"] == [
        {"owner": f"ftm:{Y}", "min": 0.0, "max": 10.0},
        {"owner": f"ftm:{X}", "min": 25.0, "max": 40.0},
    ]
    # Z's exact share is no bound; B (of unknown size) holds nothing stated
    z = reg.profile(f"ftm:{Z}")
    assert z.bounded_share_edges == () and z.to_json()["bounded_share_edges"] == []


@pytest.mark.parametrize(
    ("text", "bounds"),
    [("majority", (50.0001, 100.0)), (">= 25", (25.0, 100.0)), ("up to 45%", (0.0, 45.0))],
)
def test_bounds_as_published(tmp_path: Path, text: str, bounds: tuple[float, float]) -> None:
    reg = load(tmp_path, org(X, "sanction"), org(A), holding(0, X, A, text))
    assert reg.profile(f"ftm:{A}").bounded_share_edges == ((f"ftm:{X}", *bounds),)


def test_bounds_of_a_dropped_row_stay_with_it(tmp_path: Path) -> None:
    """A ranged holding by an owner no source defines is a bad row; it lends its bounds to
    nobody, and the asset's other holding is read as stated."""
    reg = registry(
        (
            write_ftm(
                tmp_path / "f.ftm.json",
                [
                    org(X, "sanction"),
                    org(A),
                    org(B),
                    holding(0, Z, A, "< 90"),  # Z is defined nowhere
                    holding(1, X, A, "30"),
                    holding(2, Z, B, "< 90"),
                    holding(3, X, B, "< 45"),
                ],
            ),
            "ftm",
        ),
        max_bad_rows=2,
    )
    a, b = reg.profile(f"ftm:{A}"), reg.profile(f"ftm:{B}")
    assert (a.listed_share, a.affiliated, a.possibly_affiliated) == (30.0, False, False)
    assert (b.listed_share, b.affiliated, b.possibly_affiliated) == (0.0, False, False)
    assert reg.stats["sources"][0]["bad_rows"] == 2


@pytest.mark.parametrize(
    ("before", "after", "changes", "after_view"),
    [
        # a number becomes unreadable: no longer affiliated but possibly, X still the parent
        ("60", "unknown", ["affiliated", "possibly_affiliated"], (False, True, X)),
        ("60", "approx. 60 %", ["affiliated", "possibly_affiliated"], (False, True, X)),
        # and back
        ("unknown", "60", ["affiliated", "possibly_affiliated"], (True, False, X)),
        # a number becomes a bound that may still be the majority
        ("60", "< 70", ["affiliated", "possibly_affiliated"], (False, True, X)),
        # ... or one that cannot: at most 40, so nobody's parent and no affiliate
        ("60", "< 40", ["affiliated", "ultimate_parent"], (False, False, A)),
        # unknown and unreadable are the same view: nothing to re-screen
        ("unknown", "n/a", None, None),
    ],
)
def test_rescreening_when_a_share_becomes_unknown(
    tmp_path: Path,
    before: str,
    after: str,
    changes: list[str] | None,
    after_view: tuple[bool, bool, str] | None,
) -> None:
    def version(pct: str, name: str) -> Registry:
        return load(tmp_path, org(X, "sanction"), org(A), holding(0, X, A, pct), name=name)

    old, new = version(before, "old.ftm.json"), version(after, "new.ftm.json")
    assert old.version != new.version
    got = diff(old, new)
    if changes is None:
        assert got == []
        return
    [change] = got
    assert change.entity == f"ftm:{A}" and list(change.changes) == changes
    assert change.after is not None and after_view is not None
    view = (change.after["affiliated"], change.after["possibly_affiliated"])
    assert (*view, change.after["ultimate_parent"]) == (*after_view[:2], f"ftm:{after_view[2]}")


# ---------------------------------------------------------------- soundness of the upper bound

SHARE_STEPS = [0, 100_000, 250_000, 400_000, 500_000, 600_000, 1_000_000]


@st.composite
def bounded_graphs(draw: st.DrawFn) -> tuple[int, list[bool], list[tuple[int, int, int, int]]]:
    """Up to 6 entities; edges (owner, asset, low, high) with high = -1 for an unknown size."""
    n = draw(st.integers(2, 6))
    listed = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    edges = []
    for o, a in itertools.permutations(range(n), 2):
        if not draw(st.booleans()):
            continue
        kind = draw(st.sampled_from(["exact", "bounds", "unknown"]))
        if kind == "unknown":
            edges.append((o, a, -1, -1))
            continue
        lo = draw(st.sampled_from(SHARE_STEPS))
        hi = lo if kind == "exact" else draw(st.sampled_from([s for s in SHARE_STEPS if s >= lo]))
        edges.append((o, a, lo, hi))
    return n, listed, edges


def _exact_rule(n: int, listed: list[bool], shares: dict[tuple[int, int], int]) -> set[int]:
    aff = {i for i in range(n) if listed[i]}
    while True:
        more = {
            a
            for a in range(n)
            if a not in aff
            and sum(u for (o, x), u in shares.items() if x == a and o in aff) >= HALF
        }
        if not more:
            return aff
        aff |= more


@settings(max_examples=300, deadline=None)
@given(bounded_graphs(), st.data())
def test_possibly_affiliated_covers_every_reading(case: Any, data: st.DataObject) -> None:
    """Whatever the true shares within their bounds (at most 100% per asset), an entity the exact
    rule would affiliate is affiliated or possibly affiliated; the lower bounds alone never
    affiliate more than the rule over some reading does."""
    n, listed, edges = case
    floors = [sum(lo for _, x, lo, _ in edges if x == a and lo > 0) for a in range(n)]
    assume(max(floors) <= FULL)  # otherwise no reading of the data exists
    col = Collector()
    col.add_report("t", "ftm", strict=False)
    for i in range(n):
        col.add_entity(Entity(id=f"e{i}", flags=frozenset({"sdn"} if listed[i] else ())))
    for o, a, lo, hi in edges:
        col.add_edge(f"e{o}", f"e{a}", lo, False, 0, None, high=hi if hi >= 0 else None)
    profiles, _ = resolve(build_graph(col), listing_flags=frozenset({"sdn"}), bo_threshold=25.0)
    # One reading of the data: each share somewhere within its bounds, scaled to fit 100%.
    shares: dict[tuple[int, int], int] = {}
    for o, a, lo, hi in edges:
        top = FULL if hi < 0 else hi
        shares[(o, a)] = data.draw(st.integers(max(lo, 0), top))
    for a in range(n):
        held = [(k, u) for k, u in shares.items() if k[1] == a]
        total = sum(u for _, u in held)
        floor = floors[a]
        if total > FULL:
            # squeeze towards the lower bounds until the asset is at most 100% owned
            for k, u in held:
                lo = next(lo for o, x, lo, _ in edges if (o, x) == k)
                shares[k] = max(lo, 0) + (u - max(lo, 0)) * (FULL - floor) // max(1, total - floor)
    truth = _exact_rule(n, listed, shares)
    for i in truth:
        p = profiles[f"e{i}"]
        assert p.affiliated or p.possibly_affiliated, (i, shares)
    lows = {(o, a): max(lo, 0) for o, a, lo, _ in edges}
    assert {i for i in range(n) if profiles[f"e{i}"].affiliated} == _exact_rule(n, listed, lows)


# ------------------------------------------------------------------- the native file: no free text


@pytest.mark.parametrize(
    "share",
    [
        ".nan",
        ".inf",
        "-.inf",
        "-1",
        "100.0001",
        "1.0e+309",
        "1e309",
        '"50%"',
        "majority",
        "null",
        "[50]",
        "{v: 50}",
        "x" * 10_000,
    ],
    ids=lambda s: s[:12],
)
def test_native_share_must_be_a_number(tmp_path: Path, share: str) -> None:
    """The operator's own file is strict: a share that is not a number from 0 to 100 fails the
    load with its line, whatever it is (never 0, never a crash)."""
    path = tmp_path / "e.yaml"
    path.write_text(
        f"entities:\n  - id: a\n    owners:\n      - {{id: b, share: {share}}}\n  - id: b\n"
    )
    with pytest.raises(ConfigError) as info:
        registry((str(path), "native"))
    assert info.value.problems == [
        f"{path}:4: entities[0].owners[0].share: must be a number from 0 to 100"
    ]
