"""What kind of party a CSL row lists, and why a party of unknown kind never decides more loosely.

Untyped rows are persons or organisations only when the row says so (``sources/cslkind.py``); the
rest are ``legal_entity``. Such a party keeps its listing, its flags and its holdings, and has no
headquarters: a headquarters test on it, or on what it controls, meets an unknown value, which the
shipped packs refuse or send to a licence.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gatekeeper.ownership import Registry
from gatekeeper.ownership.sources.cslkind import merged_kind, name_kind, row_kind
from gatekeeper.policy import input_from_attributes, load_policy_set
from tests.policy.helpers import TODAY

from .helpers import company, ent, owns, registry, write_csv, write_ftm, write_native

LE = "legal_entity"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        # the lists' forms for people
        ("ABELAIRAS, AMANCIO J.", "person"),
        ("Jawid, Said Jan Abd-al-Salam", "person"),
        ("AL 'ANABI, Abu 'Ubaydah Yusuf", "person"),
        ("Evren KAYAKIRAN", "person"),
        ("Fathi Mohammed QAR'AWI", "person"),
        ("Gustavo Gonzalez, Jr.", "person"),
        ("Engineer Idris", "person"),
        ("Haji Abdul Basir", "person"),
        # legal forms and institutions
        ("Dilligas Trading Co., Inc.", "organization"),
        ("ADP, S.C.", "organization"),
        ("ACHIM DEVELOPMENT, OOO", "organization"),
        ("183rd Guard Air Defense Missile Regiment", "organization"),
        ("Gulf Gate Spedition GmbH", "organization"),
        ("Training 2 Business Academy, a.k.a. T2BA", "organization"),
        ("Dr. Reddy's Laboratories", "organization"),  # an institution word beats an honorific
        # nothing in the name says either
        ("Murat Peker", None),
        ("KATSUTA KEISUKE", None),
        ("ADRIAN MANUEL HERNANDEZ", None),
        ("KINTRACO", None),
        ("I. ASH", None),
        ("S2BA", None),
        ("7-28", None),
        ("", None),
    ],
)
def test_name_forms(name: str, kind: str | None) -> None:
    assert name_kind(name) == kind


@pytest.mark.parametrize(
    ("row", "names", "kind"),
    [
        ({"type": "Individual"}, ["ACME LTD"], "person"),  # the type wins over the name
        ({"type": " entity "}, ["SMITH, John"], "organization"),
        ({"type": "Aircraft"}, ["EP-ABC"], "aircraft"),
        ({"nsp_type": "Individual"}, ["Khaledah Jarrar"], "person"),  # older OFAC non-SDN rows
        ({"type": "Other"}, ["Murat Peker"], LE),  # a type we do not know says nothing
        ({"type": ["Individual"]}, ["Murat Peker"], LE),
        ({"dates_of_birth": "1962"}, ["Murat Peker"], "person"),
        ({"title": "Minister of Information"}, ["Omran Ahed"], "person"),
        ({"citizenships": ["TR"]}, ["Kintraco Ltd"], "person"),  # only persons have citizenships
        ({"places_of_birth": ""}, ["Murat Peker"], LE),  # an empty field says nothing
        ({}, ["Fazal Rahim Farid", "Farid", "Engineer Idris"], "person"),  # an alias says so
        ({}, ["Zurmat Construction Company offices"], "organization"),
        ({}, ["SMITH, John", "Smith Holdings Ltd"], LE),  # the names disagree
        ({}, ["Murat Peker"], LE),
    ],
)
def test_row_kind(row: dict[str, object], names: list[str], kind: str) -> None:
    assert row_kind(row, names) == kind


def test_merged_kind() -> None:
    assert merged_kind(LE, "person") == merged_kind("person", LE) == "person"
    assert merged_kind("organization", "organization") == "organization"
    assert merged_kind("person", "organization") == LE  # two rows of one party disagree


HEADER = ["source", "type", "name", "addresses", "alt_names", "dates_of_birth"]
EL = "Entity List (EL) - Bureau of Industry and Security"
DPL = "Denied Persons List (DPL) - Bureau of Industry and Security"


def _csv(tmp_path: Path) -> str:
    return write_csv(
        tmp_path / "c.csv",
        [
            HEADER,
            [EL, "", "Murat Peker", "Istanbul, TR", "", ""],
            [DPL, "", "KINTRACO", "BERENKOOG 29, ALKMAAR, 1822 BH, NL", "", ""],
            [DPL, "", "KINTRACO BV", "BERENKOOG 29, ALKMAAR, 1822 BH, NL", "", ""],
            # one party on two rows: untyped first, then with a date of birth
            [DPL, "", "Brian Fleming", "Street, Dublin, OH, 43017, US", "", ""],
            [DPL, "", "Brian Fleming", "", "", "1960"],
        ],
    )


def test_unknown_kind_keeps_listing_edges_and_has_no_headquarters(tmp_path: Path) -> None:
    csl = _csv(tmp_path)
    reg = registry((csl, "csl"))
    by_name = {p.name: i for i, p in reg.profiles()}
    peker = reg.profile(by_name["Murat Peker"])
    assert (peker.kind, peker.country, peker.hq_country) == (LE, "TR", None)
    assert peker.affiliated and peker.flags == {"entity_list"}  # the listing stands
    assert peker.parent_hq_country is None  # its own parent: no headquarters known
    bv = reg.profile(by_name["KINTRACO BV"])
    assert (bv.kind, bv.hq_country, bv.parent_hq_country) == ("organization", "NL", "NL")
    fleming = reg.profile(by_name["Brian Fleming"])
    assert (fleming.kind, fleming.country, fleming.hq_country) == ("person", "US", None)
    assert reg.stats["sources"][0]["notes"]["rows_merged"] == 1

    # Native tenants held by them: the edges count for the 50% rule and for the parent.
    nat = write_native(
        tmp_path / "n.yaml",
        [
            ent("held-by-peker", (by_name["Murat Peker"], 60), country="SG"),
            ent("held-by-kintraco", (by_name["KINTRACO"], 60), country="SG"),
            ent("held-by-kintraco-bv", (by_name["KINTRACO BV"], 60), country="SG"),
        ],
    )
    reg = registry((nat, "native"), (csl, "csl"))
    p = reg.profile("held-by-peker")
    assert p.affiliated and p.listed_via == (by_name["Murat Peker"],)
    assert p.ultimate_parent == by_name["Murat Peker"] and p.parent_hq_country is None
    assert p.beneficial_owners == ((by_name["Murat Peker"], 60.0),)
    k = reg.profile("held-by-kintraco")
    assert (k.ultimate_parent, k.parent_hq_country) == (by_name["KINTRACO"], None)
    kbv = reg.profile("held-by-kintraco-bv")
    assert (kbv.ultimate_parent, kbv.parent_hq_country) == (by_name["KINTRACO BV"], "NL")


# Strictness of an outcome: a reading of unknown kind may only move a decision to the right.
STRICTNESS = {"allow": 0, "flag": 1, "require_license": 2, "deny": 3}
CONTROLLED = {
    "compute.controlled": True,
    "compute.eccn": "3A090.a",
    "compute.gpus": 8,
    "compute.hours": 1,
    "compute.tpp": 15832,
    "geo.country": "SG",
}


@pytest.mark.parametrize(
    "pack", ["policies/us-remote-access.yaml", "policies/cn-dual-use-japan.yaml"]
)
def test_unknown_kind_never_decides_more_loosely(tmp_path: Path, pack: str) -> None:
    """Every tenant of the registry decided by a shipped pack as loaded, and again with each
    party of unknown kind read as an organisation: the unknown reading is never the looser."""
    csl = _csv(tmp_path)
    probe = registry((csl, "csl"))
    ids = {p.name: i for i, p in probe.profiles()}
    nat = write_native(
        tmp_path / "n.yaml",
        [
            ent("by-kintraco", (ids["KINTRACO"], 60), country="SG"),
            ent("by-kintraco-bv", (ids["KINTRACO BV"], 60), country="SG"),
            ent("by-peker", (ids["Murat Peker"], 40), country="JP"),
        ],
    )
    policy = load_policy_set([pack])
    base = input_from_attributes(CONTROLLED, TODAY)
    loaded = registry((nat, "native"), (csl, "csl"))
    as_org = _read_as_organisations(tmp_path, nat, csl)
    for ent_id, profile in loaded.profiles():
        unknown = policy.evaluate(dataclasses.replace(base, ownership=profile))
        org = policy.evaluate(dataclasses.replace(base, ownership=as_org.profile(ent_id)))
        assert STRICTNESS[unknown.action] >= STRICTNESS[org.action], ent_id
    if pack.endswith("us-remote-access.yaml"):
        # held by a party of unknown kind: its headquarters cannot be passed, so a licence is required
        v = policy.evaluate(dataclasses.replace(base, ownership=loaded.profile("by-kintraco")))
        assert (v.action, v.rule) == ("require_license", "d5-headquarters")
        assert "unknown:ownership.parent_hq_country" in v.reasons
        v = policy.evaluate(dataclasses.replace(base, ownership=loaded.profile("by-kintraco-bv")))
        assert (v.action, v.rule) == ("allow", "foreign-tenant")


def _read_as_organisations(tmp_path: Path, nat: str, csl: str) -> Registry:
    """The same registry with every untyped party typed Entity (the reading before kinds)."""
    rows = Path(csl).read_text().splitlines()
    typed = [rows[0]] + [r.replace(",,", ",Entity,", 1) for r in rows[1:]]
    path = tmp_path / "typed.csv"
    path.write_text("\n".join(typed) + "\n")
    return registry((nat, "native"), (str(path), "csl"))


def test_ftm_legal_entity_is_of_unknown_kind(tmp_path: Path) -> None:
    """FtM ``LegalEntity``: a person or a company. Only a stated main country is a headquarters."""
    path = write_ftm(
        tmp_path / "f.jsonl",
        [
            {"id": "L", "schema": "LegalEntity", "properties": {"country": ["ir"]}},
            {"id": "M", "schema": "LegalEntity", "properties": {"mainCountry": ["ae"]}},
            company("S", jurisdiction=["sg"]),
            owns("o1", "L", "S", "75%"),
        ],
    )
    reg = registry((path, "ftm"))
    lent = reg.profile("ftm:L")
    assert (lent.kind, lent.country, lent.hq_country, lent.parent_hq_country) == (
        LE,
        "IR",
        None,
        None,
    )
    assert reg.profile("ftm:M").hq_country == "AE"
    s = reg.profile("ftm:S")
    assert s.ultimate_parent == "ftm:L" and s.parent_hq_country is None
