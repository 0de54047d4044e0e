"""Compliance data as published: CSL samples in all three forms and an OpenSanctions FtM export.

The CSL CSV samples are trade.gov's own rows as moov-io/watchman keeps them, in the current
layout (with ``_id``) and the older one (without); the JSON API rows are GovWizely's fixtures, also
written by this project in both CSV layouts (derived, not published) to show that one row reads
the same in every form. Every row is asserted as a person reads it from the published data: its
kind, its country, the flag of its list, its alternative names, and (FtM) the ownership that still
holds on the day of the load. The files and their origins are in ``tests/data/entities/README.md``.
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


# moov-io/watchman's copies of trade.gov's consolidated.csv (tests/data/entities/README.md), one
# entry per party: (name, kind, country, flag, number of alternative names). Rows without a type
# are persons or organisations only when the row says so; the Denied Persons and DTC individuals
# written "GIVEN SURNAME" are of unknown kind (LE), as is any name without a legal form.
WATCHMAN_OLDER = [
    (
        "ADRIAN MANUEL HERNANDEZ",
        LE,
        None,
        "denied_persons",
        0,
    ),  # untyped; the address ends in a ZIP code: no country given
    ("183rd Guard Air Defense Missile Regiment", "organization", None, "nonproliferation", 0),
    (
        "18th Central Scientific Research Institute (18th TsNII) Scientific Research Center (NITs) (Kursk)",
        "organization",
        None,
        "nonproliferation",
        0,
    ),
    ("200G PSA HOLDINGS LLC", "organization", "US", "sdn", 0),
    ("2904977 CANADA, INC.", "organization", "CA", "sdn", 2),
    ("32 Group China Ltd.", "organization", "HK", "entity_list", 0),
    ("3K Aviation Consulting and Logistics", "organization", "TR", "entity_list", 1),
    ("54th Research Institute of China", "organization", "CN", "entity_list", 3),
    ("7 KARNES", "organization", "CO", "sdn", 0),
    ("7-28", "vessel", None, "sdn", 0),
    ("7TH OF TIR", "organization", "IR", "sdn", 7),
    ("90 EKSPERIMENTALNY ZAVOD OAO", "organization", "RU", "ssi", 2),
    ("99TH LIGHT INFANTRY DIVISION OF THE BURMESE ARMY", "organization", "MM", "sdn", 0),
    ("A & C International Trade, Inc.", "organization", None, "itar_debarred", 0),
    ("A. Leib Ltd.", "organization", "IL", "entity_list", 0),
    ("A.C. International", "organization", "CN", "entity_list", 0),
    ("A.H. Shamnad", LE, "AE", "entity_list", 0),  # untyped, no legal form: of unknown kind
    ("A.P. Finance Limited", "organization", "GB", "entity_list", 0),
    ("A.S.P. BUILDERS", "organization", "IR", "sdn", 0),
    ("ABDUL JAWAD, Naser", "person", None, "plc", 1),
    ("ABDULAH AL NASSER", LE, "US", "denied_persons", 0),
    ("ABU HALABIYYE, Ahmad Yousef", "person", "PS", "plc", 0),
    ("ABU HASSAN, Khaled", "person", None, "plc", 2),
    ("ABU JHEISHEH, Mohammed", "person", None, "plc", 2),
    ("ABU MSAMEH, Sayyed Salem", "person", "PS", "plc", 1),
    ("ABU RAS, Marwan Mohammed", "person", "PS", "plc", 1),
    ("ABU REIHAN GROUP", "organization", "IR", "sdn", 0),
    ("ABU SALEM, Ibrahim", "person", None, "plc", 1),
    ("ABU SEIR, Daoud", "person", None, "plc", 1),
    ("ABU TEIR, Mohammed", "person", None, "plc", 2),
    ("ABU TOS, Khaled", "person", None, "plc", 1),
    ("ACHIM DEVELOPMENT, OOO", "organization", "RU", "ssi", 2),
    ("ACTIVEBUSINESSCOLLECTION LIMITED LIABILITY COMPANY", "organization", "RU", "ssi", 4),
    ("ACTeam Logistics Ltd.", "organization", "HK", "entity_list", 0),
    ("ADAM AL HERZ", LE, None, "denied_persons", 0),  # untyped; address without a country
    ("ADMINISTRADORA GANADERA EL 45 LTDA.", "organization", "CO", "sdn", 0),
    ("ADOLFO FONNEGRA ESPEJO TRADING & INVESTMENT", "organization", "CH", "sdn", 0),
    ("ADP, S.C.", "organization", "MX", "sdn", 0),
    ("ADRIAN DARYA 1", "vessel", None, "sdn", 1),
    ("ADRIAN JESUS REYNA", LE, "US", "denied_persons", 0),
    ("ADT ANALOG AND DIGITAL TECHNIK", "organization", "DE", "denied_persons", 0),
    ("ADVANCED INFORMATION AND COMMUNICATION TECHNOLOGY CENTER", "organization", "IR", "sdn", 1),
    ("AGROKREDIT-INFORM, AO", "organization", "RU", "ssi", 2),
    ("AGUSTIN GRAJALES Y CIA. LTDA.", "organization", "CO", "sdn", 0),
    (
        "AHED AL-ZOUBI, Omran",
        "person",
        None,
        "sdn",
        0,
    ),  # born in Damascus: a birthplace is not a country of the person
    ("AHMAD AL-ABDULLAH, Subhi", "person", None, "sdn", 0),
    ("AHMAD, Ahmad Ali", "person", None, "plc", 1),
    ("AJNAD MISR", "organization", "EG", "sdn", 3),
    ("AK TRANSNEFT OAO", "organization", "RU", "ssi", 6),
    ("AKBARI, Mohammadreza Ali", "person", None, "sdn", 3),
    (
        "AKTSIONERNOE OBSHCHESTVO MOSKOVSKI MASHINOSTROITELNY EKSPERIMENTALNY ZAVOD - KOMPOZITSIONNYE TEKHNOLOGII",
        "organization",
        "RU",
        "ssi",
        7,
    ),
    (
        "AKTSIONERNOE OBSHCHESTVO NAUCHNO-PROIZVODSTVENNOE OBEDINENIE OPTIKA",
        "organization",
        "RU",
        "ssi",
        4,
    ),
    (
        "AKTSIONERNOE OBSHCHESTVO NAUCHNO-PROIZVODSTVENNY KONTSERN TEKHNOLOGII MASHINOSTROENIYA",
        "organization",
        "RU",
        "ssi",
        12,
    ),
    (
        "AKTSIONERNOE OBSHCHESTVO NOVOSIBIRSKI ZAVOD POLUPROVODNIKOVYKH PRIBOROV S OKB",
        "organization",
        "RU",
        "ssi",
        4,
    ),
    ("AKTSIONERNOE OBSHCHESTVO RT-AVTO", "organization", "RU", "ssi", 5),
    ("AKTSIONERNOE OBSHCHESTVO RT-BIOTEKHPROM", "organization", "RU", "ssi", 3),
    (
        "AKTSIONERNOE OBSHCHESTVO RT-KHIMICHESKIE TEKHNOLOGII I KOMPOZITSIONNYE MATERIALY",
        "organization",
        "RU",
        "ssi",
        8,
    ),
    ("AKTSIONERNOE OBSHCHESTVO RT-OKHRANA", "organization", "RU", "ssi", 5),
    ("AKTSIONERNOE OBSHCHESTVO RT-STROITELNYE TEKHNOLOGII", "organization", "RU", "ssi", 4),
    ("AKTSIONERNOE OBSHCHESTVO SHVABE", "organization", "RU", "ssi", 4),
    ("AKTSIONERNOE OBSHCHESTVO TEKHNODINAMIKA", "organization", "RU", "ssi", 4),
    (
        "AKTSIONERNOE OBSHCHESTVO TSENTRALNOE KONSTRUKTORSKOE BYURO SPETSIALNYKH RADIOMATERIALOV",
        "organization",
        "RU",
        "ssi",
        5,
    ),
    ("AL 'ANABI, Abu 'Ubaydah Yusuf", "person", "DZ", "sdn", 11),  # citizenship DZ
    ("AL KAYALI CORPORATION", "organization", "US", "denied_persons", 0),
    ("AL MAZIDIH, Ghazy Fezza Hishan", "person", "SY", "sdn", 4),
    (
        "AL NASER WINGS AIRLINES",
        "organization",
        "IQ",
        "denied_persons",
        0,
    ),  # two rows: Baghdad, IQ first, then Dubai, AE
    ("AL-'UBAYSI, Mus'id", "person", "SY", "sdn", 0),
    ("AL-ABADSAH, Yahia Abdul Aziz", "person", "PS", "plc", 1),
    ("AL-AKHRAS, Safwan", "person", "SY", "sdn", 0),
    ("AL-AKHTAR TRUST INTERNATIONAL", "organization", "PK", "sdn", 6),
    ("GAZPROM TRANSGAZ VOLGOGRAD, OOO", "organization", "RU", "ssi", 2),
    ("GAZPROM TRANSGAZ YUGORSK, OOO", "organization", "RU", "ssi", 3),
    ("GAZPROM TSENTRREMONT, OOO", "organization", "RU", "ssi", 2),
    ("GAZPROM VNIIGAZ, OOO", "organization", "RU", "ssi", 2),
    ("GAZPROMBANK (SWITZERLAND) LTD", "organization", "CH", "ssi", 0),
    ("GAZPROMBANK LATIN AMERICA VENTURES BV", "organization", "NL", "ssi", 0),
    ("GAZPROMBANK LEASING ZAO", "organization", "RU", "ssi", 1),
    ("GAZPROMBANK OAO", "organization", "RU", "ssi", 6),
    ("GAZPROMBANK UPRAVLENIE AKTIVAMI", "organization", "RU", "ssi", 2),
    ("GBNTT", LE, "IR", "entity_list", 0),
    ("GBS TRADING S.A.", "organization", "CO", "sdn", 0),
    ("GCH & SONS CO., INC.", "organization", "PA", "sdn", 1),  # PA is Panama
    ("GE Plan", LE, None, "nonproliferation", 0),
    ("GEFEST-M LLC", "organization", "RU", "sdn", 0),
    ("Gryphon Aerospace", "organization", "SG", "entity_list", 0),
    ("Guadalupe Edgar Lucio-Amador", LE, None, "itar_debarred", 0),
    ("Guadalupe Santos Cisneros", LE, None, "itar_debarred", 0),
    ("Guangdong University of Technology", "organization", "CN", "unverified_list", 0),
    (
        "Gucheng Xian Fengxin Titanium Alloy, Xiyuan Industrial District, Gucheng County, Hebei Province, Hengshui City, China 253800",
        "organization",
        "CN",
        "unverified_list",
        0,
    ),
    ("Guillermo Aguilar-Medina", LE, None, "itar_debarred", 0),
    ("Guillermo Cardoso-Arias", LE, None, "itar_debarred", 0),
    ("Guillermo Enrique Villarreal", LE, None, "itar_debarred", 0),
    ("Guiseppe Luciano Menegazzo-Carrasquel", LE, None, "itar_debarred", 0),
    ("BANK OF KUNLUN CO LTD", "organization", "CN", "capta", 2),  # Capta List (CAP)
    (
        "Gui\x92an New District Huawei Investment Co., Ltd., Guiyang, Guizhou",
        "organization",
        "CN",
        "entity_list",
        0,
    ),
    ("Gulf Eagle Contracting (GEC)", "organization", "AE", "entity_list", 0),
    ("Gulf Eagle Industrial and Metal Profiles (GEIMP)", "organization", "AE", "entity_list", 0),
    (
        "Gulf Gate Sea Cargo LLC",
        "organization",
        "AF",
        "entity_list",
        0,
    ),  # first address Kabul, AF; then Dubai, AE
    ("Gulf Gate Shipping Co. LLC", "organization", "AE", "entity_list", 0),
    ("Gulf Gate Spedition GmbH", "organization", "AT", "entity_list", 0),
    ("Gulf Modern Solutions Engineering Company", "organization", "AE", "unverified_list", 0),
    ("Gulnihal Yegane", LE, "TR", "entity_list", 0),
    ("Gunther Kohlke", LE, None, "itar_debarred", 0),
    (
        "Gunther Migeotte",
        LE,
        "ZA",
        "entity_list",
        0,
    ),  # five rows, one party: the first row's country (ZA; then NO)
    ("Gustavo Gonzalez, Jr.", "person", None, "itar_debarred", 0),  # untyped; a generational suffix
    (
        "Gwendolyn Douglas",
        LE,
        None,
        "itar_debarred",
        1,
    ),  # untyped, alias "Gwen Douglas": nothing says a person
    ("H & H METALFORM GMBH", "organization", "DE", "sdn", 1),
    ("H Y J COMERCIALIZADORA INTERNACIONAL LTDA", "organization", "CO", "sdn", 0),
    ("ZBOUN, Anwar Mohammed", "person", "PS", "plc", 1),
    ("ZDAS (HK) Company", "organization", "HK", "unverified_list", 0),
]
WATCHMAN_CURRENT = [
    (
        "Sinobright Import and Export Company; and any successor, sub-unit, or subsidiary thereof",
        "organization",
        None,
        "nonproliferation",
        0,
    ),
    (
        "Atlas Sanatgaran",
        LE,
        "AM",
        "unverified_list",
        0,
    ),  # untyped, no legal form ("Komitas 26/114, Yerevan, Armenia, AM")
    ("Academy of Aerospace Solid Propulsion Technology (AASPT)", "organization", "CN", "meu", 0),
    ("Mohammed ABU JHEISHEH", "person", None, "plc", 2),
    (
        "RIM, Ryong Nam",
        "person",
        "KP",
        "sdn",
        0,
    ),  # nationality KP before the addresses (Shenyang, CN first)
    ("Cesareo Estanislao Benitez", LE, None, "itar_debarred", 0),
    ("I. ASH", LE, "US", "denied_persons", 0),  # untyped, no legal form
    ("ROSNEFT TRADE LIMITED", "organization", "CY", "ssi", 1),
    ("Evren KAYAKIRAN", "person", "TR", "fse", 0),  # citizenship TR
    ("Fathi Mohammed QAR'AWI", "person", "PS", "plc", 1),
    ("TNK Trading International S.A.", "organization", "CH", "ssi", 0),
    (
        "China Electronics Technology Group Corporation 13th Research Institute (CETC 13)",
        "organization",
        "CN",
        "entity_list",
        6,
    ),
    ("SME BANK", "organization", "RU", "ssi", 5),
]
# Alternative names as a person reads them: split on ";", BIS's "; and Name" read as "Name".
WATCHMAN_ALT_NAMES = {
    "2904977 CANADA, INC.": ("CARIBE SOL", "HAVANTUR CANADA INC."),
    "54th Research Institute of China": (
        "China Electronics Technology Group Corp. (CETC) 54th Research Institute",
        "Communication, Telemetry and Telecontrol Research Institute (CTI)",
        "Shijiazhuang Communication Observation and Control Technology Institute.",
    ),
    "AKBARI, Mohammadreza Ali": (
        "AKBARI, Ali",
        "ALI-AKBARI, Mohammadreza",
        "ALIAKBARI, Mohammad Reza Abbas",
    ),
    "ADRIAN DARYA 1": ("GRACE 1",),
    "Gwendolyn Douglas": ("Gwen Douglas",),
    "Mohammed ABU JHEISHEH": ("Mohammad Mutlaq ABU JHESHEH", "Mohammed ABU JEHEISHA"),
    "China Electronics Technology Group Corporation 13th Research Institute (CETC 13)": (
        "Hebei Semiconductor Research Institute",
        "HSRI",
        "Hebei Institute of Semiconductors",
        "Hebei Semiconductor Institute",
        "Hebei Semiconductor",
        "CETC Research Institute 13",
    ),
}


@pytest.mark.parametrize(
    ("name", "rows", "entities", "merged"),
    [
        ("csl_watchman_older.csv", WATCHMAN_OLDER, 110, 5),
        ("csl_watchman_current.csv", WATCHMAN_CURRENT, 13, 0),
    ],
)
def test_csl_published_csv_row_by_row(
    name: str, rows: list[tuple[str, str, str | None, str, int]], entities: int, merged: int
) -> None:
    """Every party of the published CSV samples as a person reads it from its row(s)."""
    reg = _load((str(DATA / name), "csl"))
    src = reg.stats["sources"][0]
    assert (src["entities"], src["bad_rows"], src["problems"]) == (entities, 0, [])
    assert src["notes"].get("rows_merged", 0) == merged
    assert "unknown_sources" not in src["notes"]
    by_name = _csl_by_name(reg)
    assert [r[0] for r in rows] == list(by_name)  # one party per name, in file order
    for row_name, kind, country, flag, n_alt in rows:
        (ent_id,) = by_name[row_name]
        p = reg.profile(ent_id)
        assert (p.kind, p.country, p.flags, len(p.alt_names)) == (
            kind,
            country,
            {flag},
            n_alt,
        ), row_name
        assert p.hq_country == (None if kind in NO_HQ_KINDS else country), row_name
        assert p.affiliated == (flag in ("entity_list", "sdn", "meu")), row_name
        if row_name in WATCHMAN_ALT_NAMES:
            assert p.alt_names == WATCHMAN_ALT_NAMES[row_name], row_name
    kinds = [r[1] for r in rows]
    if name == "csl_watchman_older.csv":
        assert (kinds.count("person"), kinds.count(LE), kinds.count("vessel")) == (21, 17, 2)
        assert by_name["7-28"] == ["csl:ofac-23156"]  # OFAC rows keep OFAC's number
    else:
        assert by_name["Evren KAYAKIRAN"] == ["csl:26182"]  # the published _id


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
