"""Table tests for the ownership computation: the 50% fixpoint, ultimate parent, look-through owners, paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatekeeper.context import License

from .helpers import company, ent, native, owns, registry, write_csv, write_ftm, write_native

X = {"flags": ["entity_list"]}
Y = {"flags": ["sdn"]}

# (name, entities, {id: {field: expected}}); fields are OwnershipProfile attributes.
CASES: list[tuple[str, list[dict[str, Any]], dict[str, dict[str, Any]]]] = [
    (
        "domain: chain counts the affiliated intermediate's whole stake",
        [ent("x", **X), ent("a", ("x", 50)), ent("b", ("a", 50))],
        {
            "a": {"affiliated": True, "listed_share": 50.0, "listed_via": ("x",)},
            "b": {
                "affiliated": True,
                "listed_share": 50.0,
                "listed_via": ("x",),
                "affiliated_paths": (("b", "a", "x"),),
            },
        },
    ),
    (
        "domain: aggregation across two listed owners",
        [ent("x", **X), ent("y", **Y), ent("c", ("x", 30), ("y", 20))],
        {
            "c": {
                "affiliated": True,
                "listed_share": 50.0,
                "listed_via": ("x", "y"),
                "affiliated_paths": (("c", "x"), ("c", "y")),
            }
        },
    ),
    (
        "domain: 49% does not reach, so nothing below is affiliated",
        [ent("x", **X), ent("a", ("x", 49)), ent("b", ("a", 100))],
        {
            "a": {"affiliated": False, "listed_share": 49.0, "listed_via": ("x",)},
            "b": {"affiliated": False, "listed_share": 0.0, "listed_via": ()},
        },
    ),
    (
        "domain: a cycle alone changes nothing",
        [ent("a", ("b", 60)), ent("b", ("a", 60))],
        {"a": {"affiliated": False}, "b": {"affiliated": False}},
    ),
    (
        "domain: a listed owner pushes one member of a cycle over, and it carries the other",
        [ent("x", **X), ent("a", ("b", 40), ("x", 50)), ent("b", ("a", 60))],
        {
            # once b is affiliated its 40% counts too: 50 + 40
            "a": {"affiliated": True, "listed_share": 90.0, "listed_via": ("x",)},
            "b": {"affiliated": True, "listed_share": 60.0, "listed_via": ("x",)},
        },
    ),
    (
        "exactly 50 from one listed owner",
        [ent("x", **X), ent("a", ("x", 50))],
        {"a": {"affiliated": True, "listed_share": 50.0}},
    ),
    (
        "49.99 is not 50",
        [ent("x", **X), ent("a", ("x", 49.99))],
        {"a": {"affiliated": False, "listed_share": 49.99}},
    ),
    (
        "33.3 + 16.7 sums to exactly 50 (no float drift)",
        [ent("x", **X), ent("y", **Y), ent("a", ("x", 33.3), ("y", 16.7))],
        {"a": {"affiliated": True, "listed_share": 50.0}},
    ),
    (
        "long chain at exactly 50 every step",
        [ent("x", **X), ent("a", ("x", 50)), ent("b", ("a", 50)), ent("c", ("b", 50))],
        {"c": {"affiliated": True, "affiliated_paths": (("c", "b", "a", "x"),)}},
    ),
    (
        "chain broken by 49.99 in the middle",
        [ent("x", **X), ent("a", ("x", 50)), ent("b", ("a", 49.99)), ent("c", ("b", 100))],
        {"b": {"affiliated": False}, "c": {"affiliated": False, "listed_via": ()}},
    ),
    (
        "listed share and an affiliated intermediate aggregate",
        [ent("x", **X), ent("a", ("x", 60)), ent("c", ("x", 30), ("a", 20))],
        {"c": {"affiliated": True, "listed_share": 50.0, "listed_via": ("x",)}},
    ),
    (
        "an unlisted owner's stake does not count",
        [ent("x", **X), ent("u"), ent("c", ("x", 30), ("u", 70))],
        {"c": {"affiliated": False, "listed_share": 30.0, "ultimate_parent": "u"}},
    ),
    (
        "control without equity gives the parent but not affiliation",
        [
            ent("x", kind="company", hq_country="CN", **X),
            ent("vie", {"id": "x", "control": True}, ("u", 100), hq_country="SG"),
            ent("u", hq_country="KY"),
        ],
        {
            "vie": {
                "affiliated": False,
                "listed_share": 0.0,
                "ultimate_parent": "x",
                "parent_hq_country": "CN",
                "parent_path": ("vie", "x"),
            }
        },
    ),
    (
        "exactly 50 is not a majority: the entity is its own parent",
        [ent("h", hq_country="CN"), ent("s", ("h", 50), hq_country="SG")],
        {"s": {"ultimate_parent": "s", "parent_hq_country": "SG", "parent_path": ("s",)}},
    ),
    (
        "ultimate parent over three levels, HQ from the top (contract example)",
        [
            ent("acme-group", hq_country="CN", country="KY"),
            ent("acme-holdings", ("acme-group", 60), country="HK"),
            ent("acme-sg", ("acme-holdings", 100), country="SG", hq_country="SG"),
        ],
        {
            "acme-sg": {
                "ultimate_parent": "acme-group",
                "parent_hq_country": "CN",
                "parent_path": ("acme-sg", "acme-holdings", "acme-group"),
                "affiliated": False,
            }
        },
    ),
    (
        "parent without a recorded HQ is taken where incorporated",
        [ent("p", country="RU"), ent("s", ("p", 80), country="SG")],
        {"s": {"parent_hq_country": "RU"}},
    ),
    (
        "parent cycle stops before revisiting",
        [ent("a", ("b", 60)), ent("b", ("a", 60)), ent("c", ("a", 100))],
        {
            "a": {"ultimate_parent": "b", "parent_path": ("a", "b")},
            "b": {"ultimate_parent": "a", "parent_path": ("b", "a")},
            "c": {"ultimate_parent": "b", "parent_path": ("c", "a", "b")},
        },
    ),
    (
        "a listed person is a listed owner",
        [
            ent("oligarch", kind="person", country="RU", flags=["sdn"]),
            ent("co", ("oligarch", 50)),
        ],
        {"co": {"affiliated": True, "listed_via": ("oligarch",)}},
    ),
    (
        "person as beneficial owner through a chain (look-through is a product)",
        [
            ent("p", kind="person", country="CN"),
            ent("h", ("p", 80)),
            ent("e", ("h", 100)),
        ],
        {
            "e": {"beneficial_owners": (("p", 80.0),), "ultimate_parent": "p"},
            "p": {"beneficial_owners": (), "parent_hq_country": None},
        },
    ),
    (
        "look-through sums over paths and honours the 25% threshold",
        [
            ent("p", kind="person"),
            ent("q", kind="person"),
            ent("h1", ("p", 50), ("q", 50)),
            ent("h2", ("p", 50), ("q", 49.98)),
            ent("e", ("h1", 50), ("h2", 50)),
        ],
        {"e": {"beneficial_owners": (("p", 50.0), ("q", 49.99))}},
    ),
    (
        "a look-through share of 24.99 is not reported",
        [ent("p", kind="person"), ent("h", ("p", 49.98)), ent("e", ("h", 50))],
        {"e": {"beneficial_owners": ()}},
    ),
    (
        "flags outside the listing set do not propagate but are kept",
        [ent("d", flags=["denied_persons", "role.pep"]), ent("a", ("d", 100))],
        {
            "d": {"affiliated": False, "flags": frozenset({"denied_persons", "role.pep"})},
            "a": {"affiliated": False, "listed_via": ()},
        },
    ),
    (
        "military_end_user is not a US listing: its own 50% rule reaches the affiliate",
        [ent("m", flags=["military_end_user"], country="JP"), ent("a", ("m", 50))],
        {
            "a": {
                "affiliated": False,
                "listed_share": 0.0,
                "listed_via": (),
                "affiliated_flags": frozenset({"military_end_user"}),
            }
        },
    ),
    (
        "a listed entity is affiliated and reaches itself",
        [ent("x", **X)],
        {"x": {"affiliated": True, "listed_via": ("x",), "affiliated_paths": (("x",),)}},
    ),
]


@pytest.mark.parametrize(("name", "entities", "expect"), CASES, ids=[c[0] for c in CASES])
def test_table(
    tmp_path: Path, name: str, entities: list[dict[str, Any]], expect: dict[str, dict[str, Any]]
) -> None:
    reg = native(tmp_path, entities)
    for eid, fields in expect.items():
        prof = reg.profile(eid)
        assert prof.known
        for field, want in fields.items():
            assert getattr(prof, field) == want, f"{eid}.{field}"


def test_listed_in_one_source_owned_via_another(tmp_path: Path) -> None:
    """CSL lists the parent, FtM says who it owns, the native file says they are one company."""
    csl = write_csv(
        tmp_path / "csl.csv",
        [
            ["_id", "source", "name", "type", "addresses"],
            ["e1", "Entity List (EL) - Bureau of Industry and Security", "Parent Co", "", "X, CN"],
        ],
    )
    ftm = write_ftm(
        tmp_path / "ftm.jsonl",
        [company("H", jurisdiction=["cn"]), company("S"), owns("o1", "H", "S", "60%")],
    )
    nat = write_native(
        tmp_path / "n.yaml",
        [
            {"id": "parent-co", "hq_country": "CN", "same_as": ["csl:e1", "ftm:H"]},
            {"id": "shell-sg", "country": "SG", "owners": [{"id": "ftm:S", "share": 100}]},
        ],
    )
    reg = registry((nat, "native"), (ftm, "ftm"), (csl, "csl"))
    s = reg.profile("ftm:S")
    assert s.affiliated and s.listed_via == ("parent-co",)
    assert s.ultimate_parent == "parent-co" and s.parent_hq_country == "CN"
    shell = reg.profile("shell-sg")
    assert shell.affiliated and shell.affiliated_paths == (("shell-sg", "ftm:S", "parent-co"),)
    assert shell.parent_path == ("shell-sg", "ftm:S", "parent-co")
    # Aliases answer with the native profile; its flags are the union.
    assert reg.profile("csl:e1") is reg.profile("parent-co")
    assert reg.profile("ftm:H").flags == frozenset({"entity_list"})
    assert "csl:e1" in reg and len(reg) == 3  # parent-co, shell-sg, ftm:S


def test_native_owner_names_an_imported_id(tmp_path: Path) -> None:
    ftm = write_ftm(tmp_path / "f.jsonl", [company("C1", topics=["sanction"])])
    nat = write_native(tmp_path / "n.yaml", [ent("acme", ("ftm:C1", 60))])
    reg = registry((nat, "native"), (ftm, "ftm"))
    assert reg.profile("ftm:C1").flags == frozenset({"sdn"})
    assert reg.profile("acme").affiliated
    assert reg.profile("acme").ultimate_parent == "ftm:C1"


def test_listing_flags_can_be_overridden(tmp_path: Path) -> None:
    ents = [ent("m", flags=["military_end_user"]), ent("q", flags=["meu"]), ent("a", ("m", 60))]
    ents.append(ent("b", ("q", 60)))
    default = native(tmp_path, ents)
    assert not default.profile("a").affiliated and default.profile("b").affiliated
    assert default.stats["listing_flags"] == [
        "entity_list",
        "entity_list_affiliate",
        "meu",
        "sdn",
        "sdn_affiliate",
    ]
    reg = native(tmp_path, ents, listing_flags=("entity_list", "sdn", "military_end_user"))
    assert reg.profile("a").affiliated and not reg.profile("b").affiliated
    assert reg.stats["listing_flags"] == ["entity_list", "military_end_user", "sdn"]
    # The per-flag rules do not depend on the US set.
    assert reg.profile("a").affiliated_flags == frozenset({"military_end_user"})
    assert reg.profile("b").affiliated_flags == frozenset({"meu"})
    assert reg.version != default.version


def test_threshold_is_configurable(tmp_path: Path) -> None:
    ents = [ent("p", kind="person"), ent("e", ("p", 10))]
    assert native(tmp_path, ents).profile("e").beneficial_owners == ()
    reg = native(tmp_path, ents, beneficial_owner_threshold=10.0)
    assert reg.profile("e").beneficial_owners == (("p", 10.0),)


def test_licences_are_parsed(tmp_path: Path) -> None:
    lic = {
        "id": "D1234567",
        "eccns": ["3A090.a", "4A090.a"],
        "countries": ["SG"],
        "expires": "2027-06-30",
        "max_tpp_hours": 5.0e7,
    }
    reg = native(
        tmp_path,
        [ent("acme", licenses=[lic, {"id": "L2", "eccns": ["4A090"], "countries": ["MY", "SG"]}])],
    )
    assert reg.profile("acme").licenses == (
        License("D1234567", ("3A090.a", "4A090.a"), ("SG",), "2027-06-30", 5.0e7),
        License("L2", ("4A090",), ("MY", "SG"), None, None),
    )


def test_unknown_and_json(tmp_path: Path) -> None:
    reg = native(tmp_path, [ent("x", **X), ent("a", ("x", 50), name="A Ltd", country="SG")])
    unknown = reg.profile("nobody")
    assert not unknown.known and unknown.id == "nobody" and "nobody" not in reg
    doc = reg.profile("a").to_json()
    assert doc["affiliated"] is True and doc["listed_via"] == ["x"]
    assert doc["paths"] == {"ultimate_parent": ["a"], "affiliated": [["a", "x"]]}
    assert reg.version.startswith("sha256:") and len(reg.version) == 71
    assert reg.stats["affiliated"] == 2 and reg.stats["listed"] == 1


def test_version_follows_content(tmp_path: Path) -> None:
    v1 = native(tmp_path, [ent("a")]).version
    assert native(tmp_path, [ent("a")]).version == v1
    assert native(tmp_path, [ent("b")]).version != v1
