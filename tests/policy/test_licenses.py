"""When a held licence turns require_license into allow (policy/licensing.py)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.policy.helpers import TODAY, decide, policy_of

POLICY = """
version: 1
quotas:
  fm: {unit: tpp_hours, limit: 2.0e+8, window: 30d, per: ultimate_parent}
rules:
  - {id: d5-headquarters, when: {ownership.parent_hq_country: CN}, action: require_license}
  - {id: foreign, when: {entity.known: true}, action: allow, quota: fm}
"""

LIC = {
    "id": "D1234567",
    "eccns": ["3A090.a", "4A090.a"],
    "countries": ["SG"],
    "expires": "2027-06-30",
    "max_tpp_hours": 5.0e7,
}


def attrs(lic: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "entity.known": True,
        "entity.country": "SG",
        "entity.licenses": [lic or LIC],
        "ownership.parent_hq_country": "CN",
        "compute.controlled": True,
        "compute.eccn": "3A090.a",
        "compute.gpus": 32,
        "compute.hours": 12,
        "compute.tpp": 15832,  # 6,079,488 TPP-hours
        "geo.country": "SG",
    }
    base.update(over)
    return base


@pytest.fixture
def policy(tmp_path: Path):  # type: ignore[no-untyped-def]
    return policy_of(tmp_path, POLICY)


def test_valid_licence_allows_and_is_recorded(policy) -> None:  # type: ignore[no-untyped-def]
    v = decide(policy, attrs())
    assert (v.action, v.rule, v.status) == ("allow", "d5-headquarters", None)
    assert v.license is not None and v.license.id == "D1234567"
    assert v.reasons == ["d5-headquarters", "license:D1234567", "foreign"]
    assert [q.name for q in v.quotas] == ["fm"]


def test_licence_expiring_today_is_still_valid(policy) -> None:  # type: ignore[no-untyped-def]
    v = decide(policy, attrs({**LIC, "expires": TODAY.isoformat()}))
    assert v.action == "allow"


@pytest.mark.parametrize(
    ("lic", "over", "why"),
    [
        ({**LIC, "expires": "2026-11-24"}, {}, "expired"),
        ({**LIC, "expires": None}, {}, "no expiry date"),
        ({**LIC, "expires": "someday"}, {}, "unreadable expiry"),
        ({**LIC, "eccns": ["4A090.a"]}, {}, "wrong ECCN"),
        (LIC, {"compute.eccn": "3A090.b"}, "ECCN not listed"),
        (LIC, {"compute.eccn": None}, "no ECCN on the request"),
        ({**LIC, "countries": ["MY"]}, {}, "entity country not covered"),
        (LIC, {"geo.country": "CN"}, "used from a country the licence does not name"),
        (LIC, {"compute.gpus": 1000}, "one request larger than the whole budget"),
    ],
)
def test_licence_that_does_not_cover_keeps_require_license(
    policy,
    lic: dict[str, Any],
    over: dict[str, Any],
    why: str,  # type: ignore[no-untyped-def]
) -> None:
    v = decide(policy, attrs(lic, **over))
    assert (v.action, v.rule, v.status, v.license, v.quotas) == (
        "require_license",
        "d5-headquarters",
        451,
        None,
        (),
    ), why


def test_exhausted_budget_says_license_exhausted(policy) -> None:  # type: ignore[no-untyped-def]
    # 5.0e7 - 4.5e7 = 5.0e6 left < 6,079,488 requested.
    v = decide(policy, attrs(), license_used={"D1234567": 4.5e7})
    assert (v.action, v.reasons) == ("require_license", ["d5-headquarters", "license-exhausted"])
    # Exactly enough left is enough.
    v = decide(policy, attrs(), license_used={"D1234567": 5.0e7 - 6079488.0})
    assert v.action == "allow"


def test_uncapped_licence_and_parent_paragraph(policy) -> None:  # type: ignore[no-untyped-def]
    lic = {**LIC, "eccns": ["3A090"], "max_tpp_hours": None}
    v = decide(policy, attrs(lic, **{"compute.eccn": "3a090.A"}), license_used={"D1234567": 1e12})
    assert v.action == "allow"


def test_internal_or_unknown_location_checks_the_entity_country_only(policy) -> None:  # type: ignore[no-untyped-def]
    assert (
        decide(policy, attrs(**{"geo.country": "internal", "geo.internal": True})).action == "allow"
    )
    assert decide(policy, attrs(**{"geo.country": None, "geo.asn": 1})).action == "allow"


def test_second_licence_is_used_when_the_first_does_not_cover(policy) -> None:  # type: ignore[no-untyped-def]
    old = {**LIC, "id": "OLD", "expires": "2020-01-01"}
    a = attrs()
    a["entity.licenses"] = [old, LIC]
    v = decide(policy, a)
    assert v.license is not None and v.license.id == "D1234567"


def test_trace_explains_each_licence(policy) -> None:  # type: ignore[no-untyped-def]
    from gatekeeper.policy import input_from_attributes

    a = attrs()
    a["entity.licenses"] = [{**LIC, "id": "OLD", "expires": "2020-01-01"}, LIC]
    v = policy.evaluate(input_from_attributes(a, TODAY), trace=True)
    assert v.trace[-1] == {
        "rule": "license",
        "action": "require_license",
        "matched": True,
        "because": "OLD: expired 2020-01-01; D1234567: covers the request",
    }


def test_default_require_license_uses_licences(tmp_path: Path) -> None:
    p = policy_of(tmp_path, "version: 1\nrules: []\n", default_action="require_license")
    v = decide(p, attrs(), today=datetime.date(2026, 1, 1))
    assert (v.action, v.rule, v.license.id if v.license else None) == ("allow", None, "D1234567")
    assert v.reasons == ["default-action", "license:D1234567"]
