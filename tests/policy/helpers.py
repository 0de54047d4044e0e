"""Small helpers for policy tests: write a policy file, decide on dotted attributes."""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path
from typing import Any

from gatekeeper.policy import PolicySet, Verdict, input_from_attributes, load_policy_set

TODAY = datetime.date(2026, 11, 25)


def write_policy(tmp_path: Path, body: str, name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def policy_of(tmp_path: Path, body: str, **kwargs: Any) -> PolicySet:
    return load_policy_set([write_policy(tmp_path, body)], **kwargs)


def one_rule(tmp_path: Path, when: str, *, groups: str = "") -> PolicySet:
    """A policy whose single rule ``hit`` allows when ``when`` (flow YAML) holds."""
    return policy_of(
        tmp_path,
        f"version: 1\n{groups}\nrules:\n  - id: hit\n    when: {when}\n    action: allow\n",
    )


def decide(
    policy: PolicySet,
    attrs: dict[str, Any],
    *,
    today: datetime.date = TODAY,
    license_used: dict[str, float] | None = None,
) -> Verdict:
    """Evaluate with and without a trace; the two must agree."""
    inp = input_from_attributes(attrs, today, license_used=license_used)
    fast = policy.evaluate(inp)
    traced = policy.evaluate(inp, trace=True)
    assert (fast.action, fast.rule, fast.reasons, fast.status, fast.license, fast.quotas) == (
        traced.action,
        traced.rule,
        traced.reasons,
        traced.status,
        traced.license,
        traced.quotas,
    )
    assert fast.trace == []
    assert len(traced.trace) >= len(policy.rules)
    return fast


def matches(policy: PolicySet, attrs: dict[str, Any]) -> bool:
    return decide(policy, attrs).rule == "hit"
