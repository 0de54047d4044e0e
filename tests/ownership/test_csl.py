"""Consolidated Screening List import: CSV and JSON exports, source mapping, malformed rows."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import orjson
import pytest

from gatekeeper.errors import ConfigError
from gatekeeper.ownership.countries import normalise_name
from gatekeeper.ownership.sources.csl import source_flag

from .helpers import registry, write_csv


def _digest(name: str) -> str:
    return hashlib.sha256(normalise_name(name).encode()).hexdigest()[:16]


HEADER = [
    "_id",
    "source",
    "entity_number",
    "type",
    "programs",
    "name",
    "addresses",
    "nationalities",
    "citizenships",
]
EL = "Entity List (EL) - Bureau of Industry and Security"
SDN = "Specially Designated Nationals (SDN) - Treasury Department"
MEU = "Military End User (MEU) List - Bureau of Industry and Security"


@pytest.mark.parametrize(
    ("source", "flag"),
    [
        (EL, "entity_list"),
        (SDN, "sdn"),
        (MEU, "meu"),
        ("Unverified List (UVL) - Bureau of Industry and Security", "unverified_list"),
        ("Denied Persons List (DPL) - Bureau of Industry and Security", "denied_persons"),
        ("Non-SDN Menu-Based Sanctions List (NS-MBS List) - Treasury Department", "ns_mbs"),
        ("Nonproliferation Sanctions (ISN) - State Department", "nonproliferation"),
        ("SDN", "sdn"),
        ("Some New List", "csl:some_new_list"),
    ],
)
def test_source_flags(source: str, flag: str) -> None:
    assert source_flag(source) == flag


def test_csv_rows(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "c.csv",
        [
            HEADER,
            ["a1", EL, "1", "", "EAR", "Huawei Tech", "Bantian, Shenzhen, CN; X, HK", "", ""],
            ["a2", SDN, "2", "Individual", "RUSSIA", "Ivan", "Moscow, RU", "RU", ""],
            ["a3", MEU, "3", "Entity", "", "Aero Corp", "Street 1, Moscow, 101000", "", ""],
            ["a4", SDN, "4", "Vessel", "", "Sea Star", "", "", ""],
            ["a5", "Brand New (BNL) List", "5", "Entity", "", "Newco", "", "", ""],
        ],
    )
    reg = registry((path, "csl"))
    h = reg.profile("csl:a1")
    assert (h.kind, h.country, h.hq_country, h.flags) == (
        "organization",
        "CN",
        "CN",
        frozenset({"entity_list"}),
    )
    assert h.affiliated
    p = reg.profile("csl:a2")
    assert (p.kind, p.country, p.hq_country) == ("person", "RU", None)
    assert reg.profile("csl:a3").country is None and reg.profile("csl:a3").flags == {"meu"}
    assert reg.profile("csl:a4").kind == "vessel"
    assert reg.profile("csl:a5").flags == {"csl:brand_new_bnl_list"}
    src = reg.stats["sources"][0]
    assert (src["entities"], src["edges"], src["bad_rows"]) == (5, 0, 0)
    assert src["notes"] == {"unknown_sources": 1}


def test_malformed_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    good = f"g1,{EL},1,,,Good Co,,,\n"
    path.write_bytes(
        (",".join(HEADER) + "\n").encode()
        + good.encode()
        + b"b1,SDN,1,,,Too,Many,Fields,Here,!\n"
        + b"b2,SDN,1\n"
        + b",SDN,1,,,No Id,,,\n"
        + b"b3,,1,,,No Source,,,\n"
        + b"b4,SDN,1,,,,,,\n"
        + good.encode()
        + b"b5,SDN,1,,,Caf\xe9,,,\n"
        + b'b6,SDN,1,,,"unterminated,,,\n'
    )
    # more bad rows than good: with max_bad_rows 0 the file is not the CSL as published
    msg = "7 bad rows, more than entities.max_bad_rows=0 and more than the 2 rows read"
    with pytest.raises(ConfigError, match=re.escape(msg)):
        registry((str(path), "csl"))
    reg = registry((str(path), "csl"), max_bad_rows=10)
    src = reg.stats["sources"][0]
    # a row whose _id cell is empty gets a derived id (its OFAC number), like the older export
    assert src["entities"] == 2 and src["bad_rows"] == 7
    assert reg.profile("csl:ofac-1").flags == {"sdn"}
    got = [p.replace(str(path), "F") for p in src["problems"]]
    assert got == [
        "F:3: row has 10 fields, the header has 9",
        "F:4: row has 3 fields, the header has 9",
        "F:6: missing source",
        "F:7: missing name",
        "F:8: duplicate id 'g1' (first at line 2)",
        "F:9: invalid UTF-8",
        "F:10: malformed CSV: unexpected end of data",
    ]


def test_csv_field_and_line_limits(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(
        (",".join(HEADER) + "\n").encode()
        + b"big,SDN,1,,,Big,"
        + b"x" * 200_000
        + b",,\n"
        + b"huge,SDN,1,,,Huge,"
        + b"y" * (2 << 20)
        + b",,\n"
        + f"ok,{SDN},1,,,Ok,,,\n".encode()
    )
    reg = registry((str(path), "csl"), max_bad_rows=5)
    src = reg.stats["sources"][0]
    assert src["entities"] == 1 and src["bad_rows"] == 2
    assert "field larger than field limit" in src["problems"][0]
    assert src["problems"][1].endswith(":3: line longer than 1048576 bytes")
    assert reg.profile("csl:ok").known


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"_id,name\n1,x\n", "header lacks column(s): source"),
        (b"_id,source\n", "header lacks column(s): name"),
        (b"id;source;name\n1;SDN;x\n", "header lacks column(s): source, name"),
        (b"", "empty file: no CSV header"),
        (b"\xff\xfe_id,source,name\n", "header is not UTF-8"),
    ],
)
def test_csv_fatal(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry((str(path), "csl"))


def test_bom_header(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"\xef\xbb\xbf_id,source,name\nz1,SDN,Z\n")
    assert registry((str(path), "csl")).profile("csl:z1").flags == {"sdn"}


def test_json_export(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    rows = [
        {
            "id": "j1",
            "source": EL,
            "name": "J One",
            "type": "Entity",
            "addresses": [{"address": "x", "city": "Beijing", "country": "CN"}],
        },
        {"id": "j2", "source": SDN, "name": "J Two", "type": "Individual", "nationalities": ["IR"]},
        {"id": "j3", "source": SDN},
        "not a row",
        {"source": SDN, "name": "no id"},
    ]
    path.write_bytes(orjson.dumps({"total": 5, "results": rows}))
    reg = registry((str(path), "csl"))
    assert reg.profile("csl:j1").country == "CN"
    assert reg.profile("csl:j2").country == "IR"
    assert reg.profile("csl:sdn-" + _digest("no id")).known  # no id: derived from list and name
    src = reg.stats["sources"][0]
    assert [p.replace(str(path), "F") for p in src["problems"]] == [
        "F: results[2]: missing name",
        "F: results[3]: not an object",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "invalid JSON"),
        (b"[" * 5000 + b"]" * 5000, "invalid JSON"),
        (b'{"results": 3}', "expected"),
        (b"\xff", "invalid JSON"),
    ],
)
def test_json_fatal(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        registry((str(path), "csl"))


def test_alt_names_series(tmp_path: Path) -> None:
    """BIS writes the last of a series of names as "; and Name": the name is "Name"."""
    path = write_csv(
        tmp_path / "c.csv",
        [
            ["_id", "source", "name", "alt_names"],
            ["s1", EL, "CETC 13", "Hebei Semiconductor; HSRI; and CETC Research Institute 13"],
        ],
    )
    p = registry((path, "csl")).profile("csl:s1")
    assert p.alt_names == ("Hebei Semiconductor", "HSRI", "CETC Research Institute 13")
