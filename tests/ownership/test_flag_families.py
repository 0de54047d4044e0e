"""Flag families: each jurisdiction's 50% rule aggregates only its own lists.

``affiliated`` / ``listed_share`` / ``listed_via`` are the US rule over ``entities.listing_flags``
(default entity_list, sdn, meu). ``affiliated_flags`` holds, per flag of
``entities.affiliation_flags`` (default those plus military_end_user), whether that flag's own
fixpoint — seeded by the entities carrying it and nothing else — reaches the entity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatekeeper.config import EntitiesConfig
from gatekeeper.ownership import AFFILIATION_FLAGS, LISTING_FLAGS

from .helpers import company, ent, native, owns, registry, write_ftm, write_native

SDN = {"flags": ["sdn"]}
EL = {"flags": ["entity_list"]}
MIL = {"flags": ["military_end_user"], "country": "JP", "hq_country": "JP"}
NONE: frozenset[str] = frozenset()


def fs(*flags: str) -> frozenset[str]:
    return frozenset(flags)


# (name, entities, {id: {field: expected}}) under the default configuration.
CASES: list[tuple[str, list[dict[str, Any]], dict[str, dict[str, Any]]]] = [
    (
        "80% owned by a Japanese military end user: CN family only, not a US affiliate",
        [ent("kaiyo-defense", **MIL), ent("kaiyo-compute", ("kaiyo-defense", 80))],
        {
            "kaiyo-compute": {
                "affiliated": False,
                "listed_share": 0.0,
                "listed_via": (),
                "affiliated_paths": (),
                "affiliated_flags": fs("military_end_user"),
            },
            "kaiyo-defense": {"affiliated": False, "affiliated_flags": fs("military_end_user")},
        },
    ),
    (
        "30% SDN + 20% military end user: no family reaches 50, nothing aggregates across",
        [ent("x", **SDN), ent("m", **MIL), ent("c", ("x", 30), ("m", 20))],
        {
            "c": {
                "affiliated": False,
                "listed_share": 30.0,
                "listed_via": ("x",),
                "affiliated_flags": NONE,
            }
        },
    ),
    (
        "30% SDN + 20% Entity List: the US lists aggregate (US family), no single flag reaches",
        [ent("x", **SDN), ent("y", **EL), ent("c", ("x", 30), ("y", 20))],
        {"c": {"affiliated": True, "listed_share": 50.0, "affiliated_flags": NONE}},
    ),
    (
        "two military end users, 30% + 20%, aggregate within their family",
        [ent("m1", **MIL), ent("m2", **MIL), ent("c", ("m1", 30), ("m2", 20))],
        {"c": {"affiliated": False, "affiliated_flags": fs("military_end_user")}},
    ),
    (
        "an owner on both a US list and the CN list carries both families",
        [ent("xm", flags=["sdn", "military_end_user"]), ent("a", ("xm", 60))],
        {
            "a": {
                "affiliated": True,
                "listed_via": ("xm",),
                "affiliated_flags": fs("sdn", "military_end_user"),
            },
            "xm": {"affiliated": True, "affiliated_flags": fs("sdn", "military_end_user")},
        },
    ),
    (
        "chains propagate per family: military via a 50% intermediate, SDN directly",
        [
            ent("m", **MIL),
            ent("x", **SDN),
            ent("a", ("m", 50)),
            ent("b", ("a", 50), ("x", 50)),
        ],
        {
            "a": {"affiliated": False, "affiliated_flags": fs("military_end_user")},
            "b": {
                "affiliated": True,
                "listed_share": 50.0,  # a's stake is not a US-affiliated stake
                "listed_via": ("x",),
                "affiliated_flags": fs("sdn", "military_end_user"),
            },
        },
    ),
    (
        "a military end user's 49% does not reach, so nothing below is caught",
        [ent("m", **MIL), ent("a", ("m", 49)), ent("b", ("a", 100))],
        {"a": {"affiliated_flags": NONE}, "b": {"affiliated_flags": NONE}},
    ),
    (
        "a military-end-user owner pushes one member of a cycle over, and it carries the other",
        [ent("m", **MIL), ent("a", ("b", 40), ("m", 50)), ent("b", ("a", 60))],
        {
            "a": {"affiliated": False, "affiliated_flags": fs("military_end_user")},
            "b": {"affiliated": False, "affiliated_flags": fs("military_end_user")},
        },
    ),
    (
        "meu (the BIS list) is a US listing and a family of its own",
        [ent("q", flags=["meu"]), ent("a", ("q", 50))],
        {"a": {"affiliated": True, "listed_via": ("q",), "affiliated_flags": fs("meu")}},
    ),
    (
        "flags outside both sets do not propagate and are no family",
        [ent("d", flags=["denied_persons", "jp_military_end_user"]), ent("a", ("d", 100))],
        {
            "d": {"affiliated": False, "affiliated_flags": NONE},
            "a": {"affiliated": False, "affiliated_flags": NONE},
        },
    ),
    (
        "an unflagged, unowned entity has no families",
        [ent("plain", country="DE")],
        {"plain": {"affiliated": False, "affiliated_flags": NONE}},
    ),
]


@pytest.mark.parametrize(("name", "entities", "expect"), CASES, ids=[c[0] for c in CASES])
def test_family_table(
    tmp_path: Path, name: str, entities: list[dict[str, Any]], expect: dict[str, dict[str, Any]]
) -> None:
    reg = native(tmp_path, entities)
    for eid, fields in expect.items():
        prof = reg.profile(eid)
        assert prof.known
        for field, want in fields.items():
            assert getattr(prof, field) == want, f"{eid}.{field}"


def test_defaults() -> None:
    # the publisher's own 50%-rule findings (FtM sanction.control, export.control.linked) list
    affiliates = fs("sdn_affiliate", "entity_list_affiliate")
    assert fs("entity_list", "sdn", "meu") | affiliates == LISTING_FLAGS
    assert (LISTING_FLAGS - affiliates) | {"military_end_user"} == AFFILIATION_FLAGS
    cfg = EntitiesConfig()
    assert cfg.listing_flags is None and cfg.affiliation_flags is None


def test_affiliation_flags_can_be_overridden(tmp_path: Path) -> None:
    ents = [
        ent("x", **SDN),
        ent("m", **MIL),
        ent("j", flags=["jp_military_end_user"]),
        ent("a", ("x", 60)),
        ent("b", ("m", 60)),
        ent("c", ("j", 60)),
    ]
    default = native(tmp_path, ents)
    assert default.stats["affiliation_flags"] == ["entity_list", "meu", "military_end_user", "sdn"]
    only = native(tmp_path, ents, affiliation_flags=("military_end_user", "jp_military_end_user"))
    assert only.profile("a").affiliated and only.profile("a").affiliated_flags == NONE
    assert only.profile("b").affiliated_flags == fs("military_end_user")
    assert only.profile("c").affiliated_flags == fs("jp_military_end_user")
    assert only.profile("c").affiliated is False  # not a US listing
    assert only.version != default.version
    none = native(tmp_path, ents, affiliation_flags=())
    assert all(none.profile(i).affiliated_flags == NONE for i in "xmjabc")
    assert none.profile("a").affiliated  # the US rule does not depend on the per-flag set
    assert none.stats["affiliated_by_flag"] == {}


def test_only_flags_with_seeds_run_and_identical_seeds_are_shared(tmp_path: Path) -> None:
    # Only sdn is carried: its seeds are exactly the US rule's, so no extra fixpoint runs.
    reg = native(tmp_path, [ent("x", **SDN), ent("a", ("x", 60))])
    assert reg.stats["affiliation_runs"] == 0
    assert reg.stats["affiliated_by_flag"] == {"sdn": 2}
    assert reg.profile("a").affiliated_flags == fs("sdn")
    # sdn and entity_list on the same entity: one seed set for both, still the US result.
    reg = native(tmp_path, [ent("x", flags=["sdn", "entity_list"]), ent("a", ("x", 60))])
    assert reg.stats["affiliation_runs"] == 0
    assert reg.profile("a").affiliated_flags == fs("sdn", "entity_list")
    # Two US lists on different entities: two runs (each bounded by the US result), and the
    # military designation a third, unbounded one.
    ents = [ent("x", **SDN), ent("y", **EL), ent("m", **MIL), ent("a", ("x", 60))]
    reg = native(tmp_path, [*ents, ent("b", ("y", 50)), ent("c", ("m", 50))])
    assert reg.stats["affiliation_runs"] == 3
    assert reg.stats["affiliated_by_flag"] == {"entity_list": 2, "military_end_user": 2, "sdn": 2}
    assert [reg.profile(i).affiliated_flags for i in "abc"] == [
        fs("sdn"),
        fs("entity_list"),
        fs("military_end_user"),
    ]


def test_profiles_share_their_flag_sets(tmp_path: Path) -> None:
    ents = [ent("m", **MIL), *(ent(f"s{i}", ("m", 100)) for i in range(20))]
    reg = native(tmp_path, ents)
    sets = {id(reg.profile(f"s{i}").affiliated_flags) for i in range(20)}
    assert len(sets) == 1  # interned: a million affiliates do not hold a million frozensets


def test_json_and_alias_merge(tmp_path: Path) -> None:
    # The native entity links an imported record; the alias's flags join the family seeds.
    ftm = write_ftm(
        tmp_path / "f.jsonl",
        [company("M", topics=["military_end_user"]), owns("o1", "M", "S", "80%"), company("S")],
    )
    nat = write_native(tmp_path / "n.yaml", [ent("mil", same_as=["ftm:M"], flags=["sdn"])])
    reg = registry((nat, "native"), (ftm, "ftm"))
    s = reg.profile("ftm:S")
    assert s.affiliated_flags == fs("sdn", "military_end_user")
    doc = s.to_json()
    assert doc["affiliated_flags"] == ["military_end_user", "sdn"]
    assert doc["affiliated"] is True and doc["listed_via"] == ["mil"]
    assert reg.profile("nobody").to_json()["affiliated_flags"] == []
