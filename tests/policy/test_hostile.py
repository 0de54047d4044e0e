"""Malformed, oversized and hostile policy files, and the fast path against the reference."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.errors import ConfigError
from gatekeeper.policy import input_from_attributes, load_policy_set
from gatekeeper.yamlsrc import MAX_FILE_BYTES

PACKS = ["policies/us-remote-access.yaml", "policies/cn-dual-use-japan.yaml"]


def test_oversized_file(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"version: 1\n" + b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_policy_set([str(big)])


def _bomb(levels: int = 9) -> list[str]:
    # 9 levels of 10 = 10^9 leaves from 80 aliases (under the YAML loader's alias limit).
    lines = ["  a0: &a0 {entity.known: true}"]
    lines += [
        f"  a{i}: &a{i} {{all: [" + ", ".join([f"*a{i - 1}"] * 10) + "]}" for i in range(1, levels)
    ]
    return lines


def test_alias_bomb_in_metadata_is_refused_by_the_loader(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("version: 1\nmetadata:\n" + "\n".join(_bomb()) + "\nrules: []\n")
    # yamlsrc bounds the expanded node count before anything walks the document.
    with pytest.raises(ConfigError, match="expands to more than"):
        load_policy_set([str(bomb)])


def test_alias_bomb_in_a_condition_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "version: 1\nmetadata:\n"
        + "\n".join(_bomb(6))
        + "\nrules:\n  - id: x\n    when: *a5\n    action: deny\n"
    )
    with pytest.raises(ConfigError, match="more than 20000 condition nodes"):
        load_policy_set([str(bomb)])


def test_binary_and_python_tags_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "tag.yaml"
    f.write_text("version: 1\nname: !!python/object/apply:os.system ['false']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_policy_set([str(f)])
    g = tmp_path / "bin.yaml"
    g.write_bytes(b"version: 1\n\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_policy_set([str(g)])


def test_self_include_and_deep_include_chain(tmp_path: Path) -> None:
    (tmp_path / "self.yaml").write_text("version: 1\ninclude: [self.yaml]\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_policy_set([str(tmp_path / "self.yaml")])
    for i in range(20):
        (tmp_path / f"c{i}.yaml").write_text(f"version: 1\ninclude: [c{i + 1}.yaml]\n")
    (tmp_path / "c20.yaml").write_text("version: 1\n")
    with pytest.raises(ConfigError, match="nested deeper than 16"):
        load_policy_set([str(tmp_path / "c0.yaml")])


def test_attribute_names_cannot_reach_python(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(
        "version: 1\nrules:\n  - id: x\n    when: {'entity.__class__': 1, 'principal.claims.a b': 1}\n    action: deny\n"
    )
    with pytest.raises(ConfigError) as info:
        load_policy_set([str(f)])
    assert info.value.problems == [f"{f}:4: rules[0].when: unknown attribute 'entity.__class__'"]


# ------------------------------------------------------------ fast path == traced path

COUNTRIES = st.sampled_from(["US", "SG", "CN", "MO", "JP", "DE", "RU", "internal"])
MAYBE_COUNTRY = st.none() | COUNTRIES
FLAGS = st.lists(st.sampled_from(["sdn", "entity_list", "military_end_user", "meu"]), max_size=3)
PURPOSE = st.none() | st.sampled_from(["research", "Military", " cbrn ", "offensive-cyber", ""])


@st.composite
def attributes(draw: st.DrawFn) -> dict[str, Any]:
    a: dict[str, Any] = {}
    if draw(st.booleans()):
        a["entity"] = {
            "known": draw(st.booleans()),
            "country": draw(MAYBE_COUNTRY),
            "hq_country": draw(MAYBE_COUNTRY),
            "flags": draw(FLAGS),
        }
        a["ownership"] = {
            "affiliated": draw(st.booleans()),
            "parent_hq_country": draw(MAYBE_COUNTRY),
            "listed_share": draw(st.floats(0, 100)),
        }
    if draw(st.booleans()):
        a["geo"] = {
            "country": draw(MAYBE_COUNTRY),
            "vpn": draw(st.booleans()),
            "tor": draw(st.booleans()),
            "hosting": draw(st.booleans()),
            "anonymous": draw(st.booleans()),
            "proxy": draw(st.booleans()),
        }
    if draw(st.booleans()):
        a["compute"] = {
            "controlled": draw(st.booleans()),
            "gpus": draw(st.integers(0, 64)),
            "hours": draw(st.floats(0, 100)),
            "tpp": draw(st.sampled_from([520.0, 2368.0, 15832.0])),
            "eccn": draw(st.none() | st.sampled_from(["3A090.a", "4A090.a"])),
        }
    purpose = draw(PURPOSE)
    if purpose is not None:
        a["request"] = {"purpose": purpose}
    return a


@settings(max_examples=300, deadline=None)
@given(attributes())
def test_fast_and_traced_evaluation_agree(attrs: dict[str, Any]) -> None:
    policy = _policy()
    inp = input_from_attributes(attrs, datetime.date(2026, 11, 25))
    fast, traced = policy.evaluate(inp), policy.evaluate(inp, trace=True)
    assert (fast.action, fast.rule, fast.reasons, fast.status) == (
        traced.action,
        traced.rule,
        traced.reasons,
        traced.status,
    )


_CACHE: list[Any] = []


def _policy() -> Any:
    if not _CACHE:
        _CACHE.append(load_policy_set(PACKS))
    return _CACHE[0]
