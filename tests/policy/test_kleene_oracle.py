"""The generated evaluator against an independent reference: random condition trees over values
that are known, unknown or absent, evaluated here by a few lines of Kleene logic written from the
documented semantics, must give the same true/false/unknown as the compiled policy — through the
policy-wide matcher (decisions) and through each rule's own compiled term (traces)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.policy import input_from_attributes, load_policy_set

ABSENT, UNKNOWN = "<absent>", "<unknown>"
ATTRS = ("entity.country", "entity.hq_country", "geo.country")
VALUES = ("CN", "US", "SG")

leaves = st.one_of(
    st.tuples(st.sampled_from(ATTRS), st.just("eq"), st.sampled_from(VALUES)),
    st.tuples(
        st.sampled_from(ATTRS),
        st.sampled_from(["in", "not_in"]),
        st.lists(st.sampled_from(VALUES), min_size=1, max_size=2, unique=True),
    ),
    st.tuples(st.sampled_from(ATTRS), st.sampled_from(["exists", "missing"]), st.booleans()),
)
conditions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.tuples(st.just("not"), inner),
        st.tuples(st.sampled_from(["all", "any"]), st.lists(inner, min_size=1, max_size=4)),
    ),
    max_leaves=12,
)
states = st.sampled_from([*VALUES, UNKNOWN])


def to_yaml(c: Any) -> Any:
    if c[0] == "not":
        return {"not": to_yaml(c[1])}
    if c[0] in ("all", "any"):
        return {c[0]: [to_yaml(x) for x in c[1]]}
    attr, op, operand = c
    return {attr: operand} if op == "eq" else {attr: {op: operand}}


def reference(c: Any, values: dict[str, str]) -> bool | None:
    """Kleene logic, written from the documentation, over known/unknown/absent values."""
    if c[0] == "not":
        r = reference(c[1], values)
        return None if r is None else not r
    if c[0] in ("all", "any"):
        rs = [reference(x, values) for x in c[1]]
        stop = c[0] == "any"
        if stop in rs:
            return stop
        return None if None in rs else not stop
    attr, op, operand = c
    v = values[attr]
    if op == "exists":
        return (v not in (ABSENT, UNKNOWN)) is operand
    if op == "missing":
        return (v == UNKNOWN) is operand
    if v == ABSENT:
        return False
    if v == UNKNOWN:
        return None
    if op == "eq":
        return v == operand
    return (v in operand) is (op == "in")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(conditions, min_size=1, max_size=4),
    states,
    states,
    st.one_of(st.just(ABSENT), states),
)
def test_generated_code_agrees_with_the_reference(
    tmp_path_factory: Any, conds: list[Any], country: str, hq: str, geo: str
) -> None:
    rules = [{"id": f"r{i}", "when": to_yaml(c), "action": "flag"} for i, c in enumerate(conds)]
    path = Path(tmp_path_factory.mktemp("oracle")) / "p.yaml"
    path.write_text(json.dumps({"version": 1, "rules": rules}))  # JSON is YAML
    policy = load_policy_set([str(path)])
    attrs: dict[str, Any] = {"entity.known": True, "ownership.parent_hq_country": "US"}
    values = {"entity.country": country, "entity.hq_country": hq, "geo.country": geo}
    for name in ("entity.country", "entity.hq_country"):
        attrs[name] = None if values[name] == UNKNOWN else values[name]
    if geo == UNKNOWN:
        attrs["geo.known"] = False
    elif geo != ABSENT:
        attrs["geo.country"] = geo
    inp = input_from_attributes(attrs, datetime.date(2026, 11, 25))
    mask, unknown = policy._match(inp)
    for i, (c, rule) in enumerate(zip(conds, policy.rules, strict=True)):
        want = reference(c, values)
        got = True if mask >> i & 1 else None if unknown >> i & 1 else False
        assert got is want, (to_yaml(c), values)
        assert rule.test(inp) is want, (to_yaml(c), values)
