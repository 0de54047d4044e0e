"""Re-screening: which entities a new version of the entity data changes, and how.

Lists change weekly; a provider must know which of its tenants a new list version affects. On
every reload of entity data the gate compares each entity's screening view — listed, affiliated,
possibly affiliated, ultimate parent, the parent's headquarters, flags — before and after
(``diff``), and each changed entity becomes one ``screening`` audit record (``record_body``),
counted per changed field in ``gatekeeper_screening_changes_total{change}`` and listed on the
admin API (``GET /v1/screening``). ``gatekeeper entities diff`` prints the same records offline.

An entity that appears is ``added`` (with every field it has), one that disappears ``removed``;
otherwise ``changes`` names the fields that differ. The comparison is over canonical entities
(aliases answer with their target, so they are not screened twice), field by field, and only a
changed entity builds its views; two registries of the same version are not compared at all.
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

    def record_body(
        self,
        before_version: str | None,
        after_version: str,
        data_versions: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """The ``screening`` audit record (the log adds seq, ts, replica and the chain).

        ``entities_version``: the two registries compared. ``data_version`` (the gate only): the
        ``decision.data_version`` of decisions made before and after the change, so an auditor
        can tell which decisions used which data.
        """
        body: dict[str, Any] = {
            "type": "screening",
            "entity": self.entity,
            "changes": list(self.changes),
            "before": self.before,
            "after": self.after,
            "entities_version": {"before": before_version, "after": after_version},
        }
        if data_versions is not None:
            body["data_version"] = {"before": data_versions[0], "after": data_versions[1]}
        return body


def _same(a: OwnershipProfile, b: OwnershipProfile) -> bool:
    # Field by field, cheapest first: at a million entities this loop is the whole cost.
    return (
        a.affiliated == b.affiliated
        and a.ultimate_parent == b.ultimate_parent
        and a.parent_hq_country == b.parent_hq_country
        and a.possibly_affiliated == b.possibly_affiliated
        and a.flags == b.flags
        and (a.id in a.listed_via) == (b.id in b.listed_via)
    )


def diff(before: Registry | None, after: Registry) -> list[Change]:
    """Every entity whose screening view differs, sorted by id (empty for the same version)."""
    if before is None or before.version == after.version:
        return []
    old_get = before.get
    out: list[Change] = []
    for eid, new in after.profiles():
        prev = old_get(eid)
        if prev is None or prev.id != eid:  # new, or an alias of another entity before
            out.append(Change(eid, ("added",), None, _view(_key(new))))
        elif not _same(prev, new):
            a, b = _key(prev), _key(new)
            fields = tuple(f for f, x, y in zip(FIELDS, a, b, strict=True) if x != y)
            out.append(Change(eid, fields, _view(a), _view(b)))
    new_get = after.get
    for eid, prev in before.profiles():
        cur = new_get(eid)
        if cur is None or cur.id != eid:
            out.append(Change(eid, ("removed",), _view(_key(prev)), None))
    out.sort(key=lambda c: c.entity)
    return out


def count_kinds(changes: list[Change]) -> Iterator[tuple[str, int]]:
    """(change kind, number of entities) for the metric, in ``CHANGE_KINDS`` order."""
    counts = dict.fromkeys(CHANGE_KINDS, 0)
    for c in changes:
        for kind in c.changes:
            counts[kind] += 1
    return ((k, n) for k, n in counts.items() if n)
