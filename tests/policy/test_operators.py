"""Each operator and combinator, on matching, non-matching and missing values (table tests).

Every row is evaluated with and without a trace, which must agree (``helpers.decide``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.policy.helpers import matches, one_rule

GROUPS = "groups:\n  D5_OR_MACAU: [CN, RU, MO]\n  ASNS: [4134, 4837]\n"

# (condition in flow YAML, attributes, expected match)
CASES: list[tuple[str, dict[str, Any], bool]] = [
    # bare value (equality) on each type
    ("{entity.country: SG}", {"entity.country": "SG"}, True),
    ("{entity.country: SG}", {"entity.country": "sg"}, False),
    ("{entity.country: SG}", {"entity.known": True}, False),  # None
    ("{entity.country: SG}", {}, False),  # no ownership fact at all
    ("{ownership.affiliated: true}", {"ownership.affiliated": True}, True),
    ("{ownership.affiliated: true}", {"ownership.affiliated": False}, False),
    ("{ownership.affiliated: false}", {"ownership.affiliated": False}, True),
    ("{compute.gpus: 8}", {"compute.gpus": 8}, True),
    ("{compute.gpus: 8}", {"compute.gpus": 8.0}, True),
    ("{compute.gpus: 8}", {"compute.gpus": 9}, False),
    ("{geo.asn: 4134}", {"geo.asn": 4134}, True),
    # in / not_in
    ("{entity.country: {in: [CN, RU]}}", {"entity.country": "RU"}, True),
    ("{entity.country: {in: [CN, RU]}}", {"entity.country": "SG"}, False),
    ("{entity.country: {in: [CN, RU]}}", {"entity.known": True}, False),
    ("{entity.country: {not_in: [US]}}", {"entity.country": "SG"}, True),
    ("{entity.country: {not_in: [US]}}", {"entity.country": "US"}, False),
    ("{entity.country: {not_in: [US]}}", {"entity.known": True}, False),  # None is not "not in"
    ("{geo.asn: {in: [4134, 4837]}}", {"geo.asn": 4837}, True),
    # in_group / not_in_group
    ("{geo.country: {in_group: D5_OR_MACAU}}", {"geo.country": "MO"}, True),
    ("{geo.country: {in_group: D5_OR_MACAU}}", {"geo.country": "SG"}, False),
    ("{geo.country: {in_group: D5_OR_MACAU}}", {"geo.asn": 1}, False),
    ("{geo.country: {not_in_group: D5_OR_MACAU}}", {"geo.country": "SG"}, True),
    ("{geo.country: {not_in_group: D5_OR_MACAU}}", {"geo.country": "CN"}, False),
    ("{geo.country: {not_in_group: D5_OR_MACAU}}", {"geo.asn": 1}, False),
    ("{geo.asn: {in_group: ASNS}}", {"geo.asn": 4134}, True),
    # numeric comparisons, at and around the boundary
    ("{compute.tpp_hours: {gte: 1000}}", {"compute.tpp_hours": 1000}, True),
    ("{compute.tpp_hours: {gte: 1000}}", {"compute.tpp_hours": 999.9}, False),
    ("{compute.tpp_hours: {gt: 1000}}", {"compute.tpp_hours": 1000}, False),
    ("{compute.tpp_hours: {gt: 1000}}", {"compute.tpp_hours": 1000.1}, True),
    ("{compute.tpp_hours: {lte: 1000}}", {"compute.tpp_hours": 1000}, True),
    ("{compute.tpp_hours: {lte: 1000}}", {"compute.tpp_hours": 1001}, False),
    ("{compute.tpp_hours: {lt: 1000}}", {"compute.tpp_hours": 1000}, False),
    ("{compute.tpp_hours: {lt: 1000}}", {"compute.tpp_hours": 0}, True),
    ("{compute.tpp_hours: {lt: 1000}}", {"entity.known": True}, False),  # no compute
    ("{compute.tpp_hours: {gte: 2.0e8}}", {"compute.tpp_hours": 2.0e8}, True),  # YAML 1.2 float
    ("{ownership.listed_share: {gte: 50, lt: 100}}", {"ownership.listed_share": 50.0}, True),
    ("{ownership.listed_share: {gte: 50, lt: 100}}", {"ownership.listed_share": 100.0}, False),
    # contains / intersects on sets
    ("{entity.flags: {contains: sdn}}", {"entity.flags": ["sdn", "meu"]}, True),
    ("{entity.flags: {contains: sdn}}", {"entity.flags": ["meu"]}, False),
    ("{entity.flags: {contains: sdn}}", {"entity.flags": []}, False),
    ("{entity.flags: {intersects: [sdn, entity_list]}}", {"entity.flags": ["entity_list"]}, True),
    ("{entity.flags: {intersects: [sdn, entity_list]}}", {"entity.flags": ["meu"]}, False),
    ("{ownership.listed_via: {contains: x-corp}}", {"ownership.listed_via": ["x-corp"]}, True),
    (
        "{ownership.affiliated_flags: {contains: military_end_user}}",
        {"ownership.affiliated_flags": ["military_end_user", "sdn"]},
        True,
    ),
    (
        "{ownership.affiliated_flags: {contains: military_end_user}}",
        {"ownership.affiliated_flags": ["sdn"]},
        False,
    ),
    (
        "{ownership.affiliated_flags: {contains: military_end_user}}",
        {"ownership.affiliated": True},  # given ownership, no families: the empty set
        False,
    ),
    ("{ownership.affiliated_flags: {contains: sdn}}", {"geo.country": "JP"}, False),  # no fact
    (
        "{ownership.affiliated_flags: {intersects: [sdn, entity_list, meu]}}",
        {"ownership.affiliated_flags": ["meu"]},
        True,
    ),
    (
        "{ownership.affiliated_flags: {intersects: [sdn, entity_list, meu]}}",
        {"ownership.affiliated_flags": ["military_end_user"]},
        False,
    ),
    ("{compute.reasons: {contains: capped}}", {"compute.reasons": ["capped"]}, True),
    # exists
    ("{compute.eccn: {exists: true}}", {"compute.eccn": "3A090.a"}, True),
    ("{compute.eccn: {exists: true}}", {"compute.gpus": 1}, False),
    ("{compute.eccn: {exists: false}}", {"compute.gpus": 1}, True),
    ("{compute.eccn: {exists: false}}", {}, True),
    ("{compute.eccn: {exists: false}}", {"compute.eccn": "4A090.a"}, False),
    ("{entity.flags: {exists: true}}", {"entity.flags": []}, True),
    # principal, claims, request
    ("{principal.tenant: t1}", {"principal.tenant": "t1"}, True),
    ("{principal.nationality: {in_group: D5_OR_MACAU}}", {"principal.nationality": "CN"}, True),
    ("{principal.claims.clearance: secret}", {"principal.claims": {"clearance": "secret"}}, True),
    ("{principal.claims.level: {gte: 3}}", {"principal.claims": {"level": 4}}, True),
    ("{principal.claims.level: {gte: 3}}", {"principal.claims": {"level": "4"}}, False),
    ("{principal.claims.level: {gte: 3}}", {"principal.claims": {"level": True}}, False),
    ("{principal.claims.admin: true}", {"principal.claims": {"admin": 1}}, False),
    ("{principal.claims.admin: true}", {"principal.claims": {"admin": True}}, True),
    ("{principal.claims.groups: {contains: ops}}", {"principal.claims": {"groups": ["ops"]}}, True),
    ("{principal.claims.groups: {contains: ops}}", {"principal.claims": {"groups": "ops"}}, False),
    ("{principal.claims.missing: {exists: false}}", {"principal.subject": "s"}, True),
    ("{principal.claims.org: {not_in: [a]}}", {"principal.claims": {"org": {"x": 1}}}, False),
    ("{request.method: POST}", {"request.method": "POST"}, True),
    ("{request.route: {in: [slurm-submit]}}", {"request.route": "slurm-read"}, False),
    ("{request.purpose: research}", {"request.purpose": "  Research "}, True),
    ("{request.purpose: research}", {"principal.claims": {"purpose": "RESEARCH"}}, True),
    ("{request.purpose: {exists: false}}", {"request.purpose": "   "}, True),
    # combinators
    (
        "{all: [{entity.country: SG}, {geo.country: SG}]}",
        {"entity.country": "SG", "geo.country": "SG"},
        True,
    ),
    (
        "{all: [{entity.country: SG}, {geo.country: SG}]}",
        {"entity.country": "SG", "geo.country": "CN"},
        False,
    ),
    (
        "{any: [{entity.country: CN}, {geo.country: CN}]}",
        {"entity.country": "SG", "geo.country": "CN"},
        True,
    ),
    (
        "{any: [{entity.country: CN}, {geo.country: CN}]}",
        {"entity.country": "SG", "geo.country": "SG"},
        False,
    ),
    ("{not: {entity.known: true}}", {"entity.known": False}, True),
    ("{not: {entity.known: true}}", {}, True),  # missing fact: not(false)
    ("{not: {entity.known: true}}", {"entity.known": True}, False),
    ("{entity.country: SG, geo.country: SG}", {"entity.country": "SG", "geo.country": "CN"}, False),
    ("{entity.country: SG, geo.country: SG}", {"entity.country": "SG", "geo.country": "SG"}, True),
    (
        "{any: [{all: [{compute.controlled: true}, {not: {geo.country: US}}]}, {entity.flags: {contains: sdn}}]}",
        {"compute.controlled": True, "geo.country": "DE"},
        True,
    ),
    (
        "{any: [{all: [{compute.controlled: true}, {not: {geo.country: US}}]}, {entity.flags: {contains: sdn}}]}",
        {"compute.controlled": True, "geo.country": "US", "entity.flags": ["meu"]},
        False,
    ),
    (
        "{any: [{entity.country: A}, {entity.country: B}, {entity.country: C}, {entity.country: D}]}",
        {"entity.country": "D"},
        True,
    ),
    (
        "{all: [{entity.known: true}, {entity.country: D}, {geo.country: D}, {compute.gpus: 1}]}",
        {"entity.known": True, "entity.country": "D", "geo.country": "D", "compute.gpus": 2},
        False,
    ),
]


@pytest.mark.parametrize(("when", "attrs", "expected"), CASES)
def test_condition(tmp_path: Path, when: str, attrs: dict[str, Any], expected: bool) -> None:
    policy = one_rule(tmp_path, when, groups=GROUPS)
    assert matches(policy, attrs) is expected


def test_trace_explains_values_and_results(tmp_path: Path) -> None:
    from gatekeeper.policy import input_from_attributes
    from tests.policy.helpers import TODAY

    policy = one_rule(
        tmp_path,
        "{all: [{geo.country: {in_group: D5_OR_MACAU}}, {not: {entity.known: true}}]}",
        groups=GROUPS,
    )
    v = policy.evaluate(input_from_attributes({"geo.country": "MO"}, TODAY), trace=True)
    assert v.trace == [
        {
            "rule": "hit",
            "action": "allow",
            "matched": True,
            "result": "true",
            "because": "all(geo.country=MO in_group D5_OR_MACAU: true; "
            "not(entity.known=null == true: false): true): true",
        }
    ]
