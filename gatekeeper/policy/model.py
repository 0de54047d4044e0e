"""Plain data the policy engine reads and returns: ``PolicyInput`` in, ``Verdict`` out.

No HTTP types and no I/O: ``PolicyStage`` builds a ``PolicyInput`` from whatever facts the
pipeline produced, and ``gatekeeper check`` / the policy tests build one from dotted attributes.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..context import (
    ComputeRequest,
    GeoInfo,
    License,
    OwnershipProfile,
    Principal,
    QuotaDef,
    RequestInfo,
)

_EMPTY: Mapping[str, float] = MappingProxyType({})


@dataclass(slots=True)
class PolicyInput:
    """Everything a condition may read. A fact that is ``None`` is absent (its attributes have
    no value, comparisons are false); a field a present fact lacks may be unknown (``criteria``).

    Read-only by convention, not ``frozen``: one is built for every request, and a frozen
    dataclass's ``__init__`` (one ``object.__setattr__`` per field) costs several times a plain
    one's. Nothing may change one once built (the facts it holds are frozen themselves).
    """

    principal: Principal | None
    ownership: OwnershipProfile | None
    geo: GeoInfo | None
    compute: ComputeRequest | None
    request: RequestInfo | None
    today: datetime.date
    # TPP-hours already consumed per licence id (the licence budget, docs/policy.md).
    license_used: Mapping[str, float] = field(default_factory=lambda: _EMPTY)


@dataclass(slots=True)
class Verdict:
    """The outcome of one evaluation: what to do, which rule decided, and why."""

    action: str
    rule: str | None
    reasons: list[str]
    status: int | None  # None when the action is allow
    license: License | None = None
    quotas: tuple[QuotaDef, ...] = ()
    trace: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule after compilation: a pure predicate plus what the verdict needs from it."""

    id: str
    action: str
    status: int | None
    quotas: tuple[QuotaDef, ...]
    description: str
    file: str
    line: int
    term: Any = field(repr=False, compare=False)  # terms.Term: the compiled condition

    def test(self, inp: PolicyInput) -> bool | None:
        """The condition's result: True, False or None (unknown)."""
        result: bool | None = self.term.test(inp)
        return result

    def explain(self, inp: PolicyInput) -> str:
        """The condition with its values and results (traces)."""
        text: str = self.term.explain(inp)
        return text

    def unknowns(self, inp: PolicyInput) -> tuple[str, ...]:
        """The attributes whose unknown value left the condition unknown."""
        names: tuple[str, ...] = self.term.unknowns(inp)
        return names
