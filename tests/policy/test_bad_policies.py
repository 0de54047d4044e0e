"""Every broken policy file under tests/data/policy/bad/ and its exact error messages.

Each file is loaded on its own; ``load_policy_set`` must raise one ``ConfigError`` listing every
problem of that file (``file:line: key.path: message``), in order, and nothing else.
"""

from __future__ import annotations

import glob
import os

import pytest

from gatekeeper.errors import ConfigError
from gatekeeper.policy import load_policy_set

D = os.path.join("tests", "data", "policy", "bad")

EXPECTED: dict[str, list[str]] = {
    "bad-group-member.yaml": [
        "{d}/bad-group-member.yaml:3: groups.G[1]: group members are strings or numbers, got a mapping",
        "{d}/bad-group-member.yaml:3: groups.G[2]: group members are strings or numbers, got true",
    ],
    "bad-quota.yaml": [
        "{d}/bad-quota.yaml:4: quotas.monthly.unit: invalid unit 'flops' (expected one of: tpp_hours, gpu_hours, requests)",
        "{d}/bad-quota.yaml:5: quotas.monthly.limit: limit must be a positive number, got number -1",
        "{d}/bad-quota.yaml:6: quotas.monthly.window: invalid window '0d' (expected a positive integer and one of s, m, h, d, w, e.g. 30d)",
        "{d}/bad-quota.yaml:7: quotas.monthly.per: invalid per 'country' (expected one of: tenant, entity, ultimate_parent)",
    ],
    "bad-rule-id.yaml": [
        "{d}/bad-rule-id.yaml:3: rules[0].id: rule ids are kebab-case (a-z, 0-9, -), got string 'Listed_Affiliate'",
    ],
    "bad-status.yaml": [
        "{d}/bad-status.yaml:6: rules[0].status: status must be an integer from 400 to 599, got number 200",
    ],
    "bad-version.yaml": [
        "{d}/bad-version.yaml:1: version: version must be 1",
    ],
    "bad-window.yaml": [
        "{d}/bad-window.yaml:3: quotas.monthly.window: invalid window '30days' (expected a positive integer and one of s, m, h, d, w, e.g. 30d)",
    ],
    "bare-list.yaml": [
        "{d}/bare-list.yaml:4: rules[0].when.entity.country: a bare list is ambiguous; use {in: [...]} or {intersects: [...]}",
    ],
    "condition-not-mapping.yaml": [
        "{d}/condition-not-mapping.yaml:4: rules[0].when: a condition must be a mapping, got string 'always'",
    ],
    "contains-on-string.yaml": [
        "{d}/contains-on-string.yaml:5: rules[0].when.entity.country.contains: contains needs a set attribute; entity.country is a string",
    ],
    "deep-nesting.yaml": [
        "{d}/deep-nesting.yaml:4: rules[0].when.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not: condition nested deeper than 32 levels",
    ],
    "duplicate-group.yaml": [
        "{d}/duplicate-group.yaml:4: groups.D5: duplicate group 'D5' (first defined at {d}/includes/groups.yaml:4)",
    ],
    "duplicate-rule-id.yaml": [
        "{d}/duplicate-rule-id.yaml:6: rules[1].id: duplicate rule id 'same' (first defined at {d}/duplicate-rule-id.yaml:3)",
    ],
    "duplicate-yaml-key.yaml": [
        "{d}/duplicate-yaml-key.yaml:6: invalid YAML: duplicate key 'action'",
    ],
    "empty-any.yaml": [
        "{d}/empty-any.yaml:4: rules[0].when.any: any needs a non-empty list of conditions",
    ],
    "empty-condition.yaml": [
        "{d}/empty-condition.yaml:4: rules[0].when: empty condition",
    ],
    "exists-not-bool.yaml": [
        "{d}/exists-not-bool.yaml:5: rules[0].when.compute.eccn.exists: exists needs true or false, got string 'yes please'",
    ],
    "group-on-number.yaml": [
        "{d}/group-on-number.yaml:7: rules[0].when.geo.asn.in_group: group 'G': expected a number, got string 'CN'",
    ],
    "in-on-set.yaml": [
        "{d}/in-on-set.yaml:5: rules[0].when.entity.flags.in: in needs a single-valued attribute; entity.flags is a set (use intersects)",
    ],
    "include-cycle-a.yaml": [
        "{d}/include-cycle-b.yaml:3: include[0]: include cycle: {d}/include-cycle-a.yaml -> {d}/include-cycle-b.yaml -> {d}/include-cycle-a.yaml",
    ],
    "include-cycle-b.yaml": [
        "{d}/include-cycle-a.yaml:2: include[0]: include cycle: {d}/include-cycle-b.yaml -> {d}/include-cycle-a.yaml -> {d}/include-cycle-b.yaml",
    ],
    "invalid-action.yaml": [
        "{d}/invalid-action.yaml:5: rules[0].action: invalid action 'block' (expected one of: deny, require_license, allow, flag)",
    ],
    "invalid-yaml.yaml": [
        "{d}/invalid-yaml.yaml:5: invalid YAML: while parsing a flow mapping: expected ',' or '}', but got ':'",
    ],
    "missing-include.yaml": [
        "{d}/missing-include.yaml:2: include[0]: cannot read '{d}/no-such-groups.yaml': no such file",
    ],
    "missing-keys.yaml": [
        "{d}/missing-keys.yaml:3: rules[0]: missing required key 'id'",
        "{d}/missing-keys.yaml:3: rules[0]: missing required key 'when'",
        "{d}/missing-keys.yaml:3: rules[0]: missing required key 'action'",
    ],
    "missing-version.yaml": [
        "{d}/missing-version.yaml:1: missing required key 'version'",
    ],
    "multiple-errors.yaml": [
        "{d}/multiple-errors.yaml:8: rules[0].when.all[0]: unknown attribute 'entity.colour' (did you mean 'entity.country'?)",
        "{d}/multiple-errors.yaml:9: rules[0].when.all[1].geo.country.in_group: unknown group 'NOPE'",
        "{d}/multiple-errors.yaml:11: rules[1].id: duplicate rule id 'a' (first defined at {d}/multiple-errors.yaml:5)",
        "{d}/multiple-errors.yaml:14: rules[1].quota: unknown quota 'r'",
    ],
    "no-operator.yaml": [
        "{d}/no-operator.yaml:5: rules[0].when.entity.country: no operator given",
    ],
    "not-a-mapping.yaml": [
        "{d}/not-a-mapping.yaml:1: a policy file must be a mapping",
    ],
    "null-value.yaml": [
        "{d}/null-value.yaml:4: rules[0].when.entity.country: null is not a value; use {exists: false}",
    ],
    "numeric-op-on-string.yaml": [
        "{d}/numeric-op-on-string.yaml:5: rules[0].when.entity.country.gt: gt needs a numeric attribute; entity.country is a string",
    ],
    "quota-on-deny.yaml": [
        "{d}/quota-on-deny.yaml:8: rules[0].quota: quota is only allowed on allow rules",
    ],
    "status-on-allow.yaml": [
        "{d}/status-on-allow.yaml:6: rules[0].status: status is only allowed on deny and require_license rules",
    ],
    "unknown-attribute.yaml": [
        "{d}/unknown-attribute.yaml:4: rules[0].when: unknown attribute 'entity.colour' (did you mean 'entity.country'?)",
    ],
    "unknown-group.yaml": [
        "{d}/unknown-group.yaml:7: rules[0].when.geo.country.in_group: unknown group 'D6'",
    ],
    "unknown-operator.yaml": [
        "{d}/unknown-operator.yaml:5: rules[0].when.entity.country: unknown operator 'inside' (expected one of: contains, exists, gt, gte, in, in_group, intersects, lt, lte, missing, not_in, not_in_group)",
    ],
    "unknown-quota.yaml": [
        "{d}/unknown-quota.yaml:8: rules[0].quota: unknown quota 'montly' (did you mean 'monthly'?)",
    ],
    "unknown-rule-key.yaml": [
        "{d}/unknown-rule-key.yaml:6: rules[0].reason: unknown key",
    ],
    "unknown-top-key.yaml": [
        "{d}/unknown-top-key.yaml:2: rulez: unknown key (did you mean 'rules'?)",
    ],
    "wrong-type-bool.yaml": [
        "{d}/wrong-type-bool.yaml:4: rules[0].when.ownership.affiliated: expected true or false, got string 'yes'",
    ],
    "wrong-type-number.yaml": [
        "{d}/wrong-type-number.yaml:5: rules[0].when.compute.gpus.gte: expected a number, got string 'eight'",
    ],
}


