"""Precedence, flags, status overrides, quotas, default action, and the policy version."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.policy import load_policy_set
from tests.policy.helpers import decide, policy_of, write_policy

ALL = """
version: 1
quotas:
  q1: {unit: tpp_hours, limit: 1.0e+6, window: 30d, per: ultimate_parent}
  q2: {unit: requests, limit: 10, window: 1h, per: tenant}
rules:
  - {id: allow-a, when: {entity.country: SG}, action: allow, quota: q1}
  - {id: flag-a, when: {geo.country: JP}, action: flag}
  - {id: license-a, when: {compute.controlled: true}, action: require_license}
  - {id: deny-a, when: {ownership.affiliated: true}, action: deny}
  - {id: allow-b, when: {entity.known: true}, action: allow, quota: [q2, q1]}
  - {id: deny-b, when: {entity.flags: {contains: sdn}}, action: deny, status: 403}
  - {id: license-b, when: {geo.country: CN}, action: require_license, status: 403}
"""


@pytest.fixture
def policy(tmp_path: Path):  # type: ignore[no-untyped-def]
    return policy_of(tmp_path, ALL)


def test_deny_beats_require_license_and_allow(policy) -> None:  # type: ignore[no-untyped-def]
    v = decide(
        policy,
        {"entity.country": "SG", "ownership.affiliated": True, "compute.controlled": True},
    )
    assert (v.action, v.rule, v.status, v.quotas) == ("deny", "deny-a", 451, ())
    assert v.reasons == ["deny-a"]


def test_first_deny_in_file_order_decides_and_all_denies_are_reasons(policy) -> None:  # type: ignore[no-untyped-def]
    v = decide(policy, {"ownership.affiliated": True, "entity.flags": ["sdn"], "geo.country": "JP"})
    assert (v.action, v.rule, v.status) == ("deny", "deny-a", 451)
    assert v.reasons == ["deny-a", "deny-b", "flag-a"]


def test_rule_status_overrides_default(policy) -> None:  # type: ignore[no-untyped-def]
    v = decide(policy, {"entity.flags": ["sdn"]})
    assert (v.action, v.rule, v.status) == ("deny", "deny-b", 403)
    v = decide(policy, {"geo.country": "CN", "entity.known": True})
    assert (v.action, v.rule, v.status) == ("require_license", "license-b", 403)


def test_require_license_beats_allow(policy) -> None:  # type: ignore[no-untyped-def]
    v = decide(policy, {"entity.country": "SG", "compute.controlled": True})
    assert (v.action, v.rule, v.status, v.license, v.quotas) == (
        "require_license",
        "license-a",
        451,
        None,
        (),
    )
    assert v.reasons == ["license-a"]


def test_allow_collects_quotas_of_every_matching_allow_rule(policy) -> None:  # type: ignore[no-untyped-def]
    v = decide(policy, {"entity.country": "SG", "entity.known": True})
    assert (v.action, v.rule, v.status) == ("allow", "allow-a", None)
    assert [q.name for q in v.quotas] == ["q1", "q2"]  # de-duplicated, first-seen order
    assert v.quotas[0].window_s == 30 * 86400 and v.quotas[1].window_s == 3600
    assert v.reasons == ["allow-a", "allow-b"]


def test_flag_adds_a_reason_without_changing_the_outcome(policy) -> None:  # type: ignore[no-untyped-def]
    v = decide(policy, {"entity.known": True, "geo.country": "JP"})
    assert (v.action, v.rule) == ("allow", "allow-b")
    assert v.reasons == ["allow-b", "flag-a"]


def test_only_a_flag_falls_to_the_default_action(policy) -> None:  # type: ignore[no-untyped-def]
    v = decide(policy, {"geo.country": "JP"})
    assert (v.action, v.rule, v.status, v.reasons) == (
        "deny",
        None,
        451,
        ["default-action", "flag-a"],
    )


@pytest.mark.parametrize(
    ("default", "action", "status"),
    [("deny", "deny", 451), ("allow", "allow", None), ("require_license", "require_license", 451)],
)
def test_nothing_matched_gives_the_default_action(
    tmp_path: Path, default: str, action: str, status: int | None
) -> None:
    p = policy_of(tmp_path, ALL, default_action=default)
    v = decide(p, {"entity.known": False})
    assert (v.action, v.rule, v.status, v.reasons) == (action, None, status, ["default-action"])


def test_several_files_combine_by_the_same_precedence(tmp_path: Path) -> None:
    a = write_policy(
        tmp_path,
        "version: 1\nname: a\nrules:\n  - {id: a-allow, when: {entity.known: true}, action: allow}\n",
        "a.yaml",
    )
    b = write_policy(
        tmp_path,
        "version: 1\nname: b\nrules:\n  - {id: b-deny, when: {entity.country: CN}, action: deny}\n",
        "b.yaml",
    )
    p = load_policy_set([a, b])
    assert p.name == "a+b"
    assert decide(p, {"entity.known": True, "entity.country": "CN"}).rule == "b-deny"
    assert decide(p, {"entity.known": True, "entity.country": "SG"}).rule == "a-allow"


def test_rule_ids_must_be_unique_across_files(tmp_path: Path) -> None:
    from gatekeeper.errors import ConfigError

    a = write_policy(
        tmp_path,
        "version: 1\nrules:\n  - {id: x, when: {entity.known: true}, action: allow}\n",
        "a.yaml",
    )
    b = write_policy(
        tmp_path,
        "version: 1\nrules:\n\n  - {id: x, when: {entity.known: true}, action: deny}\n",
        "b.yaml",
    )
    with pytest.raises(ConfigError) as info:
        load_policy_set([a, b])
    assert info.value.problems == [
        f"{b}:4: rules[0].id: duplicate rule id 'x' (first defined at {a}:3)"
    ]


def test_include_resolves_relative_to_the_including_file_and_is_read_once(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "groups.yaml").write_text("version: 1\ngroups:\n  G: [CN]\n")
    (sub / "a.yaml").write_text(
        "version: 1\ninclude: [../groups.yaml]\nrules:\n  - {id: a, when: {geo.country: {in_group: G}}, action: deny}\n"
    )
    (sub / "b.yaml").write_text(
        "version: 1\ninclude: [../groups.yaml]\nrules:\n  - {id: b, when: {entity.known: true}, action: allow}\n"
    )
    p = load_policy_set([str(sub / "a.yaml"), str(sub / "b.yaml")])  # G is not a duplicate
    assert p.groups == {"G": ("CN",)}
    assert decide(p, {"geo.country": "CN", "entity.known": True}).rule == "a"


def test_version_is_stable_and_follows_meaning_not_formatting(tmp_path: Path) -> None:
    body = "version: 1\nrules:\n  - {id: a, when: {entity.known: true}, action: allow}\n"
    v1 = load_policy_set([write_policy(tmp_path, body, "x.yaml")]).version
    v2 = load_policy_set([write_policy(tmp_path, "# a comment\n" + body, "y.yaml")]).version
    v3 = load_policy_set([write_policy(tmp_path, body.replace("allow", "deny"), "z.yaml")]).version
    v4 = load_policy_set([write_policy(tmp_path, body, "x.yaml")], default_action="allow").version
    assert v1.startswith("sha256:") and len(v1) == 7 + 64
    assert v1 == v2
    assert len({v1, v3, v4}) == 3


def test_quotas_are_exposed_with_their_definition(policy) -> None:  # type: ignore[no-untyped-def]
    q = policy.quotas["q1"]
    assert (q.name, q.unit, q.limit, q.window_s, q.per) == (
        "q1",
        "tpp_hours",
        1.0e6,
        2592000,
        "ultimate_parent",
    )
    assert policy.quotas["q2"].per == "tenant"
    assert [r.id for r in policy.rules][:2] == ["allow-a", "flag-a"]


def test_hostile_values_are_data_not_code(tmp_path: Path) -> None:
    # Values end up as constants of the generated code, never in its source.
    p = policy_of(
        tmp_path,
        """
        version: 1
        rules:
          - id: x
            when: {entity.country: "') or True or ('", entity.name: "__import__('os').system('false')"}
            action: deny
        """,
    )
    assert decide(p, {"entity.country": "SG", "entity.name": "n"}).rule is None
    v = decide(
        p, {"entity.country": "') or True or ('", "entity.name": "__import__('os').system('false')"}
    )
    assert v.rule == "x"
    src = p.rules[0].term.code
    assert "o.country" in src and "o.name" in src  # the expression, not its leaf tokens
    assert "import" not in src and "or True" not in src and "SG" not in src


def test_many_rules_use_a_wide_bitmask(tmp_path: Path) -> None:
    rules = "".join(
        f"  - {{id: r{i}, when: {{compute.gpus: {i}}}, action: allow}}\n" for i in range(100)
    )
    p = policy_of(tmp_path, "version: 1\nrules:\n" + rules)
    assert decide(p, {"compute.gpus": 99}).rule == "r99"
    assert decide(p, {"compute.gpus": 0}).rule == "r0"
    assert decide(p, {"compute.gpus": 100}).rule is None
