"""OpenSanctions / FollowTheMoney entity files (JSON lines), as published, as bulk external data.

One JSON object per line. ``Company``, ``Organization``, ``LegalEntity`` and ``Person`` become
entities with the id ``ftm:<id>``, each keeping its ``datasets`` as provenance; ``Ownership``
becomes an edge ``owner -> asset`` whose ``percentage`` is free text (``parse_percentage``). Other
schemata (Address, Sanction, ...) are well-formed but unused: they are counted under ``skipped``.

Ownership dates (``startDate``/``endDate``, judged on the collector's ``as_of`` day, the load date
unless injected): a holding that has ended, or not yet begun, does not count (``notes.
holdings_ended`` / ``holdings_not_started``). Partial dates are read conservatively, so that a
holding counts whenever it might: an end known only to a year ("2019") or a month ("2019-03") runs
to the last day of that year or month, a start to the first. Several values: the earliest start
and the latest end. A date that cannot be read is ignored (the holding counts) and counted under
``notes.unreadable_dates``.

An ``Ownership`` without a percentage (how OpenSanctions carries "owned or controlled by") is a
holding of *unknown size* (``model.UNKNOWN_SHARE``): never counted as 0, it is listed on the
profile (``unknown_share_edges``) and bounds affiliation from above (``possibly_affiliated``).
So is one whose percentage cannot be read ("unknown", "approx. 30 %", "150"): the holding is
kept, with a warning naming the Ownership, its owner and asset (``notes.unreadable_percentages``).
A share stated as bounds keeps both: the lower bound for the 50% rule, the upper bound for
``possibly_affiliated`` and for a possible parent.

Topics (the whole FollowTheMoney vocabulary, ``TOPIC_FLAGS``): ``sanction`` -> ``sdn`` (every
sanctions programme, not only OFAC's: it errs on the side of caution), ``sanction.control`` ->
``sdn_affiliate`` and ``export.control.linked`` -> ``entity_list_affiliate`` (the publisher's own
50%-rule findings; listings like ``sdn``), ``export.control`` -> ``entity_list``, ``debarment`` ->
``debarred``, ``sanction.counter`` -> ``counter_sanctioned``, ``sanction.linked`` ->
``sanction_linked``; every other known topic (``crime.*``, ``poi``, ``role.pep``, ``role.rca``,
``mare.*``, ``corp.disqual``, ``fin.bank``, ``gov.soe``, ...) is kept verbatim as a flag that is
not a listing. A topic outside the vocabulary is kept too and counted under
``notes.unknown_topics``.

Kinds: ``Company`` and ``Organization`` as such, ``Person`` a person, ``LegalEntity`` (a person or a
company, the publisher does not say) ``legal_entity``, the kind the gate gives a party it cannot
class (``model.LEGAL_ENTITY``). Countries: organisations take ``jurisdiction`` (else ``country``)
as incorporation and ``mainCountry`` (else ``country``, else ``jurisdiction``) as headquarters; a
``LegalEntity`` takes the same incorporation but only ``mainCountry`` as headquarters; persons
take ``nationality`` (else ``citizenship``, else ``country``). Values that are not ISO alpha-2 codes
(``suhh``, ``zz``) are ignored and counted under ``notes.unknown_countries``.

Bad rows (reported with ``file:line``, loading continues; the registry fails the load when a source
has more than ``entities.max_bad_rows``): lines over ``MAX_LINE_BYTES``, invalid UTF-8 or JSON
(including nesting deeper than the parser's limit), a non-object, a missing or invalid ``id`` or
``schema``, a duplicate id, an Ownership without owner or asset, owner == asset, and edges whose
endpoint no source defines.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import IO, Any

import orjson

from ...errors import ConfigError, Problem
from ..model import (
    FLAG_RE,
    FULL,
    ID_RE,
    LEGAL_ENTITY,
    PERSON,
    SCALE,
    UNKNOWN_SHARE,
    Collector,
    Entity,
    SourceReport,
    country_code,
)

MAX_LINE_BYTES = 1 << 20
ENTITY_SCHEMAS = {
    "Company": "company",
    "Organization": "organization",
    "LegalEntity": LEGAL_ENTITY,  # a person or a company: the publisher does not know which
    "Person": PERSON,
}
#: FollowTheMoney topics that become a flag of another name (the rest are kept verbatim).
TOPIC_FLAGS = {
    "sanction": "sdn",
    "sanction.control": "sdn_affiliate",
    "sanction.linked": "sanction_linked",
    "sanction.counter": "counter_sanctioned",
    "export.control": "entity_list",
    "export.control.linked": "entity_list_affiliate",
    "debarment": "debarred",
}
#: The rest of the vocabulary, kept verbatim as flags that are not listings (docs/entities.md).
KNOWN_TOPICS = frozenset(
    """crime crime.fraud crime.cyber crime.fin crime.env crime.theft crime.war crime.boss
    crime.terror crime.traffick crime.traffick.drug crime.traffick.human forced.labor
    asset.frozen wanted corp.offshore corp.shell corp.public corp.disqual gov gov.national
    gov.state gov.muni gov.soe gov.igo gov.head gov.admin gov.executive gov.legislative
    gov.judicial gov.security gov.financial gov.religion fin fin.bank fin.fund fin.adivsor
    mare.detained mare.shadow mare.sts reg.action reg.warn role.pep role.pep.frmr
    role.pep.intl role.pep.natl role.pol role.rca role.judge role.civil role.diplo role.lawyer
    role.acct role.spy role.oligarch role.journo role.act role.lobby pol.party pol.union rel mil
    export.risk invest.risk invest.ban poi""".split()  # noqa: SIM905
)
MAX_DATASETS = 64
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?:$|T)")

# ------------------------------------------------------------------------- percentage parser

_NUM = r"(\d{1,3}(?:[.,]\d{1,6})?|[.,]\d{1,6})\s*(?:%|percent|per cent|pct)?"
_EXACT = re.compile(rf"^{_NUM}$")
_AT_LEAST = re.compile(rf"^(?:>=|=>|at least|not less than|min(?:imum)?\.?)\s*{_NUM}$")
_MORE = re.compile(rf"^(?:>|more than|over|above|greater than|in excess of)\s*{_NUM}$")
_LESS = re.compile(
    rf"^(?:<=|=<|<|less than|under|below|up to|not more than|max(?:imum)?\.?)\s*{_NUM}$"
)
_RANGE = re.compile(rf"^{_NUM}\s*(?:-|–|—|to)\s*{_NUM}$")
_MAJORITY = frozenset({"majority", "majority stake", "majority shareholder", "controlling"})
_MINORITY = frozenset({"minority", "minority stake", "minority shareholder"})
_EPS = 1 / SCALE  # the smallest share strictly above a bound


def _num(text: str) -> float:
    if re.fullmatch(r"\d+,\d{3}", text):
        raise ValueError("ambiguous: decimal comma or thousands separator")
    value = float(text.replace(",", "."))
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"{value:g} is outside 0-100")
    return value


def parse_percentage(text: str) -> float:
    """The share (percent) that ``text`` *certainly* states: its lower bound.

    "50%", "50.5", "50,5 %" -> the number; ">= 50", "at least 50" -> 50; "> 50", "more than 50",
    "majority" -> just above 50 (50.0001: a majority, so a parent); "25-50%" -> 25; "< 25",
    "up to 25", "minority" -> 0 (nothing certain). Raises ``ValueError`` for anything else.
    """
    return percentage_bounds(text)[0]


def percentage_bounds(text: str) -> tuple[float, float]:
    """The lower and upper bounds of the share ``text`` states (see ``parse_percentage``): an
    exact number is both; ">= 25" is 25 to 100, "25-75%" 25 to 75, "< 25" 0 to 25, "minority"
    0 to 50. The upper bound says whether the holding may be a majority."""
    t = " ".join(text.strip().lower().replace("\u2265", ">=").replace("\u2264", "<=").split())
    if not t or len(t) > 64:
        raise ValueError("empty or overlong percentage")
    if t in _MAJORITY:
        return 50.0 + _EPS, 100.0
    if t in _MINORITY:
        return 0.0, 50.0
    if m := _EXACT.match(t):
        value = _num(m.group(1))
        return value, value
    if m := _AT_LEAST.match(t):
        return _num(m.group(1)), 100.0
    if m := _MORE.match(t):
        return min(_num(m.group(1)) + _EPS, 100.0), 100.0
    if m := _LESS.match(t):
        return 0.0, _num(m.group(1))
    if m := _RANGE.match(t):
        lo, hi = _num(m.group(1)), _num(m.group(2))
        if lo > hi:
            raise ValueError("range upside down")
        return lo, hi
    raise ValueError("not a percentage")


# ---------------------------------------------------------------------------------- dates


def date_bounds(text: str) -> tuple[date, date]:
    """(earliest, latest) day a possibly partial FtM date can mean: "2019" -> Jan 1 .. Dec 31.

    Raises ``ValueError`` for anything that is not an ISO date prefix.
    """
    m = _DATE.match(text.strip())
    if not m:
        raise ValueError("not a date")
    year = int(m.group(1))
    if m.group(2) is None:
        return date(year, 1, 1), date(year, 12, 31)
    month = int(m.group(2))
    if m.group(3) is None:
        first = date(year, month, 1)
        last = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
        return first, last
    day = date(year, month, int(m.group(3)))
    return day, day


def holding_status(props: dict[str, Any], as_of: date, rep: SourceReport) -> str | None:
    """None when the holding counts on ``as_of``; else "holdings_ended"/"holdings_not_started".

    Conservative: the earliest possible start and the latest possible end (module docstring).
    """
    starts: list[date] = []
    ends: list[date] = []
    for key, out, pick in (("startDate", starts, 0), ("endDate", ends, 1)):
        vals = props.get(key)
        if not isinstance(vals, list):
            continue
        for v in vals:
            try:
                if not isinstance(v, str):
                    raise ValueError("not a string")
                out.append(date_bounds(v)[pick])
            except ValueError:
                rep.note("unreadable_dates")
    if ends and max(ends) < as_of:
        return "holdings_ended"
    if starts and min(starts) > as_of:
        return "holdings_not_started"
    return None


# ---------------------------------------------------------------------------------- reading


def read_lines(
    fh: IO[bytes],
    rep: SourceReport,
    hasher: Any,
    limit: int = MAX_LINE_BYTES,
    overlong: bytes | None = None,
) -> Any:
    """Yield (line number, bytes) with each line bounded; overlong lines become bad rows.

    An overlong line is skipped, or replaced by ``overlong`` when a reader (CSV) must keep its
    own line count in step with the file.
    """
    lineno = 0
    while True:
        line = fh.readline(limit + 1)
        if not line:
            return
        lineno += 1
        hasher.update(line)
        if len(line) > limit and not line.endswith(b"\n"):
            # SECURITY: never hold an unbounded line in memory; skip to the next newline.
            while True:
                chunk = fh.readline(limit)
                hasher.update(chunk)
                if not chunk or chunk.endswith(b"\n"):
                    break
            rep.bad(lineno, "", f"line longer than {limit} bytes")
            if overlong is not None:
                yield lineno, overlong
            continue
        yield lineno, line


def _first(props: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        vals = props.get(key)
        if isinstance(vals, list) and vals:
            return vals[0]
    return None


def _first_country(props: dict[str, Any], unknown: list[str], *keys: str) -> str | None:
    raw = _first(props, *keys)
    if raw is None:
        return None
    code = country_code(raw)
    if code is None:
        unknown.append(str(raw))
    return code


def _entity(rec: dict[str, Any], props: dict[str, Any], kind: str, rep: SourceReport) -> Entity:
    flags: set[str] = set()
    topics = props.get("topics")
    if isinstance(topics, list):
        for t in topics:
            if not isinstance(t, str):
                continue
            flag = TOPIC_FLAGS.get(t)
            if flag is None:
                flag = t.lower()
                if flag not in KNOWN_TOPICS:
                    rep.note("unknown_topics")
            if FLAG_RE.match(flag):
                flags.add(flag)
            else:
                rep.note("invalid_topics")
    name = _first(props, "name")
    unknown: list[str] = []
    if kind == PERSON:
        country = _first_country(props, unknown, "nationality", "citizenship", "country")
        hq = None
    elif kind == LEGAL_ENTITY:
        # Of unknown kind: only a stated main country is a headquarters (NO_HQ_KINDS).
        country = _first_country(props, unknown, "jurisdiction", "country")
        hq = _first_country(props, unknown, "mainCountry")
    else:
        country = _first_country(props, unknown, "jurisdiction", "country")
        hq = _first_country(props, unknown, "mainCountry", "country", "jurisdiction")
    if unknown:
        rep.note("unknown_countries")  # entities with a country value that is not ISO alpha-2
    return Entity(
        id="ftm:" + rec["id"],
        name=name if isinstance(name, str) else None,
        kind=kind,
        country=country,
        hq_country=hq,
        flags=frozenset(flags),
    )


def load_ftm(path: str, col: Collector, src: int, hasher: Any) -> None:
    """Stream one FtM JSON-lines file into ``col``."""
    rep = col.reports[src]
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read: {exc.strerror}")]) from None
    loads = orjson.loads
    empty: frozenset[str] = frozenset()
    as_of = col.as_of
    # Interned provenance: a million entities share a few hundred distinct dataset lists.
    datasets_seen: dict[tuple[str, ...], tuple[str, ...]] = {}
    with fh:
        for lineno, line in read_lines(fh, rep, hasher):
            if not line.strip():
                continue
            try:
                rec = loads(line)
            except orjson.JSONDecodeError as exc:
                rep.bad(lineno, "", f"invalid JSON: {str(exc)[:120]}")
                continue
            if not isinstance(rec, dict):
                rep.bad(lineno, "", "not a JSON object")
                continue
            schema = rec.get("schema")
            rid = rec.get("id")
            if not isinstance(schema, str):
                rep.bad(lineno, "schema", "missing or not a string")
                continue
            if not isinstance(rid, str) or not ID_RE.match(rid) or len(rid) > 250:
                rep.bad(lineno, "id", "missing or not a valid id")
                continue
            props = rec.get("properties", {})
            if not isinstance(props, dict):
                rep.bad(lineno, "properties", "not an object")
                continue
            kind = ENTITY_SCHEMAS.get(schema)
            if kind is not None:
                ent = _entity(rec, props, kind, rep)
                if not ent.flags:
                    ent.flags = empty
                ds = rec.get("datasets")
                if isinstance(ds, list) and ds:
                    key = tuple(d for d in ds[:MAX_DATASETS] if isinstance(d, str) and len(d) < 128)
                    ent.datasets = datasets_seen.setdefault(key, key)
                ent.source, ent.line = src, lineno
                prior = col.add_entity(ent)
                if prior is not None:
                    rep.bad(lineno, "id", f"duplicate id {rid!r} (first at line {prior.line})")
                continue
            if schema != "Ownership":
                rep.skip(schema[:64])
                continue
            owner, asset = _first(props, "owner"), _first(props, "asset")
            if not isinstance(owner, str) or not ID_RE.match(owner):
                rep.bad(lineno, "properties.owner", "missing or not a valid id")
                continue
            if not isinstance(asset, str) or not ID_RE.match(asset):
                rep.bad(lineno, "properties.asset", "missing or not a valid id")
                continue
            status = holding_status(props, as_of, rep)
            if status is not None:
                rep.note(status)
                continue
            pct = props.get("percentage")
            if pct is not None and not isinstance(pct, list):
                pct = [pct]  # FtM values are lists; a bare value is read as a list of one
            units = UNKNOWN_SHARE
            high = None
            if pct:
                try:
                    bounds = [percentage_bounds(str(p)) for p in pct]
                    units = max(round(lo * SCALE) for lo, _ in bounds)
                    high = max(round(hi * SCALE) for _, hi in bounds)
                except ValueError:
                    units, high = _unreadable(pct, rid, owner, asset, lineno, rep)
            else:
                rep.note("edges_without_share")
            col.add_edge("ftm:" + owner, "ftm:" + asset, units, False, src, lineno, high=high)


def _unreadable(
    pct: list[Any], rid: str, owner: str, asset: str, lineno: int, rep: SourceReport
) -> tuple[int, int | None]:
    """(lower, upper) share units of a percentage list some value of which cannot be read.

    The holding is kept, never dropped nor counted as 0: with no readable value it is of unknown
    size; otherwise it is at least the largest readable lower bound and may be anything above.
    """
    lows: list[int] = []
    bad: str | None = None
    reason = ""
    for p in pct:
        try:
            lows.append(round(percentage_bounds(str(p))[0] * SCALE))
        except ValueError as exc:
            if bad is None:
                bad, reason = str(p)[:40], str(exc)
    rep.warn(
        lineno,
        "properties.percentage",
        f"ownership {rid!r} (ftm:{owner} -> ftm:{asset}): {bad!r} cannot be read ({reason}); "
        + ("taken as at least the other values state" if lows else "a holding of unknown size"),
        "unreadable_percentages",
    )
    if not lows:
        return UNKNOWN_SHARE, None
    return max(lows), FULL
