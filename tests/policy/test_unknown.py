"""Three-valued evaluation: unknown attribute values, Kleene combinators, ``exists``/``missing``,
which rules apply on an unknown condition, the ``unknown:<attribute>`` reasons and the trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatekeeper.policy import PolicySet, input_from_attributes
from gatekeeper.policy.purpose import declared_purposes, header_purpose
from tests.policy.helpers import TODAY, decide, policy_of


def _each_action(tmp_path: Path, when: str) -> dict[str, PolicySet]:
    out = {}
    for action in ("deny", "require_license", "flag", "allow"):
        out[action] = policy_of(
            tmp_path,
            f"version: 1\nrules:\n  - id: x\n    when: {{{when}}}\n    action: {action}\n",
            default_action="allow" if action != "allow" else "deny",
        )
    return out


def result(tmp_path: Path, when: str, attrs: dict[str, Any]) -> bool | None:
    """The condition's three-valued result, read from the trace of a one-rule flag policy."""
    p = policy_of(tmp_path, f"version: 1\nrules:\n  - id: x\n    when: {when}\n    action: flag\n")
    v = p.evaluate(input_from_attributes(attrs, TODAY), trace=True)
    return {"true": True, "false": False, "unknown": None}[v.trace[0]["result"]]


NO_COUNTRY = {"entity.known": True, "entity.id": "e1"}  # the registry has no country for it
CN = {"entity.known": True, "entity.country": "CN"}
US = {"entity.known": True, "entity.country": "US"}
NO_ENTITY: dict[str, Any] = {"request.route": "r"}  # no ownership fact at all (absent)

KLEENE = [
    # condition, attributes, result
    ("{entity.country: CN}", NO_COUNTRY, None),
    ("{entity.country: CN}", CN, True),
    ("{entity.country: CN}", NO_ENTITY, False),  # absent fact: false, as before
    ("{not: {entity.country: CN}}", NO_COUNTRY, None),
    ("{not: {entity.country: CN}}", US, True),
    ("{entity.country: {not_in: [CN]}}", NO_COUNTRY, None),
    ("{all: [{entity.known: true}, {entity.country: CN}]}", NO_COUNTRY, None),
    ("{all: [{entity.known: false}, {entity.country: CN}]}", NO_COUNTRY, False),
    ("{any: [{entity.known: true}, {entity.country: CN}]}", NO_COUNTRY, True),
    ("{any: [{entity.known: false}, {entity.country: CN}]}", NO_COUNTRY, None),
    ("{any: [{entity.known: false}, {entity.country: CN}, {entity.id: e1}]}", NO_COUNTRY, True),
    ("{all: [{entity.known: true}, {entity.country: CN}, {entity.id: e2}]}", NO_COUNTRY, False),
    ("{not: {any: [{entity.known: false}, {entity.country: CN}]}}", NO_COUNTRY, None),
    # exists and missing are always known
    ("{entity.country: {exists: true}}", NO_COUNTRY, False),
    ("{entity.country: {exists: false}}", NO_COUNTRY, True),
    ("{entity.country: {missing: true}}", NO_COUNTRY, True),
    ("{entity.country: {missing: false}}", NO_COUNTRY, False),
    ("{entity.country: {missing: true}}", CN, False),
    ("{entity.country: {missing: true}}", NO_ENTITY, False),  # absent is not unknown
    ("{entity.country: {exists: false}}", NO_ENTITY, True),
    ("{not: {entity.country: {missing: true}}}", NO_COUNTRY, False),
    # a known-empty field is not unknown: no ECCN means none applies
    ("{compute.eccn: {missing: true}}", {"compute.gpus": 1}, False),
    ("{compute.eccn: 3A090.a}", {"compute.gpus": 1}, False),
    # which attributes can be unknown
    ("{geo.country: US}", {"geo.known": False}, None),
    ("{geo.asn: {gt: 1}}", {"geo.country": "US"}, None),
    ("{geo.vpn: true}", {"geo.country": "US"}, False),  # not on the list: known not-a-VPN
    # an internal address has no ASN or registered country to look up: no value, not unknown
    ("{geo.asn: {in: [64500]}}", {"geo.country": "internal", "geo.internal": True}, False),
    ("{geo.asn: {missing: true}}", {"geo.country": "internal", "geo.internal": True}, False),
    ("{geo.asn: {missing: false}}", {"geo.country": "internal", "geo.internal": True}, True),
    ("{geo.asn: {missing: true}}", {"geo.country": "US"}, True),
    (
        "{not: {geo.registered_country: CN}}",
        {"geo.country": "internal", "geo.internal": True},
        True,
    ),
    ("{ownership.parent_hq_country: CN}", {"ownership.parent_hq_country": None}, None),
    ("{compute.gpu_model: H100-SXM}", {"compute.gpu_model": "H100-SXM"}, True),
    ("{compute.gpu_model: X9}", {"compute.gpu_model": "X9", "compute.model_known": False}, None),
    ("{compute.gpu_model: {missing: true}}", {"compute.model_known": False}, True),
    ("{principal.claims.clearance: secret}", {"principal.subject": "s"}, None),
    ("{principal.claims.clearance: {missing: true}}", {"principal.subject": "s"}, True),
    ("{principal.nationality: {in: [CN]}}", {"principal.subject": "s"}, None),
    ("{principal.subject: s}", {"principal.subject": "s"}, True),
]


