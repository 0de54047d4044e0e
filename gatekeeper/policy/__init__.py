"""The declarative export-control policy engine.

``load_policy_set(files, shadow=..., default_action=...)`` reads the policy files (with their
includes), validates and compiles them once into a ``PolicySet`` whose ``evaluate`` is a pure
function of a ``PolicyInput``. Every problem is reported at once in a ``ConfigError`` as
``file:line: key.path: message``. Modules: ``loader`` (files, includes, line numbers),
``criteria`` (attributes and operators), ``terms`` (three-valued conditions as generated code),
``compiler`` (rules → terms), ``purpose`` (declared purposes), ``licensing`` (when a licence
satisfies ``require_license``), ``engine`` (precedence, verdicts, shadow policies), ``sources``
(rules reading attributes no configured source provides), ``inputs`` (dotted attributes →
``PolicyInput``), ``testing`` (``policies/tests/*.yaml``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, Problem
from .compiler import Compiled, compile_sources
from .engine import DEFAULT_ACTIONS, PolicySet
from .inputs import input_from_attributes
from .loader import load_sources
from .model import CompiledRule, PolicyInput, Verdict

__all__ = [
    "CompiledRule",
    "PolicyInput",
    "PolicySet",
    "Verdict",
    "input_from_attributes",
    "load_policy_set",
]


def _digest(parts: Any) -> str:
    """``sha256:`` + a Merkle hash of the parsed documents: comments and formatting do not change
    the version, any change of meaning does. Shared (aliased) nodes are hashed once, so a YAML
    alias bomb costs its size on disk, not its expanded size."""
    memo: dict[int, bytes] = {}
    return "sha256:" + _node_hash(parts, memo).hex()


def _node_hash(node: Any, memo: dict[int, bytes]) -> bytes:
    if isinstance(node, dict | list | tuple):
        key = id(node)
        cached = memo.get(key)
        if cached is not None:
            return cached
        h = hashlib.sha256()
        if isinstance(node, dict):
            h.update(b"d")
            for k in sorted(node, key=str):
                h.update(_node_hash(str(k), memo))
                h.update(_node_hash(node[k], memo))
        else:
            h.update(b"l")
            for item in node:
                h.update(_node_hash(item, memo))
        digest = h.digest()
        memo[key] = digest
        return digest
    scalar = json.dumps(node, default=str).encode("utf-8")  # dates render as ISO strings
    return hashlib.sha256(b"s" + scalar).digest()


def _compile(files: Sequence[str], problems: list[Problem | str]) -> Compiled:
    sources, load_problems = load_sources(files)
    problems.extend(load_problems)
    names = []
    for src in sources:
        if src.display in files:  # top-level files only; includes (country groups) are parts
            name = src.doc.get("name") if isinstance(src.doc, dict) else None
            names.append(name if isinstance(name, str) else src.display)
    return compile_sources(sources, problems, name="+".join(names) or "empty")


def load_policy_set(
    files: Sequence[str], *, shadow: Sequence[str] = (), default_action: str = "deny"
) -> PolicySet:
    """Load, validate and compile; raises ``ConfigError`` listing every problem."""
    problems: list[Problem | str] = []
    if default_action not in DEFAULT_ACTIONS:
        problems.append(
            Problem(
                "<config>",
                None,
                "policy.default_action",
                f"invalid default action {default_action!r} "
                f"(expected one of: {', '.join(DEFAULT_ACTIONS)})",
            )
        )
    active = _compile(files, problems)
    shadows = [_compile([f], problems) for f in shadow]
    if problems:
        raise ConfigError(problems)
    shadow_sets = [
        PolicySet(
            name=s.name,
            rules=s.rules,
            groups=s.groups,
            quotas=s.quotas,
            default_action=default_action,
            version=_digest([default_action, s.docs]),
            reads=s.reads,
            matcher=s.matcher,
        )
        for s in shadows
    ]
    return PolicySet(
        name=active.name,
        rules=active.rules,
        groups=active.groups,
        quotas=active.quotas,
        default_action=default_action,
        version=_digest([default_action, active.docs, [s.docs for s in shadows]]),
        shadows=shadow_sets,
        reads=active.reads,
        matcher=active.matcher,
    )
