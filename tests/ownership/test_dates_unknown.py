"""FtM ownership dates, holdings of unknown size, topics and provenance; CSL countries and kinds."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from gatekeeper.config import EntitiesConfig, EntitySource
from gatekeeper.ownership import Registry, load_registry
from gatekeeper.ownership.countries import country_from_text
from gatekeeper.ownership.sources.ftm import KNOWN_TOPICS, TOPIC_FLAGS, date_bounds

from .helpers import company, owns, write_csv, write_ftm

DAY = date(2026, 6, 15)


def _reg(path: str, fmt: str = "ftm", as_of: date = DAY, **kw: Any) -> Registry:
    cfg = EntitiesConfig(sources=(EntitySource(path=path, format=fmt),), **kw)
    return load_registry(cfg, as_of=as_of)


def _dated(id: str, owner: str, asset: str, pct: str | None, **dates: list[Any]) -> dict[str, Any]:
    rec = owns(id, owner, asset, pct)
    rec["properties"].update(dates)
    return rec


@pytest.mark.parametrize(
    ("text", "bounds"),
    [
        ("2019", (date(2019, 1, 1), date(2019, 12, 31))),
        ("2019-02", (date(2019, 2, 1), date(2019, 2, 28))),
        ("2020-02", (date(2020, 2, 1), date(2020, 2, 29))),
        ("2019-12", (date(2019, 12, 1), date(2019, 12, 31))),
        ("2019-03-15", (date(2019, 3, 15), date(2019, 3, 15))),
        ("2019-03-15T10:00:00", (date(2019, 3, 15), date(2019, 3, 15))),
    ],
)
def test_date_bounds(text: str, bounds: tuple[date, date]) -> None:
    assert date_bounds(text) == bounds


@pytest.mark.parametrize("text", ["", "19", "2019-13", "2019-02-30", "0000", "March 2019", "2019x"])
def test_date_bounds_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        date_bounds(text)


@pytest.mark.parametrize(
    ("dates", "counts"),
    [
        ({}, True),
        ({"endDate": ["2026-06-14"]}, False),  # ended yesterday
        ({"endDate": ["2026-06-15"]}, True),  # ends today: still held
        ({"endDate": ["2026"]}, True),  # known to the year: counts to Dec 31
        ({"endDate": ["2026-06"]}, True),  # to the month: counts to Jun 30
        ({"endDate": ["2026-05"]}, False),
        ({"endDate": ["2025"]}, False),
        ({"endDate": ["2020", "2027-01-01"]}, True),  # the latest end
        ({"startDate": ["2026-06-16"]}, False),  # not begun
        ({"startDate": ["2026-06"]}, True),  # may have begun on Jun 1
        ({"startDate": ["2027", "2026-01-01"]}, True),  # the earliest start
        ({"startDate": ["2020"], "endDate": ["2021"]}, False),
        ({"endDate": ["soon"]}, True),  # unreadable: ignored, the holding counts
        ({"endDate": [20200101]}, True),
        ({"endDate": "2020-01-01"}, True),  # not a list: ignored
    ],
)
def test_holding_dates(tmp_path: Path, dates: dict[str, Any], counts: bool) -> None:
    path = write_ftm(
        tmp_path / "f.json",
        [
            company("x", topics=["sanction"]),
            company("a"),
            _dated("o1", "x", "a", "60", **dates),
        ],
    )
    reg = _reg(path)
    assert reg.profile("ftm:a").affiliated is counts
    notes = reg.stats["sources"][0]["notes"]
    if not counts:
        assert notes.get("holdings_ended", 0) + notes.get("holdings_not_started", 0) == 1
    if dates.get("endDate") in (["soon"], [20200101]):
        assert notes["unreadable_dates"] == 1


def _graph(tmp_path: Path, *records: dict[str, Any]) -> Registry:
    return _reg(write_ftm(tmp_path / "f.json", list(records)))


def test_unknown_share_is_never_zero(tmp_path: Path) -> None:
    """X (listed) holds A with no percentage; Y (unlisted) holds 30%: A could be X's up to 70%."""
    reg = _graph(
        tmp_path,
        company("x", topics=["sanction"]),
        company("y"),
        company("a"),
        company("b"),
        owns("o1", "x", "a"),
        owns("o2", "y", "a", "30"),
        owns("o3", "a", "b", "60"),
    )
    a = reg.profile("ftm:a")
    assert not a.affiliated and a.listed_share == 0.0
    assert a.possibly_affiliated and a.unknown_share_edges == ("ftm:x",)
    # B: a possibly affiliated owner holds 60% -> possibly affiliated too (it carries on)
    b = reg.profile("ftm:b")
    assert b.possibly_affiliated and b.unknown_share_edges == ()
    assert reg.stats["possibly_affiliated"] == 2
    assert reg.stats["sources"][0]["notes"]["edges_without_share"] == 1


