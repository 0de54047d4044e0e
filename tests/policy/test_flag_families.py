"""``ownership.affiliated_flags`` end to end: real registry profiles through the shipped packs.

The US pack's ``listed-affiliate`` reads ``ownership.affiliated`` (the 50% rule over US lists only);
the CN pack's ``jp-military-affiliate`` reads ``ownership.affiliated_flags`` (military_end_user's own
50% rule). Profiles here come from ``load_registry`` on a native file, not from hand-set attributes,
so the test holds the resolver and the packs to each other.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.context import ComputeRequest, GeoInfo
from gatekeeper.errors import ConfigError
from gatekeeper.ownership import Registry
from gatekeeper.policy import PolicySet, load_policy_set
from gatekeeper.policy.model import PolicyInput
from tests.ownership.helpers import ent, native
from tests.policy.helpers import TODAY, decide, one_rule, policy_of

US = "policies/us-remote-access.yaml"
CN = "policies/cn-dual-use-japan.yaml"
MIL = {"flags": ["military_end_user"], "country": "JP", "hq_country": "JP"}
JP = {"country": "JP", "hq_country": "JP"}
SG = {"country": "SG", "hq_country": "SG"}


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return native(
        tmp_path_factory.mktemp("families"),
        [
            ent("kaiyo-defense", **MIL),
            ent("kaiyo-compute", ("kaiyo-defense", 80), **JP),
            ent("x-sdn", flags=["sdn"], country="RU", hq_country="RU"),
            ent("y-el", flags=["entity_list"], country="RU", hq_country="RU"),
            ent("mix-jp", ("x-sdn", 30), ("kaiyo-defense", 20), **JP),
            ent("mix-sg", ("x-sdn", 30), ("kaiyo-defense", 20), **SG),
            ent("us-mix", ("x-sdn", 30), ("y-el", 20), **SG),
            ent("sdn-jp", ("x-sdn", 60), **JP),
            ent("bund-mil", flags=["military_end_user"], country="DE", hq_country="DE"),
            ent("mil-sg", ("bund-mil", 60), **SG),
        ],
    )


def run(policy: PolicySet, reg: Registry, entity: str) -> tuple[str, str | None]:
    inp = PolicyInput(
        principal=None,
        ownership=reg.profile(entity),
        geo=GeoInfo(ip="192.0.2.1", known=True, country="SG"),
        compute=ComputeRequest(
            gpu_model="H100-SXM",
            gpus=8,
            hours=1,
            gpu_hours=8,
            tpp=15832,
            tpp_hours=8 * 15832,
            eccn="3A090.a",
            controlled=True,
        ),
        request=None,
        today=TODAY,
    )
    v = policy.evaluate(inp)
    assert policy.evaluate(inp, trace=True).rule == v.rule  # fast path and closures agree
    return v.action, v.rule


# entity -> (US pack alone, CN pack alone, both packs)
EXPECT = {
    # 80% owned by a Japanese military end user: a CN affiliate, not a US one.
    "kaiyo-compute": (
        ("allow", "foreign-tenant"),
        ("deny", "jp-military-affiliate"),
        ("deny", "jp-military-affiliate"),
    ),
    # 30% SDN + 20% military end user: neither rule aggregates across jurisdictions.
    "mix-jp": (
        ("allow", "foreign-tenant"),
        ("allow", "known-entity"),
        ("allow", "foreign-tenant"),
    ),
    "mix-sg": (
        ("allow", "foreign-tenant"),
        ("allow", "known-entity"),
        ("allow", "foreign-tenant"),
    ),
    # 30% SDN + 20% Entity List: the US lists aggregate.
    "us-mix": (
        ("deny", "listed-affiliate"),
        ("allow", "known-entity"),
        ("deny", "listed-affiliate"),
    ),
    # A Japanese SDN affiliate: the US rule only; the CN pack does not treat SDN as its list.
    "sdn-jp": (
        ("deny", "listed-affiliate"),
        ("allow", "known-entity"),
        ("deny", "listed-affiliate"),
    ),
    # A (German) military-end-user affiliate outside any Japanese group: neither affiliate rule.
    "mil-sg": (
        ("allow", "foreign-tenant"),
        ("allow", "known-entity"),
        ("allow", "foreign-tenant"),
    ),
}


@pytest.mark.parametrize("entity", sorted(EXPECT))
def test_packs_on_resolved_profiles(reg: Registry, entity: str) -> None:
    us, cn, both = EXPECT[entity]
    assert run(load_policy_set([US]), reg, entity) == us
    assert run(load_policy_set([CN]), reg, entity) == cn
    assert run(load_policy_set([US, CN]), reg, entity) == both


def test_the_resolved_facts_behind_the_table(reg: Registry) -> None:
    k = reg.profile("kaiyo-compute")
    assert (k.affiliated, k.listed_via, k.affiliated_flags) == (
        False,
        (),
        frozenset({"military_end_user"}),
    )
    m = reg.profile("mix-jp")
    assert (m.affiliated, m.listed_share, m.affiliated_flags) == (False, 30.0, frozenset())
    u = reg.profile("us-mix")
    assert (u.affiliated, u.listed_share, u.affiliated_flags) == (True, 50.0, frozenset())


def test_affiliated_flags_is_a_set_attribute(tmp_path: Path) -> None:
    pol = one_rule(tmp_path, "{ownership.affiliated_flags: {exists: true}}")
    assert decide(pol, {"ownership.affiliated_flags": []}).rule == "hit"
    assert decide(pol, {"geo.country": "JP"}).rule is None  # no ownership fact
    with pytest.raises(ConfigError) as info:
        policy_of(
            tmp_path,
            "version: 1\nrules:\n"
            "  - {id: a, when: {ownership.affiliated_flags: sdn}, action: deny}\n"
            "  - {id: b, when: {ownership.affiliated_flags: {in: [sdn]}}, action: deny}\n"
            "  - {id: c, when: {ownership.affiliated_flags: {gte: 1}}, action: deny}\n",
        )
    problems = "\n".join(info.value.problems)
    assert "ownership.affiliated_flags is a set; use contains, intersects or exists" in problems
    assert "in needs a single-valued attribute" in problems
    assert "gte needs a numeric attribute" in problems
    with pytest.raises(ValueError, match=r"ownership\.affiliated_flags: expected a list"):
        decide(pol, {"ownership.affiliated_flags": "military_end_user"})  # not a list
