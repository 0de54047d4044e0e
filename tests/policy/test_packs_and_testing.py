"""The shipped packs pass their own test cases; the test runner reports failures and misuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.errors import ConfigError
from gatekeeper.policy import load_policy_set
from gatekeeper.policy.testing import format_results, run_tests

PACKS = ["policies/us-remote-access.yaml", "policies/cn-dual-use-japan.yaml"]


def test_shipped_pack_tests_all_pass() -> None:
    results = run_tests("policies/tests")
    assert results and all(r.passed for r in results), format_results(results)
    assert len(results) >= 32


@pytest.mark.parametrize("pack", PACKS)
def test_every_rule_has_a_matching_and_a_non_matching_case(pack: str) -> None:
    policy = load_policy_set([pack])
    results = run_tests("policies/tests")
    names = [r.name for r in results]
    for rule in policy.rules:
        assert any(n.startswith(f"{rule.id} matches") for n in names), rule.id
        assert any(n.startswith(f"{rule.id} does not") for n in names), rule.id


def test_packs_load_together_and_carry_their_header() -> None:
    policy = load_policy_set(PACKS)
    assert policy.name == "us-remote-access+cn-dual-use-japan"
    assert set(policy.groups) >= {"D1", "D4", "D5", "E1", "E2", "D5_OR_MACAU"}
    assert "MO" in policy.groups["D5_OR_MACAU"] and "MO" not in policy.groups["D5"]
    assert set(policy.groups["D5"]) <= set(policy.groups["D5_OR_MACAU"])
    for f in [*PACKS, "policies/country-groups.yaml"]:
        head = Path(f).read_text()[:3000]
        assert ("NOT LEGAL ADVICE" in head and "Source" in head) or "from where" in head, f
    q = policy.quotas["foreign-monthly"]
    assert (q.unit, q.per, q.window_s) == ("tpp_hours", "ultimate_parent", 30 * 86400)


def test_failing_case_is_reported_with_its_location(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\nrules:\n  - {id: a, when: {entity.known: true}, action: allow}\n"
    )
    (tmp_path / "t.yaml").write_text(
        "policy: p.yaml\ncases:\n"
        "  - name: right\n    context: {entity.known: true}\n    expect: {action: allow, rule: a}\n"
        "  - name: wrong\n    context: {entity.known: false}\n    expect: {action: allow, rule: a, status: null}\n"
    )
    results = run_tests(str(tmp_path / "t.yaml"))
    assert [(r.name, r.passed) for r in results] == [("right", True), ("wrong", False)]
    assert results[1].line == 6
    assert results[1].failures == [
        "expected action 'allow', got 'deny'",
        "expected rule 'a', got None",
        "expected status None, got 451",
    ]
    assert format_results(results).endswith("1 passed, 1 failed")


def test_broken_test_files_raise_every_problem(tmp_path: Path) -> None:
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / "p.yaml").write_text("version: 1\nrules: []\n")
    (tmp_path / "t.yaml").write_text(
        "policy: pol/p.yaml\nbogus: 1\ncases:\n"
        "  - name: a\n    context: {entity.colour: red}\n    expect: {action: deny}\n"
        "  - context: {}\n    expect: {action: deny}\n"
        "  - name: c\n    expect: {verdict: deny}\n"
    )
    with pytest.raises(ConfigError) as info:
        run_tests(str(tmp_path))
    t = tmp_path / "t.yaml"
    assert info.value.problems == [
        f"{t}:2: bogus: unknown key",
        f"{t}:5: cases[0].context: unknown attribute 'entity.colour'",
        f"{t}:7: cases[1]: missing required key 'name'",
        f"{t}:10: cases[2].expect: expected a mapping with action",
    ]


def test_bare_list_needs_a_policy_and_runs_with_one(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "- name: a\n  context: {entity.country: US, entity.known: true}\n  expect: {action: allow, rule: us-entity}\n"
    )
    with pytest.raises(ConfigError):
        run_tests(str(tmp_path))
    results = run_tests(str(tmp_path), policy=load_policy_set([PACKS[0]]))
    assert [r.passed for r in results] == [True]


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        run_tests(str(tmp_path))