def test_unknown_share_bounded_by_the_rest(tmp_path: Path) -> None:
    """Known holdings of 55% by others leave 45%: X's holding of unknown size cannot reach 50."""
    reg = _graph(
        tmp_path,
        company("x", topics=["sanction"]),
        company("y"),
        company("z"),
        company("a"),
        owns("o1", "x", "a"),
        owns("o2", "y", "a", "30"),
        owns("o3", "z", "a", "25"),
    )
    a = reg.profile("ftm:a")
    assert not a.possibly_affiliated and a.unknown_share_edges == ("ftm:x",)


def test_unknown_share_adds_to_known_listed_shares(tmp_path: Path) -> None:
    """X (listed) 20% stated; W (listed) unknown; Y 45%: the rest is 35, 20 + 35 >= 50."""
    reg = _graph(
        tmp_path,
        company("x", topics=["sanction"]),
        company("w", topics=["export.control"]),
        company("y"),
        company("a"),
        owns("o1", "x", "a", "20"),
        owns("o2", "w", "a"),
        owns("o3", "y", "a", "45"),
    )
    a = reg.profile("ftm:a")
    assert not a.affiliated and a.listed_share == 20.0 and a.possibly_affiliated


def test_unknown_share_of_unlisted_owner_and_of_affiliate(tmp_path: Path) -> None:
    """An unlisted owner's unknown holding lifts nothing; an affiliated one's does."""
    reg = _graph(
        tmp_path,
        company("x", topics=["sanction"]),
        company("u"),
        company("f"),
        company("a"),
        company("c"),
        owns("o1", "u", "a"),
        owns("o2", "x", "f", "50"),  # F affiliated (50%)
        owns("o3", "f", "c"),  # F's holding in C of unknown size
    )
    assert not reg.profile("ftm:a").possibly_affiliated
    assert reg.profile("ftm:a").unknown_share_edges == ("ftm:u",)
    assert reg.profile("ftm:f").affiliated and not reg.profile("ftm:f").possibly_affiliated
    assert reg.profile("ftm:c").possibly_affiliated


def test_unknown_share_and_the_parent(tmp_path: Path) -> None:
    """One owner of unknown size, nothing stated above 50%: it may control, so it is the parent
    (OpenSanctions' "subsidiary of"); it never adds to beneficial ownership."""
    reg = _graph(
        tmp_path,
        company("p", jurisdiction=["cn"]),
        company("a", jurisdiction=["sg"]),
        owns("o1", "p", "a"),
    )
    a = reg.profile("ftm:a")
    assert a.ultimate_parent == "ftm:p" and a.parent_hq_country == "CN"
    assert a.parent_path == ("ftm:a", "ftm:p") and a.beneficial_owners == ()


def test_unknown_shares_make_the_parent_unknown(tmp_path: Path) -> None:
    """Two owners of unknown size: either may control; the parent's HQ is unknown, not A's own,
    and so is every subsidiary's whose chain ends at A."""
    reg = _graph(
        tmp_path,
        company("p", jurisdiction=["cn"]),
        company("q", jurisdiction=["us"]),
        company("a", jurisdiction=["sg"]),
        company("s", jurisdiction=["sg"]),
        owns("o1", "p", "a"),
        owns("o2", "q", "a"),
        owns("o3", "a", "s", "100"),
    )
    a = reg.profile("ftm:a")
    assert a.ultimate_parent == "ftm:a" and a.parent_hq_country is None
    assert set(a.unknown_share_edges) == {"ftm:p", "ftm:q"}
    s = reg.profile("ftm:s")
    assert s.ultimate_parent == "ftm:a" and s.parent_hq_country is None


