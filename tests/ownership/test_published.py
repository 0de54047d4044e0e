"""Compliance data as published: real CSL rows in all three forms and an OpenSanctions FtM export.

Every row is asserted as a person reads it from the published data: its kind, its country, the
flag of its list, and (FtM) the ownership that still holds on the day of the load. The files and
their origins are in ``tests/data/entities/README.md``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from gatekeeper.config import EntitiesConfig, EntitySource
from gatekeeper.ownership import Registry, load_registry
from gatekeeper.ownership.model import LEGAL_ENTITY as LE
from gatekeeper.ownership.model import NO_HQ_KINDS

DATA = Path(__file__).resolve().parents[1] / "data" / "entities"
ZALA = str(DATA / "opensanctions_zala.ftm.json")

# (name, kind, country, flag), in file order; organisations take their country as headquarters,
# persons and parties of unknown kind (legal_entity) have none. Untyped rows (BIS, State) are
# persons or organisations only when the row says so (cslkind.py); else of unknown kind.
CSL_ROWS = [
    ("Fazal Rahim Farid", "person", "AF", "entity_list"),  # untyped; alias "Engineer Idris"
    ("Fazel Khalil Construction Company", "organization", "AF", "entity_list"),
    ("Murat Peker", LE, "TR", "entity_list"),  # untyped, nothing in the row says a person
    ("Qazi Abdallah", "person", "AF", "entity_list"),  # three rows; alias "Jawid, Said Jan ..."
    ("Zurmat Construction Company offices", "organization", "AF", "entity_list"),
    ("BANCO NACIONAL DE CUBA", "organization", "CH", "sdn"),  # first of CH, ES, JP, PA
    ("CHAO, Lazaro R.", "person", "DE", "sdn"),  # nationality DE before citizenship FR, GB address
    ("JIM'ALE, Ahmed Nur Ali", "person", "SO", "sdn"),
    ("PARSHAN", "vessel", None, "sdn"),
    ("BANK OF KUNLUN CO LTD", "organization", "CN", "part_561"),
    ("HANIYA, Ismail Abdul Salah", "person", None, "plc"),  # untyped, has a date of birth
    ("JARRAR, Khaledah", "person", None, "plc"),  # untyped, "SURNAME, Given"
    ("QFEISHEH, Hatem", "person", None, "plc"),
    ("SALEH, Jamal", "person", None, "plc"),
    ("SHIHAB, Mohammed", "person", None, "plc"),
    ("YAHIA, Khaled Abed", "person", "PS", "plc"),  # from its address
    ("7th\u00ffof Tir", LE, None, "nonproliferation"),
    ("Aerospace Industries Organization (AIO)", "organization", None, "nonproliferation"),
    ("Aerospace Logistics Services", "organization", None, "nonproliferation"),
    ("Ahmad Derakhshandeh", LE, None, "nonproliferation"),
    ("Ahmad Vahid Dastjerdi", LE, None, "nonproliferation"),
    ("Dilligas Trading Co., Inc.", "organization", None, "itar_debarred"),
    ("John Smith", LE, None, "itar_debarred"),
    ("Brian Joseph Fleming", LE, None, "itar_debarred"),
    ("Juwhan Yun", LE, None, "itar_debarred"),
    ("Academy of Business Security", "organization", "RU", "unverified_list"),
    ("Brilliance Technology Ltd", "organization", "HK", "unverified_list"),
    ("China National Plant Import/Export Co.", "organization", "CN", "unverified_list"),
    ("Dynasense Photonics Co., Limited", "organization", "HK", "unverified_list"),
    ("Hi-Shine Technology (HK) Limited", "organization", "HK", "unverified_list"),
    ("Hong Kong Haimao Info-Tec Development Co Ltd", "organization", "HK", "unverified_list"),
    ("Lianqi (HK) Electronics Co Ltd", "organization", "HK", "unverified_list"),
    ("Lion Chip Electronics Ltd", "organization", "HK", "unverified_list"),
    ("S2BA", LE, "RU", "unverified_list"),
    ("Security 2 Business Academy", "organization", "RU", "unverified_list"),
    ("T2BA", LE, "RU", "unverified_list"),
    (
        "Training 2 Business Academy, a.k.a. T2BA, a.k.a. Academy of Business Training",
        "organization",
        "RU",
        "unverified_list",
    ),
    ("ABELAIRAS, AMANCIO J.", "person", "US", "denied_persons"),
    ("ABRISHAMI, ELHAM", "person", "US", "denied_persons"),
    ("ACE, IAN", "person", "ZA", "denied_persons"),
    ("ADT ANALOG AND DIGITAL TECHNIK", "organization", "DE", "denied_persons"),
    ("AGNESE, ANDREE", "person", "FR", "denied_persons"),
    ("KAL TEK LABS", "organization", "US", "denied_persons"),
    ("KATSUTA KEISUKE", LE, "JP", "denied_persons"),
    ("KINTRACO", LE, "NL", "denied_persons"),
    ("SEMICONDUCTOR SYSTEMS INTL., INC. (SSI)", "organization", "DK", "denied_persons"),
    ("AK TRANSNEFT OAO", "organization", "RU", "ssi"),
    ("BANK OF MOSCOW", "organization", "RU", "ssi"),
    ("ROSTEC", "organization", "RU", "ssi"),
    ("VTB BANK OAO", "organization", "RU", "ssi"),
    ("FERLAND COMPANY LIMITED", "organization", "CY", "fse"),
    ("SOKOLENKO, Vitaly", "person", None, "fse"),
    ("HOSSEINPOUR, Houshang", "person", "SO", "fse"),
    ("FAL OIL COMPANY LTD.", "organization", "AE", "ns_isa"),
    ("KUO OIL (S) PTE. LIMITED", "organization", "SG", "ns_isa"),
]


def _load(*sources: tuple[str, str], as_of: date | None = None) -> Registry:
    cfg = EntitiesConfig(sources=tuple(EntitySource(path=p, format=f) for p, f in sources))
    return load_registry(cfg, as_of=as_of)


def _csl_by_name(reg: Registry) -> dict[str, list[str]]:
    """name -> ids, from every profile of the registry."""
    out: dict[str, list[str]] = {}
    for ent_id, p in reg.profiles():
        assert p.name is not None
        out.setdefault(p.name, []).append(ent_id)
    return out


@pytest.mark.parametrize("name", ["csl_api_results.json", "csl_current.csv", "csl_older.csv"])
def test_csl_rows_as_published(name: str) -> None:
    path = str(DATA / name)
    reg = _load((path, "csl"))
    by_name = _csl_by_name(reg)
    assert set(by_name) == {row[0] for row in CSL_ROWS}
    for row_name, kind, country, flag in CSL_ROWS:
        for ent_id in by_name[row_name]:
            p = reg.profile(ent_id)
            assert (p.kind, p.country, p.flags) == (kind, country, {flag}), row_name
            hq = None if kind in NO_HQ_KINDS else country
            assert p.hq_country == hq, row_name
            # listings of the US 50% rule make an entity affiliated; the other lists do not
            assert p.affiliated == (flag in ("entity_list", "sdn")), row_name
    src = reg.stats["sources"][0]
    assert src["bad_rows"] == 0 and src["problems"] == []
    assert "unknown_sources" not in src["notes"]
    farid = reg.profile(by_name["Fazal Rahim Farid"][0])
    assert farid.alt_names == ("Fazel Rahim Farid", "Farid", "Engineer Idris")
    if name == "csl_current.csv":
        # every row has its own _id: the three Qazi Abdallah rows stay three entities
        assert len(by_name["Qazi Abdallah"]) == 3 and len(reg) == 57
        (banco,) = by_name["BANCO NACIONAL DE CUBA"]
        assert banco == "csl:6059df6bb5e056382c98ae4f7ccd94e0ac23bf48"
    else:
        # no row ids: OFAC rows by their entity number, the rest by list and name; the same
        # party on three rows is one entity
        assert len(by_name["Qazi Abdallah"]) == 1 and len(reg) == 55
        assert src["notes"]["rows_merged"] == 2
        assert by_name["BANCO NACIONAL DE CUBA"] == ["csl:ofac-306"]
        assert by_name["PARSHAN"] == ["csl:ofac-11043"]
        assert by_name["Murat Peker"][0].startswith("csl:entity_list-")


def test_csl_derived_ids_are_stable_across_forms() -> None:
    api = _load((str(DATA / "csl_api_results.json"), "csl"))
    older = _load((str(DATA / "csl_older.csv"), "csl"))
    assert sorted(i for i, _ in api.profiles()) == sorted(i for i, _ in older.profiles())


def test_ftm_export_as_published() -> None:
    reg = _load((ZALA, "ftm"), as_of=date(2026, 6, 1))
    src = reg.stats["sources"][0]
    assert src["bad_rows"] == 0
    assert src["skipped"] == {
        "Address": 11,
        "Sanction": 41,
        "Passport": 1,
        "Family": 4,
        "Directorship": 3,
    }
    # 14 holdings: 11 ended before the day, one without a percentage (of unknown size)
    assert src["notes"] == {"holdings_ended": 11, "edges_without_share": 1}
    zakharov = reg.profile("ftm:NK-aU5ybkbRFJucf8YMwsJvDw")
    assert (zakharov.kind, zakharov.country, zakharov.hq_country) == ("person", "RU", None)
    assert zakharov.flags == {"debarred", "corp.disqual", "sdn"}
    assert zakharov.datasets[:3] == (
        "gb_coh_disqualified",
        "mc_fund_freezes",
        "nz_russia_sanctions",
    )
    assert len(zakharov.datasets) == 14
    # Kalashnikov's subsidiary (Ukrainian-registered name, RU jurisdiction): Zakharov's current 51%
    # (since 2015, no end) and IZHMASH's 49%; the 50%, 48%, 2% and 1% holdings ended in 2023.
    k = reg.profile("ftm:NK-abdzbEBkqyT29GyREbiURZ")
    assert (k.kind, k.country, k.hq_country) == ("company", "RU", "RU")
    assert k.flags == {"sdn", "debarred", "entity_list", "poi", "corp.disqual"}
    assert k.affiliated and k.listed_share == 100.0
    assert k.ultimate_parent == "ftm:NK-aU5ybkbRFJucf8YMwsJvDw"
    assert k.beneficial_owners[0] == ("ftm:NK-aU5ybkbRFJucf8YMwsJvDw", 51.0)
    # companies whose only holdings ended: unlisted, unaffiliated, their own parents
    for cid in ("NK-9Xa4Kg7Y7nfccE7VcZt6Q6", "ru-inn-5920040846", "NK-56Edov9bas9puzaChH5pBy"):
        p = reg.profile("ftm:" + cid)
        assert (p.kind, p.country, p.flags, p.affiliated) == ("company", "RU", frozenset(), False)
        assert p.listed_share == 0.0 and p.ultimate_parent == "ftm:" + cid
        assert not p.possibly_affiliated and p.unknown_share_edges == ()
        assert p.datasets == ("ext_ru_egrul",)
    linked = reg.profile("ftm:NK-SiYwWfxwLVrVeFswsvAvsm")
    assert linked.flags == {"sanction_linked"} and not linked.affiliated


def test_ftm_export_on_an_earlier_day() -> None:
    """The same file judged on 2022-01-01: the 75% holding (2020-01-10..2022-11-22) counts."""
    reg = _load((ZALA, "ftm"), as_of=date(2022, 1, 1))
    assert reg.stats["sources"][0]["notes"] == {
        "holdings_ended": 3,
        "holdings_not_started": 4,
        "edges_without_share": 1,
    }
    p = reg.profile("ftm:NK-9Xa4Kg7Y7nfccE7VcZt6Q6")
    assert p.affiliated and p.listed_share == 75.0
    assert p.ultimate_parent == "ftm:NK-aU5ybkbRFJucf8YMwsJvDw"
    assert p.listed_via == ("ftm:NK-aU5ybkbRFJucf8YMwsJvDw",)


def test_ftm_holding_of_unknown_size() -> None:
    """In 2010 Zakharov held 8,500 shares of NK-56Edov with no percentage given (2002-2012)."""
    reg = _load((ZALA, "ftm"), as_of=date(2010, 6, 1))
    p = reg.profile("ftm:NK-56Edov9bas9puzaChH5pBy")
    assert not p.affiliated and p.listed_share == 0.0
    assert p.possibly_affiliated
    assert p.unknown_share_edges == ("ftm:NK-aU5ybkbRFJucf8YMwsJvDw",)
    js = p.to_json()
    assert js["possibly_affiliated"] is True
    assert js["unknown_share_edges"] == [{"owner": "ftm:NK-aU5ybkbRFJucf8YMwsJvDw"}]
    # and the version of the registry names the day it was judged on
    assert reg.version != _load((ZALA, "ftm"), as_of=date(2010, 6, 2)).version
