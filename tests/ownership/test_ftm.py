"""FollowTheMoney import: percentage parser, topics, bad rows, hostile input."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gatekeeper.errors import ConfigError
from gatekeeper.ownership.sources.ftm import MAX_LINE_BYTES, parse_percentage, percentage_bounds

from .helpers import company, owns, registry, write_ftm

JUST_ABOVE_50 = 50.0001

PERCENTAGES = [
    ("50%", 50.0),
    ("50", 50.0),
    ("50.5", 50.5),
    ("50,5 %", 50.5),
    ("  100 % ", 100.0),
    ("0", 0.0),
    ("0.5", 0.5),
    (".5%", 0.5),
    ("33.333333", 33.333333),
    ("50 percent", 50.0),
    ("> 50", JUST_ABOVE_50),
    (">50%", JUST_ABOVE_50),
    ("more than 50%", JUST_ABOVE_50),
    ("> 100", 100.0),
    (">= 50", 50.0),
    ("≥ 25 %", 25.0),
    ("at least 75%", 75.0),
    ("majority", JUST_ABOVE_50),
    ("Majority", JUST_ABOVE_50),
    ("minority", 0.0),
    ("< 25", 0.0),
    ("less than 25%", 0.0),
    ("25-50%", 25.0),
    ("25% - 50%", 25.0),
    ("50 to 75", 50.0),
]
GARBAGE = [
    "",
    "   ",
    "garbage",
    "fifty",
    "101",
    "-5",
    "50%%",
    "1,000",
    "nan",
    "inf",
    "1e2",
    "50-25",
    "> 150",
    "50 50",
    "5" * 100,
    "½",
]


@pytest.mark.parametrize(("text", "want"), PERCENTAGES)
def test_percentage(text: str, want: float) -> None:
    assert parse_percentage(text) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("text", GARBAGE)
def test_percentage_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_percentage(text)


def test_import_entities_edges_topics(tmp_path: Path) -> None:
    path = write_ftm(
        tmp_path / "f.jsonl",
        [
            company("A", jurisdiction=["ky"], mainCountry=["cn"], topics=["sanction", "role.pep"]),
            company("B", country=["sg"]),
            {"id": "P", "schema": "Person", "properties": {"name": ["P"], "nationality": ["ru"]}},
            {"id": "L", "schema": "LegalEntity", "properties": {"topics": ["export.control"]}},
            {"id": "O", "schema": "Organization", "properties": {"country": ["suhh"]}},
            {"id": "addr", "schema": "Address", "properties": {}},
            owns("o1", "A", "B", "50,5 %"),
            owns("o2", "P", "A", "majority"),
            owns("o3", "L", "O"),
        ],
    )
    reg = registry((path, "ftm"))
    a = reg.profile("ftm:A")
    assert (a.country, a.hq_country, a.kind) == ("KY", "CN", "company")
    assert a.flags == frozenset({"sdn", "role.pep"})
    assert reg.profile("ftm:L").flags == frozenset({"entity_list"})
    b = reg.profile("ftm:B")
    assert b.affiliated and b.listed_share == 50.5 and b.ultimate_parent == "ftm:P"
    assert b.parent_path == ("ftm:B", "ftm:A", "ftm:P")
    assert reg.profile("ftm:P").country == "RU" and reg.profile("ftm:P").kind == "person"
    o = reg.profile("ftm:O")
    assert o.country is None and not o.affiliated  # a share-less edge counts nothing
    src = reg.stats["sources"][0]
    assert (src["entities"], src["edges"], src["bad_rows"]) == (5, 3, 0)
    assert src["skipped"] == {"Address": 1}
    assert src["notes"] == {"unknown_countries": 1, "edges_without_share": 1}


def _bad(tmp_path: Path, lines: list[bytes], max_bad_rows: int = 100) -> dict[str, object]:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"".join(lines))
    reg = registry((str(path), "ftm"), max_bad_rows=max_bad_rows)
    src: dict[str, object] = reg.stats["sources"][0]
    return src


def _rec(obj: object) -> bytes:
    return orjson.dumps(obj) + b"\n"


def test_bad_rows_are_reported_with_lines(tmp_path: Path) -> None:
    src = _bad(
        tmp_path,
        [
            _rec(company("A")),
            b"{not json\n",
            _rec([1, 2]),
            _rec({"id": "x"}),
            _rec({"schema": "Company"}),
            _rec({"id": "bad id", "schema": "Company"}),
            _rec(company("A")),
            _rec(owns("o1", "A", "A", "10")),
            _rec(owns("o2", "A", "ghost", "10")),
            _rec(owns("o3", "A", "B", "lots")),
            _rec({"id": "o4", "schema": "Ownership", "properties": {"owner": ["A"]}}),
            _rec({"id": "o5", "schema": "Company", "properties": []}),
            b"\n",
            _rec(company("B")),
        ],
    )
    assert src["entities"] == 2 and src["bad_rows"] == 10
    problems = [p.split(": ", 1)[1] for p in src["problems"]]  # type: ignore[attr-defined]
    assert problems == [
        "invalid JSON: unexpected character, expected a string key: line 1 column 2 (char 1)",
        "not a JSON object",
        "schema: missing or not a string",
        "id: missing or not a valid id",
        "id: missing or not a valid id",
        "id: duplicate id 'A' (first at line 1)",
        "properties.asset: missing or not a valid id",
        "properties: not an object",
        "entity 'ftm:A' cannot own itself",
        "asset 'ftm:ghost' is not defined in any source",
    ]
    lines = [int(p.split(":")[1]) for p in src["problems"]]  # type: ignore[attr-defined]
    assert lines == [2, 3, 4, 5, 6, 7, 11, 12, 8, 9]
    # An unreadable share is not a bad row: the holding is kept, of unknown size, with a warning.
    assert [w.split(": ", 1)[1] for w in src["warnings"]] == [  # type: ignore[attr-defined]
        "properties.percentage: ownership 'o3' (ftm:A -> ftm:B): 'lots' cannot be read"
        " (not a percentage); a holding of unknown size"
    ]


def test_max_bad_rows_fails_the_load(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(_rec(company("A")) + b"oops\n" + b"oops\n")
    assert registry((str(path), "ftm"), max_bad_rows=2).stats["sources"][0]["bad_rows"] == 2
    with pytest.raises(ConfigError) as info:
        registry((str(path), "ftm"), max_bad_rows=1)
    assert info.value.problems[-1] == f"{path}: 2 bad rows, more than entities.max_bad_rows=1"
    assert info.value.problems[0].startswith(f"{path}:2: invalid JSON")


def test_hostile_input(tmp_path: Path) -> None:
    huge = b'{"id": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'
    deep = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    src = _bad(
        tmp_path,
        [
            huge,
            _rec(company("A")),
            b'{"id": "\xff\xfe", "schema": "Company"}\n',
            deep,
            b"\x00\x00\x00\n",
            _rec(company("B")),
            b"x" * (MAX_LINE_BYTES * 3),  # overlong last line without a newline
        ],
    )
    assert src["entities"] == 2 and src["bad_rows"] == 5
    problems = src["problems"]
    assert isinstance(problems, list)
    assert problems[0].endswith(f":1: line longer than {MAX_LINE_BYTES} bytes")
    assert ":3: invalid JSON" in problems[1] and "UTF-8" in problems[1]
    assert ":4: invalid JSON" in problems[2]
    assert ":5: invalid JSON" in problems[3]
    assert problems[4].endswith(f":7: line longer than {MAX_LINE_BYTES} bytes")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        registry((str(tmp_path / "nope.jsonl"), "ftm"))


def test_duplicate_edges_keep_the_larger_share(tmp_path: Path) -> None:
    path = write_ftm(
        tmp_path / "f.jsonl",
        [
            company("X", topics=["sanction"]),
            company("A"),
            owns("o1", "X", "A", "30"),
            owns("o2", "X", "A", "55"),
        ],
    )
    reg = registry((path, "ftm"))
    assert reg.profile("ftm:A").listed_share == 55.0
    assert reg.stats["duplicate_edges"] == 1


@pytest.mark.parametrize(
    ("text", "bounds"),
    [
        ("50%", (50.0, 50.0)),
        (">= 25", (25.0, 100.0)),
        ("25-75%", (25.0, 75.0)),
        ("< 25", (0.0, 25.0)),
        ("minority", (0.0, 50.0)),
        ("majority", (50.0001, 100.0)),
        # the mapping table of docs/entities.md
        ("51-100%", (51.0, 100.0)),
        ("50-100", (50.0, 100.0)),
        ("at least 50%", (50.0, 100.0)),
        ("> 50", (50.0001, 100.0)),
        ("30,5", (30.5, 30.5)),
        ("< 40", (0.0, 40.0)),
    ],
)
def test_percentage_bounds(text: str, bounds: tuple[float, float]) -> None:
    assert percentage_bounds(text) == pytest.approx(bounds, abs=1e-9)
