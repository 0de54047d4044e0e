"""Re-screening: which entities a new version of the entity data changes, and how.

Lists change weekly; a provider must know which of its tenants a new list version affects. On
every reload of entity data the gate compares each entity's screening view — listed, affiliated,
possibly affiliated, ultimate parent, the parent's headquarters, flags — before and after
(``diff``), and each changed entity becomes one ``screening`` audit record (``record_body``),
counted per changed field in ``gatekeeper_screening_changes_total{change}`` and listed on the
admin API (``GET /v1/screening``). ``gatekeeper entities diff`` prints the same records offline.

An entity that appears is ``added`` (with every field it has), one that disappears ``removed``;
otherwise ``changes`` names the fields that differ. The comparison is over canonical entities
(aliases answer with their target, so they are not screened twice) and costs one tuple per entity
and side; two registries of the same version are not compared at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..context import OwnershipProfile
from .registry import Registry

#: The screened fields, in the order of ``_key`` and of ``changes`` in a record.
FIELDS = (
    "listed",
    "affiliated",
    "possibly_affiliated",
    "ultimate_parent",
    "parent_hq_country",
    "flags",
)
#: Every value of the metric's ``change`` label: the fields, plus an entity added or removed.
CHANGE_KINDS = ("added", "removed", *FIELDS)

_Key = tuple[bool, bool, bool, str | None, str | None, frozenset[str]]


def _key(p: OwnershipProfile) -> _Key:
    # A listed entity is among the listings that reach it (listed_via includes itself).
    return (
        p.id in p.listed_via,
        p.affiliated,
        p.possibly_affiliated,
        p.ultimate_parent,
        p.parent_hq_country,
        p.flags,
    )


def _view(key: _Key) -> dict[str, Any]:
    view: dict[str, Any] = dict(zip(FIELDS, key, strict=True))
    view["flags"] = sorted(key[5])
    return view


@dataclass(frozen=True, slots=True)
class Change:
    """One entity whose screening view differs between two versions of the entity data."""

    entity: str
    changes: tuple[str, ...]  # "added", "removed", or the fields that differ
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def record_body(self, before_version: str | None, after_version: str) -> dict[str, Any]:
        """The ``screening`` audit record (the log adds seq, ts, replica and the chain)."""
        return {
            "type": "screening",
            "entity": self.entity,
            "changes": list(self.changes),
            "before": self.before,
            "after": self.after,
            "data_version": {"before": before_version, "after": after_version},
        }


def _keys(reg: Registry | None) -> dict[str, _Key]:
    return {} if reg is None else {eid: _key(p) for eid, p in reg.profiles()}


def diff(before: Registry | None, after: Registry) -> list[Change]:
    """Every entity whose screening view differs, sorted by id (empty for the same version)."""
    if before is not None and before.version == after.version:
        return []
    old = _keys(before)
    out: list[Change] = []
    for eid, new in _keys(after).items():
        prev = old.pop(eid, None)
        if prev is None:
            if before is not None:
                out.append(Change(eid, ("added",), None, _view(new)))
        elif prev != new:
            fields = tuple(f for f, a, b in zip(FIELDS, prev, new, strict=True) if a != b)
            out.append(Change(eid, fields, _view(prev), _view(new)))
    for eid, prev in old.items():
        out.append(Change(eid, ("removed",), _view(prev), None))
    out.sort(key=lambda c: c.entity)
    return out


def count_kinds(changes: list[Change]) -> Iterator[tuple[str, int]]:
    """(change kind, number of entities) for the metric, in ``CHANGE_KINDS`` order."""
    counts = dict.fromkeys(CHANGE_KINDS, 0)
    for c in changes:
        for kind in c.changes:
            counts[kind] += 1
    return ((k, n) for k, n in counts.items() if n)