@pytest.mark.parametrize(("when", "attrs", "expected"), KLEENE)
def test_three_valued_results(
    tmp_path: Path, when: str, attrs: dict[str, Any], expected: bool | None
) -> None:
    assert result(tmp_path, when, attrs) is expected


@pytest.mark.parametrize(
    ("action", "applies"),
    [("deny", True), ("require_license", True), ("flag", True), ("allow", False)],
)
def test_which_actions_apply_on_an_unknown_condition(
    tmp_path: Path, action: str, applies: bool
) -> None:
    p = _each_action(tmp_path, "entity.country: {in: [CN, RU]}")[action]
    v = decide(p, NO_COUNTRY)
    if not applies:
        assert (v.action, v.rule, v.reasons) == ("deny", None, ["default-action"])
    elif action == "flag":
        assert (v.action, v.reasons) == ("allow", ["default-action", "x", "unknown:entity.country"])
    else:
        assert (v.action, v.rule) == (action, "x")
        assert v.reasons == ["x", "unknown:entity.country"]


def test_reasons_name_only_the_attributes_that_left_the_result_open(tmp_path: Path) -> None:
    p = policy_of(
        tmp_path,
        """
        version: 1
        rules:
          - id: hq
            when:
              any:
                - {entity.hq_country: CN}
                - {ownership.parent_hq_country: CN}
                - {geo.country: CN}
            action: deny
          - id: ok
            when: {entity.known: true}
            action: allow
        """,
    )
    attrs = {"entity.known": True, "entity.country": "SG", "geo.country": "SG"}
    v = decide(p, {**attrs, "ownership.parent_hq_country": None})
    # hq_country is unknown, parent HQ unknown, geo known and false: the first two are named
    assert v.reasons == ["hq", "unknown:entity.hq_country", "unknown:ownership.parent_hq_country"]
    v = decide(p, {**attrs, "entity.hq_country": "SG", "ownership.parent_hq_country": "SG"})
    assert (v.action, v.reasons) == ("allow", ["ok"])
    v = decide(p, {**attrs, "ownership.parent_hq_country": "CN"})  # true despite an unknown
    assert v.reasons == ["hq"]


def test_trace_shows_unknown_values_and_results(tmp_path: Path) -> None:
    p = policy_of(
        tmp_path,
        "version: 1\nrules:\n  - {id: x, when: {all: [{entity.known: true}, "
        "{not: {entity.country: {in: [CN]}}}]}, action: allow}\n",
    )
    v = p.evaluate(input_from_attributes(NO_COUNTRY, TODAY), trace=True)
    assert v.trace[0] == {
        "rule": "x",
        "action": "allow",
        "matched": False,
        "result": "unknown",
        "because": "all(entity.known=true == true: true; "
        "not(entity.country=unknown in [CN]: unknown): unknown): unknown",
    }
    assert (v.action, v.rule) == ("deny", None)


def test_allow_behind_an_unknown_catch_all_does_not_admit(tmp_path: Path) -> None:
    # The shape that let an entity with no country through: "foreign" = not the home country.
    p = policy_of(
        tmp_path,
        """
        version: 1
        rules:
          - {id: foreign, when: {all: [{entity.known: true}, {entity.country: {not_in: [US]}}]},
             action: allow}
        """,
    )
    assert decide(p, {**NO_COUNTRY, "compute.gpus": 8}).action == "deny"
    assert decide(p, {**CN, "compute.gpus": 8}).rule == "foreign"