@pytest.mark.parametrize(
    ("stated", "parent", "hq"),
    [
        ("60", "ftm:k", "US"),  # a stated majority decides
        ("50", "ftm:a", "SG"),  # the rest is 50: an unknown holding cannot be a majority
        ("49", "ftm:p", "CN"),  # the rest is 51: it can
    ],
)
def test_stated_shares_bound_an_unknown_parent(
    tmp_path: Path, stated: str, parent: str, hq: str
) -> None:
    reg = _graph(
        tmp_path,
        company("p", jurisdiction=["cn"]),
        company("k", jurisdiction=["us"]),
        company("a", jurisdiction=["sg"]),
        owns("o1", "p", "a"),
        owns("o2", "k", "a", stated),
    )
    a = reg.profile("ftm:a")
    assert (a.ultimate_parent, a.parent_hq_country) == (parent, hq)


def test_every_topic_has_a_home() -> None:
    assert set(TOPIC_FLAGS) & KNOWN_TOPICS == set()
    for t in ("sanction.linked", "sanction.counter", "role.pep", "role.rca", "poi", "gov.soe"):
        assert t in TOPIC_FLAGS or t in KNOWN_TOPICS
    assert TOPIC_FLAGS["sanction.control"] == "sdn_affiliate"
    assert TOPIC_FLAGS["export.control.linked"] == "entity_list_affiliate"


def test_topics_and_datasets(tmp_path: Path) -> None:
    rec = company(
        "a",
        topics=["sanction.control", "role.pep", "mare.shadow", "brand.new", 7, "Bad Topic!"],
    )
    rec["datasets"] = ["us_ofac_sdn", "eu_fsf", 3, "x" * 200]
    ctrl = company("b", topics=["export.control.linked"])
    reg = _graph(tmp_path, rec, ctrl, company("c"), owns("o1", "a", "c", "50"))
    a = reg.profile("ftm:a")
    assert a.flags == {"sdn_affiliate", "role.pep", "mare.shadow", "brand.new"}
    assert a.affiliated and reg.profile("ftm:b").affiliated  # listings like sdn / entity_list
    assert reg.profile("ftm:c").affiliated and reg.profile("ftm:c").listed_via == ("ftm:a",)
    assert a.datasets == ("us_ofac_sdn", "eu_fsf")
    assert a.to_json()["datasets"] == ["us_ofac_sdn", "eu_fsf"]
    notes = reg.stats["sources"][0]["notes"]
    assert notes["unknown_topics"] == 2 and notes["invalid_topics"] == 1


def test_hostile_datasets(tmp_path: Path) -> None:
    rec = company("a")
    rec["datasets"] = [f"d{i}" for i in range(10_000)]
    reg = _graph(tmp_path, rec, {**company("b"), "datasets": "not a list"})
    assert len(reg.profile("ftm:a").datasets) == 64
    assert reg.profile("ftm:b").datasets == ()


# ----------------------------------------------------------------------------- CSL


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("CN", "CN"),
        ("cn", "CN"),
        ("China", "CN"),
        ("Russian Federation", "RU"),
        ("Russia", "RU"),
        ("Iran, Islamic Republic of", "IR"),
        ("Korea, North", "KP"),
        ("Burma", "MM"),
        ("IRN", "IR"),
        ("Côte d'Ivoire", "CI"),
        ("Hong Kong", "HK"),
        ("Atlantis", None),
        ("", None),
        ("x" * 81, None),
        (None, None),
        (3, None),
    ],
)
def test_country_names(text: Any, code: str | None) -> None:
    assert country_from_text(text) == code


HEADER = ["_id", "source", "type", "name", "country", "addresses", "nationalities", "alt_names"]
EL = "Entity List (EL) - Bureau of Industry and Security"


