"""The US Consolidated Screening List (trade.gov), CSV or JSON export, as bulk external data.

Every row is one listed party and becomes an entity ``csl:<_id>`` flagged by its ``source`` list
(``SOURCE_FLAGS``, matched on the abbreviation in parentheses, e.g. "Entity List (EL) - Bureau of
Industry and Security" -> ``entity_list``). A source we do not know keeps a flag ``csl:<slug>`` and
is counted under ``notes.unknown_sources``. The CSL carries no ownership edges; link a CSL record
to a native entity with ``same_as`` or name it as an owner in the native file.

The format is taken from the file name (``.json`` -> JSON, else CSV). CSV: the header must have
``_id`` (or ``id``), ``source`` and ``name``; ``type`` ``Individual`` -> person, ``Vessel`` /
``Aircraft`` kept as such, anything else -> organization; country = the last comma-separated part
of the first address when it is an ISO alpha-2 code (JSON: ``addresses[0].country``); persons take
``nationalities`` / ``citizenships``. JSON: ``{"results": [...]}`` or a bare list of row objects.

Bad rows (``file:line``, or ``results[i]`` for JSON; loading continues up to
``entities.max_bad_rows``): wrong field count, missing id, name or source, duplicate id, invalid
UTF-8, fields over the CSV field limit, lines over ``MAX_LINE_BYTES``. A missing header column or an
unparseable JSON document fails the source outright.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import IO, Any

import orjson

from ...errors import ConfigError, Problem
from ..model import ID_RE, Collector, Entity, SourceReport, country_code
from .ftm import read_lines

MAX_LINE_BYTES = 1 << 20
MAX_JSON_BYTES = 256 << 20

#: CSL list abbreviation -> flag. Only the first three count as listings (model.LISTING_FLAGS).
SOURCE_FLAGS = {
    "EL": "entity_list",  # Entity List - BIS
    "SDN": "sdn",  # Specially Designated Nationals - Treasury
    "MEU": "meu",  # Military End User List - BIS
    "UVL": "unverified_list",  # Unverified List - BIS
    "DPL": "denied_persons",  # Denied Persons List - BIS
    "ISN": "nonproliferation",  # Nonproliferation Sanctions - State
    "DTC": "itar_debarred",  # ITAR Debarred - State
    "SSI": "ssi",  # Sectoral Sanctions Identifications - Treasury
    "FSE": "fse",  # Foreign Sanctions Evaders - Treasury
    "CMIC": "cmic",  # Non-SDN Chinese Military-Industrial Complex Companies - Treasury
    "NS-MBS": "ns_mbs",  # Non-SDN Menu-Based Sanctions - Treasury
    "PLC": "plc",  # Palestinian Legislative Council - Treasury
    "CAPTA": "capta",  # Correspondent Account or Payable-Through Account Sanctions - Treasury
}
_ABBR = re.compile(r"\(([A-Z][A-Z-]*)(?: List)?\)")
_SLUG = re.compile(r"[^a-z0-9]+")
_KINDS = {"individual": "person", "vessel": "vessel", "aircraft": "aircraft"}


def source_flag(source: str, rep: SourceReport | None = None) -> str:
    """The flag for a CSL ``source`` column value."""
    m = _ABBR.search(source)
    key = m.group(1) if m else source.strip().upper()
    flag = SOURCE_FLAGS.get(key)
    if flag is None:
        if rep is not None:
            rep.note("unknown_sources")
        flag = "csl:" + (_SLUG.sub("_", source.lower()).strip("_")[:48] or "unknown")
    return flag


def _country_from_address(text: str) -> str | None:
    first = text.split(";")[0]
    return country_code(first.rsplit(",", 1)[-1].strip()) if first else None


def _first_code(text: str) -> str | None:
    for part in re.split(r"[;,]", text):
        code = country_code(part.strip())
        if code:
            return code
    return None


def _row_entity(
    row: dict[str, Any], where: tuple[int | None, str], rep: SourceReport, src: int
) -> Entity | None:
    line, path = where
    rid = row.get("_id") or row.get("id")
    if not isinstance(rid, str) or not rid.strip():
        rep.bad(line, path, "missing _id")
        return None
    rid = rid.strip()
    if not ID_RE.match(rid) or len(rid) > 250:
        rep.bad(line, path, f"invalid _id {rid[:40]!r}")
        return None
    name = row.get("name")
    if not isinstance(name, str) or not name.strip():
        rep.bad(line, path, "missing name")
        return None
    source = row.get("source")
    if not isinstance(source, str) or not source.strip():
        rep.bad(line, path, "missing source")
        return None
    typ = row.get("type")
    kind = (
        _KINDS.get(typ.strip().lower(), "organization") if isinstance(typ, str) else "organization"
    )
    country: str | None = None
    addresses = row.get("addresses")
    if isinstance(addresses, str):
        country = _country_from_address(addresses)
    elif isinstance(addresses, list) and addresses and isinstance(addresses[0], dict):
        country = country_code(addresses[0].get("country"))
    if kind == "person":
        for key in ("nationalities", "citizenships"):
            val = row.get(key)
            if isinstance(val, list):
                val = ";".join(v for v in val if isinstance(v, str))
            if isinstance(val, str) and (code := _first_code(val)):
                country = code
                break
    return Entity(
        id="csl:" + rid,
        name=name.strip(),
        kind=kind,
        country=country,
        hq_country=None if kind == "person" else country,
        flags=frozenset({source_flag(source, rep)}),
        source=src,
        line=line,
    )


def _add(col: Collector, ent: Entity, rep: SourceReport, line: int | None, path: str) -> None:
    prior = col.add_entity(ent)
    if prior is not None:
        first = f"line {prior.line}" if prior.line else "an earlier row"
        rep.bad(line, path, f"duplicate id {ent.id[4:]!r} (first at {first})")


def _decoded_lines(
    fh: IO[bytes], rep: SourceReport, hasher: Any, state: dict[str, int]
) -> Iterator[str]:
    # An overlong line becomes an empty one so csv.reader's line count stays in step.
    for lineno, line in read_lines(fh, rep, hasher, MAX_LINE_BYTES, overlong=b"\n"):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            state["bad_utf8"] = lineno
            text = line.decode("utf-8", errors="replace")
        if lineno == 1 and text.startswith("\ufeff"):
            text = text[1:]
        yield text


def load_csv(path: str, col: Collector, src: int, hasher: Any) -> None:
    rep = col.reports[src]
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read: {exc.strerror}")]) from None
    state: dict[str, int] = {"bad_utf8": 0}
    with fh:
        reader = csv.reader(_decoded_lines(fh, rep, hasher, state), strict=True)
        header: list[str] | None = None
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                rep.bad(reader.line_num, "", f"malformed CSV: {exc}")
                continue
            line = reader.line_num
            if state["bad_utf8"]:
                state["bad_utf8"] = 0
                if header is None:
                    raise ConfigError([Problem(path, line, "", "header is not UTF-8")])
                rep.bad(line, "", "invalid UTF-8")
                continue
            if not row or row == [""]:
                continue
            if header is None:
                header = [h.strip() for h in row]
                missing = [c for c in ("source", "name") if c not in header]
                if "_id" not in header and "id" not in header:
                    missing.insert(0, "_id")
                if missing:
                    raise ConfigError(
                        [Problem(path, line, "", f"header lacks column(s): {', '.join(missing)}")]
                    )
                continue
            if len(row) != len(header):
                rep.bad(line, "", f"row has {len(row)} fields, the header has {len(header)}")
                continue
            ent = _row_entity(dict(zip(header, row, strict=True)), (line, ""), rep, src)
            if ent is not None:
                _add(col, ent, rep, line, "")
        if header is None:
            raise ConfigError([Problem(path, None, "", "empty file: no CSV header")])


def load_json(path: str, col: Collector, src: int, hasher: Any) -> None:
    rep = col.reports[src]
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read: {exc.strerror}")]) from None
    hasher.update(raw)
    if len(raw) > MAX_JSON_BYTES:
        raise ConfigError([Problem(path, None, "", f"file larger than {MAX_JSON_BYTES} bytes")])
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError([Problem(path, None, "", f"invalid JSON: {str(exc)[:160]}")]) from None
    rows = doc.get("results") if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise ConfigError([Problem(path, None, "", 'expected {"results": [...]} or a list')])
    for i, row in enumerate(rows):
        where = f"results[{i}]"
        if not isinstance(row, dict):
            rep.bad(None, where, "not an object")
            continue
        ent = _row_entity(row, (None, where), rep, src)
        if ent is not None:
            _add(col, ent, rep, None, where)


def load_csl(path: str, col: Collector, src: int, hasher: Any) -> None:
    """Load a CSL export; ``.json`` files as JSON, anything else as CSV."""
    if path.lower().endswith(".json"):
        load_json(path, col, src, hasher)
    else:
        load_csv(path, col, src, hasher)