def test_purpose_is_the_claim_plus_the_header(tmp_path: Path) -> None:
    p = policy_of(
        tmp_path,
        """
        version: 1
        groups: {BAD: [nuclear-weapons, cbrn]}
        rules:
          - {id: bad, when: {request.purpose: {in_group: BAD}}, action: deny}
          - {id: stated, when: {request.purpose: {exists: true}}, action: flag}
          - {id: clean, when: {request.purpose: {not_in_group: BAD}}, action: allow}
        """,
    )
    claim = {"principal.subject": "s", "principal.purpose": "Nuclear-Weapons"}
    assert decide(p, {**claim, "request.purpose": "research"}).rule == "bad"
    assert decide(p, {**claim}).rule == "bad"
    v = decide(p, {"principal.purpose": "research", "request.purpose": " research , CBRN "})
    assert v.rule == "bad"
    v = decide(p, {"principal.purpose": "research", "request.purpose": "protein-folding"})
    assert (v.action, v.reasons) == ("allow", ["clean", "stated"])
    v = decide(p, {"principal.subject": "s", "request.route": "r"})  # nothing declared
    assert (v.action, v.reasons) == ("allow", ["clean"])


def test_declared_purposes_normalise_and_union() -> None:
    assert declared_purposes(None, None) == frozenset()
    assert declared_purposes(" Research ", None) == {"research"}
    assert declared_purposes("research", "CBRN, ,protein-folding") == {
        "research",
        "cbrn",
        "protein-folding",
    }
    assert declared_purposes(None, "") == frozenset()


def test_header_purpose_refuses_repeats_and_oversized_values() -> None:
    from multidict import CIMultiDict

    from gatekeeper.errors import BadRequest

    assert header_purpose(CIMultiDict()) is None
    assert header_purpose(CIMultiDict([("x-gatekeeper-purpose", "research")])) == "research"
    with pytest.raises(BadRequest) as info:
        header_purpose(CIMultiDict([("X-Gatekeeper-Purpose", "a"), ("x-gatekeeper-purpose", "a")]))
    assert (info.value.reason, info.value.status, info.value.detail) == (
        "purpose-repeated",
        400,
        "more than one X-Gatekeeper-Purpose header",
    )
    for hostile in ("x" * 1025, ",".join(["p"] * 17)):
        with pytest.raises(BadRequest) as info:
            header_purpose(CIMultiDict([("X-Gatekeeper-Purpose", hostile)]))
        assert (info.value.reason, info.value.detail) == (
            "purpose-invalid",
            "X-Gatekeeper-Purpose longer than 1024 characters or more than 16 purposes",
        )
    assert header_purpose(CIMultiDict([("X-Gatekeeper-Purpose", "x" * 1024)])) == "x" * 1024
    # Underscore spellings are the same header (CGI/WSGI upstreams read them as one).
    assert header_purpose(CIMultiDict([("X_GATEKEEPER_PURPOSE", "cbrn")])) == "cbrn"
    assert header_purpose(CIMultiDict([("X-Gatekeeper-Tenant", "t")])) is None
    with pytest.raises(BadRequest) as info:
        header_purpose(CIMultiDict([("X-Gatekeeper-Purpose", "a"), ("X_Gatekeeper-Purpose", "b")]))
    assert info.value.reason == "purpose-repeated"


def test_missing_operand_must_be_a_boolean(tmp_path: Path) -> None:
    from gatekeeper.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        policy_of(
            tmp_path,
            "version: 1\nrules:\n  - id: x\n    when: {entity.country: {missing: yes please}}\n"
            "    action: deny\n",
        )
    assert info.value.problems[0].endswith(
        "rules[0].when.entity.country.missing: missing needs true or false, got string 'yes please'"
    )


def test_wide_and_deep_conditions_compile(tmp_path: Path) -> None:
    # The generated expression must not nest per part (Python bounds nested parentheses).
    wide = ", ".join(f"{{entity.id: e{i}}}" for i in range(400))
    p = policy_of(
        tmp_path, f"version: 1\nrules:\n  - {{id: x, when: {{any: [{wide}]}}, action: deny}}\n"
    )
    assert decide(p, {"entity.known": True, "entity.id": "e399"}).rule == "x"
    assert decide(p, {"entity.known": True, "entity.id": "e400"}).rule is None
    cond = "{entity.country: CN}"
    for i in range(15):  # as deep as MAX_DEPTH allows, three parts a level
        cond = f"{{all: [{{not: {cond}}}, {{entity.id: {{not_in: [z{i}]}}}}], entity.known: true}}"
    p = policy_of(tmp_path, f"version: 1\nrules:\n  - {{id: y, when: {cond}, action: deny}}\n")
    # fifteen negations of a true condition are false; of an unknown one, unknown (deny applies)
    assert decide(p, {"entity.known": True, "entity.id": "e1", "entity.country": "CN"}).rule is None
    v = decide(p, {"entity.known": True, "entity.id": "e1"})
    assert (v.rule, v.reasons) == ("y", ["y", "unknown:entity.country"])