def test_csl_country_from_every_place(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "c.csv",
        [
            HEADER,
            ["r1", EL, "Entity", "Row Country", "Russian Federation", "Street, Paris, FR", "", ""],
            [
                "r2",
                EL,
                "Entity",
                "Later Address",
                "",
                "Street 1, Nowhere; Road 2, Beijing, China",
                "",
                "",
            ],
            ["r3", EL, "", "DOE, Jane", "", "Road, Tehran, Iran", "", "Jane D.; J. Doe"],
            ["r4", EL, "Individual", "Nationality", "", "London, GB", "Iran", ""],
            ["r5", EL, "Entity", "Nowhere Co", "Atlantis", "Street, Atlantis", "", ""],
        ],
    )
    reg = _reg(path, "csl")
    assert (reg.profile("csl:r1").country, reg.profile("csl:r1").hq_country) == ("RU", "RU")
    assert reg.profile("csl:r2").country == "CN"
    r3 = reg.profile("csl:r3")
    assert (r3.kind, r3.country, r3.hq_country) == ("person", "IR", None)
    assert r3.alt_names == ("Jane D.", "J. Doe")
    assert reg.profile("csl:r4").country == "IR"
    assert reg.profile("csl:r5").country is None


def test_csl_every_list_mapped() -> None:
    from gatekeeper.ownership.sources.csl import list_flag

    published = {
        "Entity List (EL) - Bureau of Industry and Security": "entity_list",
        "Specially Designated Nationals (SDN) - Treasury Department": "sdn",
        "Special Designated Nationals (SDN) - Treasury Department": "sdn",
        "Military End User (MEU) List - Bureau of Industry and Security": "meu",
        "Unverified List (UVL) - Bureau of Industry and Security": "unverified_list",
        "Unverified List - Bureau of Industry and Security": "unverified_list",
        "Denied Persons List (DPL) - Bureau of Industry and Security": "denied_persons",
        "Nonproliferation Sanctions (ISN) - State Department": "nonproliferation",
        "ITAR Debarred (DTC) - State Department": "itar_debarred",
        "Part 561 List (561) - Treasury Department": "part_561",
        "List of Persons Identified as Blocked Solely Pursuant to Executive Order 13599 (13599)"
        " - Treasury Department": "eo13599",
        "Sectoral Sanctions Identifications List (SSI) - Treasury Department": "ssi",
        "Foreign Sanctions Evaders (FSE) - Treasury Department": "fse",
        "Non-SDN Chinese Military-Industrial Complex Companies List (CMIC) - Treasury Department": (
            "cmic"
        ),
        "Palestinian Legislative Council List (PLC) - Treasury Department": "plc",
        "Non-SDN Iranian Sanctions Act List (NS-ISA) - Treasury Department": "ns_isa",
        "Non-SDN Menu-Based Sanctions List (NS-MBS List) - Treasury Department": "ns_mbs",
        "Correspondent Account or Payable-Through Account Sanctions (CAPTA) - Treasury Department": (
            "capta"
        ),
        "PLC": "plc",
        "DTC": "itar_debarred",
        "CAP": "capta",
    }
    for source, flag in published.items():
        assert list_flag(source) == flag, source
    assert list_flag("Brand New List (BNL) - Somewhere") is None


def test_csl_one_bad_row_never_fails_the_registry(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"_id,source,name\na,SDN,Alpha\nb,SDN\nc,EL,Gamma\n")
    reg = _reg(str(path), "csl")  # max_bad_rows 0, and still loads
    src = reg.stats["sources"][0]
    assert (src["entities"], src["bad_rows"]) == (2, 1)
    assert src["problems"][0].endswith("c.csv:3: row has 2 fields, the header has 3")


