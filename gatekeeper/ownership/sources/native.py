"""The native entity file (docs/entities.md): hand-written YAML, validated like the config.

Every problem is reported with ``file:line: key.path: message``, all at once; any problem fails the
load (the native file is the operator's own KYC record, so there is no bad-row tolerance here).
The file also accepts ``same_as: [ftm:..., csl:...]`` to link imported records to a native
entity (see ``ownership.model``). Owners may name imported ids directly.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

from ...context import License
from ...errors import Problem
from ...yamlsrc import LocDict, line_of, read_located
from ..model import (
    ECCN_RE,
    FLAG_RE,
    FULL,
    ID_RE,
    IMPORT_PREFIXES,
    KINDS,
    Collector,
    Entity,
    country_code,
    share_units,
)

ENTITY_KEYS = frozenset(
    {"id", "name", "kind", "country", "hq_country", "flags", "owners", "licenses", "same_as"}
)
OWNER_KEYS = frozenset({"id", "share", "control"})
LICENSE_KEYS = frozenset({"id", "eccns", "countries", "expires", "max_tpp_hours"})
_ID_RULE = "must be a non-empty string without spaces"
_NOT_ECCN = "is not an ECCN (e.g. 3A090.a)"
_NOT_COUNTRY = "is not an ISO 3166-1 alpha-2 country code"


class _Checker:
    """Collects located problems for one file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def err(self, node: Any, key: str | int | None, where: str, message: str) -> None:
        self.problems.append(Problem(self.path, line_of(node, key), where, message))

    def keys(self, node: LocDict, allowed: frozenset[str], where: str) -> None:
        for key in node:
            if key not in allowed:
                self.err(node, key, f"{where}.{key}" if where else key, "unknown key")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _id_ok(value: Any) -> bool:
    return isinstance(value, str) and ID_RE.match(value) is not None


def _id(node: LocDict, where: str, ck: _Checker, rule: str = _ID_RULE) -> str | None:
    """The ``id`` of ``node``; None, reported, when it is missing or malformed."""
    value = node.get("id")
    if value is None:
        ck.err(node, None, f"{where}.id", "required")
        return None
    if not _id_ok(value):
        ck.err(node, "id", f"{where}.id", rule)
        return None
    return str(value)


def _list(node: LocDict, key: str, where: str, ck: _Checker, what: str = "a list") -> list[Any]:
    """The list under ``key``: empty when absent or null, and when it is no list (reported)."""
    raw = node.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        ck.err(node, key, f"{where}.{key}" if where else key, f"must be {what}")
        return []
    return raw


def parse_license(node: Any, ck: _Checker, where: str) -> License | None:
    """Validate one licence mapping; problems go to ``ck``; None when it is unusable."""
    if not isinstance(node, LocDict):
        ck.err(node, None, where, "must be a mapping")
        return None
    before = len(ck.problems)
    ck.keys(node, LICENSE_KEYS, where)
    lic_id = _id(node, where, ck)
    eccns = _each(node, "eccns", where, ck, "ECCNs", _eccn, _NOT_ECCN)
    countries = _each(node, "countries", where, ck, "countries", _iso_country, _NOT_COUNTRY)
    expires: str | None = None
    raw = node.get("expires")
    if raw is not None:
        day: dt.date | None = None
        if isinstance(raw, dt.datetime):
            day = raw.date()
        elif isinstance(raw, dt.date):
            day = raw
        elif isinstance(raw, str):
            try:
                day = dt.date.fromisoformat(raw)
            except ValueError:
                day = None
        if day is None:
            ck.err(node, "expires", f"{where}.expires", "must be a date (YYYY-MM-DD)")
        else:
            expires = day.isoformat()
    max_tpp: float | None = None
    if "max_tpp_hours" in node and node["max_tpp_hours"] is not None:
        max_tpp = _number(node["max_tpp_hours"])
        if max_tpp is None or max_tpp <= 0:
            ck.err(node, "max_tpp_hours", f"{where}.max_tpp_hours", "must be a number > 0")
            max_tpp = None
    if len(ck.problems) > before:
        return None
    return License(
        id=str(lic_id),
        eccns=tuple(eccns),
        countries=tuple(countries),
        expires=expires,
        max_tpp_hours=max_tpp,
    )


def _eccn(value: Any) -> str | None:
    return value if isinstance(value, str) and ECCN_RE.match(value) else None


def _iso_country(value: Any) -> str | None:
    return country_code(value) if isinstance(value, str) and value.isupper() else None


def _each(
    node: LocDict,
    key: str,
    where: str,
    ck: _Checker,
    noun: str,
    read: Callable[[Any], str | None],
    refusal: str,
) -> list[str]:
    """The items of the non-empty list under ``key`` that ``read`` accepts; the others, and a
    missing or empty list, are reported."""
    raw = node.get(key)
    if not isinstance(raw, list) or not raw:
        ck.err(node, key, f"{where}.{key}", f"must be a non-empty list of {noun}")
        return []
    values: list[str] = []
    for i, item in enumerate(raw):
        value = read(item)
        if value is None:
            ck.err(raw, i, f"{where}.{key}[{i}]", f"{item!r} {refusal}")
        else:
            values.append(value)
    return values


def _country(node: LocDict, key: str, ck: _Checker, where: str) -> str | None:
    raw = node.get(key)
    if raw is None:
        return None
    code = _iso_country(raw)
    if code is None:
        ck.err(node, key, f"{where}.{key}", f"{raw!r} {_NOT_COUNTRY}")
    return code


