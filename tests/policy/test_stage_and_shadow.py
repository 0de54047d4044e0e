"""The policy stage on a RequestContext, shadow policies and their divergence metric."""

from __future__ import annotations

import datetime
from pathlib import Path

from prometheus_client import REGISTRY

from gatekeeper.context import (
    ComputeRequest,
    GeoInfo,
    OwnershipProfile,
    RequestContext,
    RequestInfo,
)
from gatekeeper.policy import input_from_attributes, load_policy_set
from gatekeeper.stages.policy import PolicyStage
from tests.policy.helpers import TODAY, write_policy

US = "policies/us-remote-access.yaml"
H100 = ComputeRequest("H100-SXM", 8.0, 1.0, 8.0, 15832.0, 126656.0, "3A090.a", True)


def ctx_for(mode: str = "enforce", **facts: object) -> RequestContext:
    ctx = RequestContext(
        decision_id="d1",
        request=RequestInfo("slurm-submit", "POST", "/slurm/job/submit", "203.0.113.7", mode=mode),
        headers={},
    )
    for name, value in facts.items():
        setattr(ctx, name, value)
    return ctx


def divergence(policy: str, active: str, shadow: str) -> float:
    value = REGISTRY.get_sample_value(
        "gatekeeper_shadow_divergence_total",
        {"policy": policy, "active": active, "shadow": shadow},
    )
    return value or 0.0


async def test_stage_sets_the_decision_from_present_facts() -> None:
    stage = PolicyStage(load_policy_set([US]), clock=lambda: TODAY)
    own = OwnershipProfile(
        id="acme-sg",
        known=True,
        country="SG",
        hq_country="SG",
        ultimate_parent="acme-group",
        parent_hq_country="CN",
    )
    ctx = ctx_for(ownership=own, compute=H100, geo=GeoInfo(ip="203.0.113.7", country="SG"))
    stage.run(ctx)
    d = ctx.decision
    assert (d.action, d.rule, d.status, d.enforced) == (
        "require_license",
        "d5-headquarters",
        451,
        True,
    )
    assert d.policy_version == stage.policy.version and d.license is None and d.trace == []


async def test_stage_monitor_mode_quota_names_and_missing_facts() -> None:
    stage = PolicyStage(load_policy_set([US]), clock=lambda: TODAY, trace=True)
    own = OwnershipProfile(id="acme-sg", known=True, country="SG", ultimate_parent="acme-sg")
    ctx = ctx_for("monitor", ownership=own)  # a read route: no compute, no geo
    stage.run(ctx)
    d = ctx.decision
    assert (d.action, d.rule, d.enforced, d.quotas) == (
        "allow",
        "foreign-tenant",
        False,
        ("foreign-monthly",),
    )
    assert len(d.trace) == len(stage.policy.rules)


async def test_stage_without_any_fact_is_default_deny_and_does_not_raise() -> None:
    stage = PolicyStage(load_policy_set([US]))
    ctx = ctx_for()
    stage.run(ctx)
    assert (ctx.decision.action, ctx.decision.rule, ctx.decision.reasons) == (
        "deny",
        None,
        ["default-action"],
    )


async def test_swap_replaces_the_policy(tmp_path: Path) -> None:
    stage = PolicyStage(load_policy_set([US]), clock=lambda: TODAY)
    allow_all = write_policy(tmp_path, "version: 1\nrules: []\n")
    stage.swap(load_policy_set([allow_all], default_action="allow"))
    ctx = ctx_for()
    stage.run(ctx)
    assert ctx.decision.action == "allow"


async def test_shadow_is_recorded_and_divergence_counted(tmp_path: Path) -> None:
    shadow = write_policy(
        tmp_path,
        """
        version: 1
        name: candidate
        rules:
          - {id: strict-sg, when: {entity.country: SG}, action: deny}
          - {id: rest, when: {entity.known: true}, action: allow}
        """,
    )
    policy = load_policy_set([US], shadow=[shadow])
    stage = PolicyStage(policy, clock=lambda: TODAY)
    before = divergence("candidate", "allow", "deny")
    own_sg = OwnershipProfile(id="a", known=True, country="SG", ultimate_parent="a")
    ctx = ctx_for(ownership=own_sg)
    stage.run(ctx)
    assert ctx.decision.action == "allow"  # the shadow is never enforced
    [entry] = ctx.decision.shadow
    assert {k: entry[k] for k in ("policy", "action", "rule", "differs")} == {
        "policy": "candidate",
        "action": "deny",
        "rule": "strict-sg",
        "differs": True,
    }
    assert divergence("candidate", "allow", "deny") == before + 1

    # Same action: recorded, not counted.
    same_before = divergence("candidate", "allow", "allow")
    ctx = ctx_for(ownership=OwnershipProfile(id="u", known=True, country="US"))
    stage.run(ctx)
    assert ctx.decision.shadow[0]["differs"] is False
    assert ctx.decision.shadow[0]["rule"] == "rest"
    assert divergence("candidate", "allow", "allow") == same_before
    assert divergence("candidate", "allow", "deny") == before + 1


def test_shadow_may_reuse_active_rule_ids_and_has_its_own_version(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "us-v2.yaml"
    shutil.copy(US, copy)
    shutil.copy("policies/country-groups.yaml", tmp_path / "country-groups.yaml")
    policy = load_policy_set([US], shadow=[str(copy)])
    assert policy.shadows[0].version != policy.version
    inp = input_from_attributes(
        {"entity.known": True, "entity.country": "US"}, datetime.date(2026, 1, 1)
    )
    assert policy.evaluate_shadow(inp, policy.evaluate(inp))[0]["differs"] is False
