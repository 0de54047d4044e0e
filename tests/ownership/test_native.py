"""Native entity file: every error located as file:line: key.path: message, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.errors import ConfigError

from .helpers import registry


def _errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        registry((str(path), "native"))
    return [p.replace(str(path), "F") for p in info.value.problems]


ERRORS = [
    ("entities: {}\n", ["F:1: entities: must be a list"]),
    ("- id: a\n", ["F:1: expected a mapping with the key 'entities'"]),
    ("entities: []\nextra: 1\n", ["F:2: extra: unknown key"]),
    ("entities:\n  - 3\n", ["F:2: entities[0]: must be a mapping"]),
    ("entities:\n  - name: x\n", ["F:2: entities[0].id: required"]),
    (
        "entities:\n  - id: a b\n",
        [
            "F:2: entities[0].id: must be a non-empty string without spaces or control "
            "characters (max 256)"
        ],
    ),
    (
        "entities:\n  - id: ftm:Q1\n",
        [
            "F:2: entities[0].id: prefix 'ftm:' is reserved for imported records; "
            "link them with same_as"
        ],
    ),
    (
        "entities:\n  - id: a\n    colour: red\n",
        ["F:3: entities[0].colour: unknown key"],
    ),
    (
        "entities:\n  - id: a\n  - id: a\n",
        ["F:3: entities[1].id: duplicate id 'a' (first at line 2)"],
    ),
    (
        "entities:\n  - id: a\n    kind: trust\n",
        ["F:3: entities[0].kind: must be one of company, organization, person, legal_entity"],
    ),
    (
        "entities:\n  - id: a\n    country: XX\n    hq_country: sg\n",
        [
            "F:3: entities[0].country: 'XX' is not an ISO 3166-1 alpha-2 country code",
            "F:4: entities[0].hq_country: 'sg' is not an ISO 3166-1 alpha-2 country code",
        ],
    ),
    (
        "entities:\n  - id: a\n    flags: [sdn, Entity List]\n",
        [
            "F:3: entities[0].flags[1]: 'Entity List' is not a flag "
            "(lower-case letters, digits and _ . : -)"
        ],
    ),
    (
        "entities:\n  - id: a\n    owners:\n      - {id: b, share: 101}\n  - id: b\n",
        ["F:4: entities[0].owners[0].share: must be a number from 0 to 100"],
    ),
    (
        "entities:\n  - id: a\n    owners:\n      - {id: b, share: true}\n  - id: b\n",
        ["F:4: entities[0].owners[0].share: must be a number from 0 to 100"],
    ),
    (
        "entities:\n  - id: a\n    owners:\n      - {id: b}\n  - id: b\n",
        ["F:4: entities[0].owners[0].share: required (use control: true for control only)"],
    ),
    (
        "entities:\n  - id: a\n    owners:\n      - {id: a, share: 10}\n",
        ["F:4: entities[0].owners[0].id: an entity cannot own itself"],
    ),
    (
        "entities:\n  - id: a\n    owners:\n      - {id: b, share: 10}\n"
        "      - {id: b, share: 20}\n  - id: b\n",
        ["F:5: entities[0].owners[1].id: owner 'b' listed twice (first at owners[0])"],
    ),
    (
        "entities:\n  - id: a\n    owners:\n      - {id: b, share: 60}\n"
        "      - {id: c, share: 50.5}\n  - id: b\n  - id: c\n",
        ["F:3: entities[0].owners: shares add up to 110.5%, over 100%"],
    ),
    (
        "entities:\n  - id: a\n    owners:\n      - {id: b, control: true}\n"
        "      - {id: c, share: 10, control: true}\n  - id: b\n  - id: c\n",
        ["F:3: entities[0].owners: 2 control edges (b, c); at most one owner may control"],
    ),
    (
        "entities:\n  - id: a\n    owners:\n      - {id: b, share: 10, control: yes please}\n"
        "  - id: b\n",
        ["F:4: entities[0].owners[0].control: must be true or false"],
    ),
    (
        "entities:\n  - id: a\n    owners:\n      - {id: ghost, share: 10}\n",
        ["F:4: owner 'ghost' is not defined in any source"],
    ),
    (
        "entities:\n  - id: a\n    same_as: [acme, ftm:Q1]\n  - id: b\n    same_as: [ftm:Q1]\n",
        [
            "F:3: entities[0].same_as[0]: 'acme' must name an imported record (ftm:... or csl:...)",
            "F:5: entities[1].same_as[0]: 'ftm:Q1' is already an alias of 'a'",
        ],
    ),
    (
        "entities:\n  - id: a\n    licenses:\n      - id: L1\n        eccns: [3A09]\n"
        "        countries: [SG, XX]\n        expires: someday\n        max_tpp_hours: 0\n"
        "        holder: me\n",
        [
            "F:9: entities[0].licenses[0].holder: unknown key",
            "F:5: entities[0].licenses[0].eccns[0]: '3A09' is not an ECCN (e.g. 3A090.a)",
            "F:6: entities[0].licenses[0].countries[1]: 'XX' is not an ISO 3166-1 alpha-2 "
            "country code",
            "F:7: entities[0].licenses[0].expires: must be a date (YYYY-MM-DD)",
            "F:8: entities[0].licenses[0].max_tpp_hours: must be a number > 0",
        ],
    ),
    (
        "entities:\n  - id: a\n    licenses:\n      - {eccns: [], countries: sg}\n",
        [
            "F:4: entities[0].licenses[0].id: required",
            "F:4: entities[0].licenses[0].eccns: must be a non-empty list of ECCNs",
            "F:4: entities[0].licenses[0].countries: must be a non-empty list of countries",
        ],
    ),
    (
        "entities:\n  - id: a\n    licenses:\n      - {id: L1, eccns: [4A090], countries: [SG]}\n"
        "      - {id: L1, eccns: [4A090], countries: [MY]}\n",
        ["F:5: entities[0].licenses[1].id: duplicate licence 'L1'"],
    ),
    (
        "entities:\n  - id: a\n   bad: indent\n",
        [
            "F:3: invalid YAML: while parsing a block collection: expected <block end>, "
            "but found '<block mapping start>'"
        ],
    ),
    ("entities: [&a x, *a, !!python/object:os.system x]\n", None),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_native_errors(tmp_path: Path, text: str, expected: list[str] | None) -> None:
    got = _errors(tmp_path, text)
    if expected is None:
        assert len(got) == 1 and "invalid YAML" in got[0]
    else:
        assert got == expected


def test_all_problems_at_once(tmp_path: Path) -> None:
    got = _errors(
        tmp_path, "entities:\n  - id: a\n    kind: x\n  - id: b\n    country: ZZ\n  - {}\n"
    )
    assert len(got) == 3


def test_hostile_native_files(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_bytes(b"entities:\n  - id: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        registry((str(path), "native"))
    # Billion laughs: alias expansion is bounded by yamlsrc.
    lol = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
        for p, c in zip("abcdefghijklmnopqrs", "bcdefghijklmnopqrst", strict=True)
    )
    path.write_text(lol)
    with pytest.raises(ConfigError):
        registry((str(path), "native"))
    with pytest.raises(ConfigError, match="cannot read"):
        registry((str(tmp_path / "missing.yaml"), "native"))


def test_empty_file_is_an_empty_registry(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text("")
    reg = registry((str(path), "native"))
    assert len(reg) == 0 and reg.stats["sources"][0]["entities"] == 0


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="format: unknown format 'xml'"):
        registry((str(tmp_path / "x"), "xml"))