def test_csl_hostile_row(tmp_path: Path) -> None:
    """Thousands of alternative names and a huge name are bounded, not kept whole."""
    path = tmp_path / "c.json"
    row = {
        "source": "SDN",
        "name": "N" * 5000,
        "alt_names": [f"alias {i}" for i in range(5000)] + [None, 3],
        "addresses": [{"country": ["CN"]}, "x", {"country": "China"}],
        "nationalities": {"a": 1},
        "type": ["Individual"],
        "entity_number": 12345,
    }
    path.write_bytes(orjson.dumps({"results": [row]}))
    p = _reg(str(path), "csl").profile("csl:ofac-12345")
    assert p.name is not None and len(p.name) == 512
    assert len(p.alt_names) == 64 and p.country == "CN"
    # a type that is no string says nothing, nor do the names: of unknown kind, no headquarters
    assert (p.kind, p.hq_country) == ("legal_entity", None)


def test_csl_hostile_ids(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    rows = [
        {"id": 5, "source": "SDN", "name": "Int Id"},
        {"id": True, "source": "SDN", "name": "Bool Id"},
        {"id": "has space", "source": "SDN", "name": "Spaced"},
        {"id": "x" * 300, "source": "SDN", "name": "Long"},
        {"id": ["a"], "source": "EL", "name": "List Id"},
        {"source": "EL", "name": "Same Name", "entity_number": "12" * 20},
        {"source": "SDN", "name": "NUMBER, Bad", "entity_number": -3},
    ]
    path.write_bytes(orjson.dumps({"results": rows}))
    reg = _reg(str(path), "csl")
    assert reg.profile("csl:5").name == "Int Id"
    src = reg.stats["sources"][0]
    assert [p.split(": ", 1)[1] for p in src["problems"]] == [
        "results[2]: invalid _id 'has space'",
        "results[3]: invalid _id '" + "x" * 40 + "'",
    ]
    names = {p.name: i for i, p in reg.profiles()}
    # ids that are no ids are derived from the list and the name; so are unusable OFAC numbers
    assert names["Bool Id"].startswith("csl:sdn-") and names["List Id"].startswith(
        "csl:entity_list-"
    )
    assert names["Same Name"].startswith("csl:entity_list-")
    assert names["NUMBER, Bad"].startswith("csl:sdn-")
    assert reg.profile(names["NUMBER, Bad"]).kind == "person"


@pytest.mark.parametrize("stated", ["50 - 75", ">= 25%", "at least 50", "25-100%"])
def test_a_possible_majority_is_a_possible_parent(tmp_path: Path, stated: str) -> None:
    """P (CN) holds A "50 - 75%" (or "at least 25%"): P may hold the majority of A, so A's parent
    headquarters is CN (P the only candidate) -- never A's own SG, which lets a D:5-parented
    company through the headquarters rules."""
    reg = _graph(
        tmp_path,
        company("p", jurisdiction=["cn"]),
        company("a", jurisdiction=["sg"]),
        owns("o1", "p", "a", stated),
    )
    a = reg.profile("ftm:a")
    assert (a.ultimate_parent, a.parent_hq_country) == ("ftm:p", "CN")


@pytest.mark.parametrize(
    ("p_share", "k_share", "parent", "hq"),
    [
        ("< 25", None, "ftm:a", "SG"),  # certainly a minority: never a parent
        ("minority", None, "ftm:a", "SG"),
        ("up to 60", None, "ftm:p", "CN"),  # may be 60%
        ("25-75", "50", "ftm:a", "SG"),  # K's stated 50 leaves P at most 50
        ("25-75", "40", "ftm:p", "CN"),  # K's 40 leaves P room for 60
        ("25-75", "30-60", None, None),  # either may hold the majority: unknown, not A's own
        ("25-75", "60", "ftm:k", "US"),  # a stated majority decides
    ],
)
def test_possible_majorities_and_the_room_left(
    tmp_path: Path, p_share: str, k_share: str | None, parent: str | None, hq: str | None
) -> None:
    records = [
        company("p", jurisdiction=["cn"]),
        company("k", jurisdiction=["us"]),
        company("a", jurisdiction=["sg"]),
        owns("o1", "p", "a", p_share),
    ]
    if k_share is not None:
        records.append(owns("o2", "k", "a", k_share))
    a = _graph(tmp_path, *records).profile("ftm:a")
    if parent is None:
        assert (a.ultimate_parent, a.parent_hq_country) == ("ftm:a", None)
    else:
        assert (a.ultimate_parent, a.parent_hq_country) == (parent, hq)