def _entity(node: Any, i: int, entities: list[Any], ck: _Checker, col: Collector, src: int) -> None:
    where = f"entities[{i}]"
    if not isinstance(node, LocDict):
        ck.err(entities, i, where, "must be a mapping")
        return
    ck.keys(node, ENTITY_KEYS, where)
    ent_id = _id(node, where, ck, f"{_ID_RULE} or control characters (max 256)")
    if ent_id is None:
        return
    for prefix in IMPORT_PREFIXES:
        if ent_id.startswith(prefix):
            ck.err(
                node,
                "id",
                f"{where}.id",
                f"prefix {prefix!r} is reserved for imported records; link them with same_as",
            )
            return
    name = node.get("name")
    if name is not None and not isinstance(name, str):
        ck.err(node, "name", f"{where}.name", "must be a string")
        name = None
    kind = node.get("kind", "company")
    if kind not in KINDS:
        ck.err(node, "kind", f"{where}.kind", f"must be one of {', '.join(KINDS)}")
        kind = "company"
    country = _country(node, "country", ck, where)
    hq = _country(node, "hq_country", ck, where)

    flags: set[str] = set()
    raw = _list(node, "flags", where, ck, "a list of flags")
    for j, f in enumerate(raw):
        if not isinstance(f, str) or not FLAG_RE.match(f):
            ck.err(
                raw,
                j,
                f"{where}.flags[{j}]",
                f"{f!r} is not a flag (lower-case letters, digits and _ . : -)",
            )
        else:
            flags.add(f)

    licenses: list[License] = []
    raw = _list(node, "licenses", where, ck)
    seen_lic: dict[str, int] = {}
    for j, item in enumerate(raw):
        lic = parse_license(item, ck, f"{where}.licenses[{j}]")
        if lic is None:
            continue
        if lic.id in seen_lic:
            ck.err(raw, j, f"{where}.licenses[{j}].id", f"duplicate licence {lic.id!r}")
        seen_lic[lic.id] = j
        licenses.append(lic)

    ent = Entity(
        id=ent_id,
        name=name,
        kind=kind,
        country=country,
        hq_country=hq,
        flags=frozenset(flags),
        licenses=tuple(licenses),
        source=src,
        line=node.line,
    )
    prior = col.add_entity(ent)
    if prior is not None:
        ck.err(node, "id", f"{where}.id", f"duplicate id {ent_id!r} (first at line {prior.line})")
        return
    _owners(node, where, ent_id, ck, col, src)
    _same_as(node, where, ent_id, ck, col)


def _owners(node: LocDict, where: str, ent_id: str, ck: _Checker, col: Collector, src: int) -> None:
    raw = _list(node, "owners", where, ck)
    seen: dict[str, int] = {}
    total = 0
    controls: list[str] = []
    for j, o in enumerate(raw):
        ow = f"{where}.owners[{j}]"
        if not isinstance(o, LocDict):
            ck.err(raw, j, ow, "must be a mapping")
            continue
        ck.keys(o, OWNER_KEYS, ow)
        oid = _id(o, ow, ck)
        if oid is None:
            continue
        control = o.get("control", False)
        if not isinstance(control, bool):
            ck.err(o, "control", f"{ow}.control", "must be true or false")
            continue
        if "share" not in o:
            if not control:
                ck.err(o, None, f"{ow}.share", "required (use control: true for control only)")
                continue
            share = 0.0
        else:
            num = _number(o["share"])
            if num is None or not 0 <= num <= 100:
                ck.err(o, "share", f"{ow}.share", "must be a number from 0 to 100")
                continue
            share = num
        if oid == ent_id:
            ck.err(o, "id", f"{ow}.id", "an entity cannot own itself")
            continue
        if oid in seen:
            ck.err(
                o, "id", f"{ow}.id", f"owner {oid!r} listed twice (first at owners[{seen[oid]}])"
            )
            continue
        seen[oid] = j
        units = share_units(share)
        total += units
        if control:
            controls.append(oid)
        col.add_edge(oid, ent_id, units, control, src, o.line)
    if total > FULL:
        ck.err(
            node, "owners", f"{where}.owners", f"shares add up to {total / 10_000:g}%, over 100%"
        )
    if len(controls) > 1:
        ck.err(
            node,
            "owners",
            f"{where}.owners",
            f"{len(controls)} control edges ({', '.join(controls)}); at most one owner may control",
        )


def _same_as(node: LocDict, where: str, ent_id: str, ck: _Checker, col: Collector) -> None:
    raw = _list(node, "same_as", where, ck, "a list of imported ids")
    target = col.intern(ent_id)
    for j, alias in enumerate(raw):
        aw = f"{where}.same_as[{j}]"
        if not _id_ok(alias) or not alias.startswith(IMPORT_PREFIXES):
            ck.err(raw, j, aw, f"{alias!r} must name an imported record (ftm:... or csl:...)")
            continue
        a = col.intern(alias)
        if a in col.alias_of:
            other = col.ids[col.alias_of[a]]
            ck.err(raw, j, aw, f"{alias!r} is already an alias of {other!r}")
            continue
        col.alias_of[a] = target


def load_native(path: str, col: Collector, src: int, hasher: Any) -> None:
    """Load one native file into ``col``; every problem goes to the source report."""
    rep = col.reports[src]
    raw, doc = read_located(path)
    hasher.update(raw)
    ck = _Checker(path)
    if doc is None:
        doc = LocDict()
        doc.line, doc.key_lines = 1, {}
    if not isinstance(doc, LocDict):
        ck.err(doc, None, "", "expected a mapping with the key 'entities'")
    else:
        ck.keys(doc, frozenset({"entities"}), "")
        entities = _list(doc, "entities", "", ck)
        for i, node in enumerate(entities):
            _entity(node, i, entities, ck, col, src)
    for p in ck.problems:
        rep.bad(p.line, p.path, p.message)