def test_every_bad_file_has_an_expectation() -> None:
    files = {os.path.basename(f) for f in glob.glob(os.path.join(D, "*.yaml"))}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_policy_reports_exact_messages(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy_set([os.path.join(D, name)])
    assert info.value.problems == [m.replace("{d}", D) for m in EXPECTED[name]]


def test_problems_of_several_files_are_reported_together() -> None:
    files = [os.path.join(D, n) for n in ("unknown-attribute.yaml", "bad-window.yaml")]
    with pytest.raises(ConfigError) as info:
        load_policy_set(files)
    assert sorted(p.split(":")[0] for p in info.value.problems) == sorted(files)


def test_bad_shadow_policy_is_a_load_error_too() -> None:
    with pytest.raises(ConfigError) as info:
        load_policy_set(
            ["policies/us-remote-access.yaml"], shadow=[os.path.join(D, "invalid-action.yaml")]
        )
    assert info.value.problems == [
        f"{D}/invalid-action.yaml:5: rules[0].action: invalid action 'block' "
        "(expected one of: deny, require_license, allow, flag)"
    ]


def test_bad_default_action() -> None:
    with pytest.raises(ConfigError) as info:
        load_policy_set(["policies/us-remote-access.yaml"], default_action="maybe")
    assert info.value.problems == [
        "<config>: policy.default_action: invalid default action 'maybe' "
        "(expected one of: deny, require_license, allow)"
    ]


def test_missing_top_level_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_policy_set([os.path.join(D, "does-not-exist.yaml")])
    assert info.value.problems == [
        f"{D}/does-not-exist.yaml: cannot read: No such file or directory"
    ]
