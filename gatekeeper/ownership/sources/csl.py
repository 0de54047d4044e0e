"""The US Consolidated Screening List (trade.gov) as published: two CSV layouts and the JSON API.

Forms read (the format is taken from the file name: ``.json`` -> JSON, else CSV):

- the current CSV export, whose first column is ``_id`` (a stable row id);
- the older CSV export without ``_id`` (``source,entity_number,type,programs,name,...``);
- the JSON API form ``{"results": [...]}`` (or a bare list of row objects), rows with or without
  ``id``.

Every row is one listed party and becomes an entity flagged by its ``source`` list
(``list_flag``: every list the CSL has carried, by its abbreviation in parentheses, e.g.
"Entity List (EL) - Bureau of Industry and Security" -> ``entity_list``, or by its name). A list
we do not know keeps a flag ``csl:<slug>`` (never a listing) and is counted under
``notes.unknown_sources``.

Ids: ``csl:<_id>`` / ``csl:<id>`` when the row has one. Otherwise the id is derived from what
identifies the party across list versions: ``csl:ofac-<entity_number>`` for Treasury rows (OFAC's
own number), else ``csl:<flag>-<digest of the normalised name>``; rows that derive the same id are
one party listed twice and are merged (flags, names and countries united, ``notes.rows_merged``).

Kind (``cslkind.py``): ``type`` Individual -> person, Entity -> organization, Vessel/Aircraft
kept. BIS and State rows often have no type: fields only persons have, then the forms of the row's
names decide; a row that says neither is a ``legal_entity`` of unknown kind, never guessed.
An organisation takes its country as headquarters too; a person and a party of unknown kind have
none (``model.NO_HQ_KINDS``), so a headquarters test on them meets an unknown value.

Country, from every place the row gives one, first found wins: the row's own ``country``; for
persons their nationalities, then citizenships; then each address in order (CSV: addresses are
separated by ``;`` and the country is the last comma-separated part; JSON:
``addresses[i].country``).
Codes, alpha-3 codes and names ("China", "Russian Federation", "Burma") are all read
(``countries.py``).

Alternative names are split on ``;`` as published; BIS writes the last of a series as "; and
Name", which is read as "Name".

Bad rows (``file:line``, or ``results[i]`` for JSON) are reported and skipped; they never fail the
registry unless they outnumber the rows read (then the file is not the CSL as published):
wrong field count, missing name or source, a duplicate explicit id, invalid UTF-8, fields over the
CSV field limit, lines over ``MAX_LINE_BYTES``. A header without ``source`` and ``name``, or an
unparseable JSON document, fails the source outright.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator
from typing import IO, Any

import orjson

from ...errors import ConfigError, Problem
from ..countries import country_from_text, normalise_name
from ..model import ID_RE, NO_HQ_KINDS, PERSON, Collector, Entity, SourceReport
from .cslkind import merged_kind, row_kind
from .ftm import read_lines

MAX_LINE_BYTES = 1 << 20
MAX_JSON_BYTES = 256 << 20
MAX_ALT_NAMES = 64  # alternative names kept per party (a hostile row must not blow up memory)
MAX_NAME_CHARS = 512

#: CSL list abbreviation (as in "... (EL) - Bureau ...") -> flag. Only ``entity_list``, ``sdn``
#: and ``meu`` are listings for the US 50% rule (model.LISTING_FLAGS); docs/entities.md has the
#: table with every list's full name.
SOURCE_FLAGS = {
    "EL": "entity_list",  # Entity List - BIS
    "SDN": "sdn",  # Specially Designated Nationals - Treasury (OFAC)
    "MEU": "meu",  # Military End User List - BIS
    "UVL": "unverified_list",  # Unverified List - BIS
    "DPL": "denied_persons",  # Denied Persons List - BIS
    "ISN": "nonproliferation",  # Nonproliferation Sanctions - State
    "DTC": "itar_debarred",  # ITAR / AECA Debarred - State (DDTC)
    "SSI": "ssi",  # Sectoral Sanctions Identifications - Treasury
    "FSE": "fse",  # Foreign Sanctions Evaders - Treasury
    "CMIC": "cmic",  # Non-SDN Chinese Military-Industrial Complex Companies - Treasury
    "NS-CMIC": "cmic",
    "NS-MBS": "ns_mbs",  # Non-SDN Menu-Based Sanctions - Treasury
    "MBS": "ns_mbs",
    "PLC": "plc",  # (Non-SDN) Palestinian Legislative Council - Treasury
    "NS-PLC": "plc",
    "CAPTA": "capta",  # Correspondent Account or Payable-Through Account Sanctions - Treasury
    "CAP": "capta",
    "561": "part_561",  # Part 561 List (foreign financial institutions) - Treasury
    "13599": "eo13599",  # Persons blocked solely under Executive Order 13599 (Non-SDN Iran)
    "NS-ISA": "ns_isa",  # Non-SDN Iranian Sanctions Act List - Treasury
    "ISA": "ns_isa",
}

#: List names as some exports write them, without an abbreviation in parentheses (normalised).
SOURCE_NAMES = {
    "entity list": "entity_list",
    "specially designated nationals": "sdn",
    "special designated nationals": "sdn",
    "military end user list": "meu",
    "military end user": "meu",
    "unverified list": "unverified_list",
    "denied persons list": "denied_persons",
    "nonproliferation sanctions": "nonproliferation",
    "itar debarred": "itar_debarred",
    "aeca debarred list": "itar_debarred",
    "sectoral sanctions identifications list": "ssi",
    "foreign sanctions evaders": "fse",
    "palestinian legislative council list": "plc",
    "non sdn palestinian legislative council list": "plc",
    "part 561 list": "part_561",
    "non sdn iranian sanctions act list": "ns_isa",
    "non sdn menu based sanctions list": "ns_mbs",
    "non sdn chinese military industrial complex companies list": "cmic",
}

_ABBR = re.compile(r"\(([A-Z0-9][A-Z0-9-]*)(?: List)?\)")
_SLUG = re.compile(r"[^a-z0-9]+")
_SERIES_AND = re.compile(r"^and\s+")  # "A; B; and C"


def list_flag(source: str) -> str | None:
    """The flag of a CSL ``source`` value, or None when it names no list we know."""
    m = _ABBR.search(source)
    if m:
        flag = SOURCE_FLAGS.get(m.group(1))
        if flag is not None:
            return flag
    text = source.strip()
    flag = SOURCE_FLAGS.get(text.upper())
    if flag is not None:
        return flag
    # "Unverified List - Bureau of Industry and Security": the list's name before the agency.
    return SOURCE_NAMES.get(normalise_name(_ABBR.sub("", text.split(" - ")[0])))


def source_flag(source: str, rep: SourceReport | None = None) -> str:
    """The flag for a CSL ``source`` column value; an unknown list keeps ``csl:<slug>``."""
    flag = list_flag(source)
    if flag is None:
        if rep is not None:
            rep.note("unknown_sources")
        flag = "csl:" + (_SLUG.sub("_", source.lower()).strip("_")[:48] or "unknown")
    return flag


def _values(value: Any, sep: str = ";") -> list[str]:
    """A CSV cell split on ``sep``, or a JSON list of strings, as stripped non-empty strings."""
    if isinstance(value, str):
        parts = value.split(sep)
    elif isinstance(value, list):
        parts = [v for v in value if isinstance(v, str)]
    else:
        return []
    return [p.strip() for p in parts if p.strip()]


def _address_countries(addresses: Any) -> Iterator[str | None]:
    if isinstance(addresses, str):
        for addr in _values(addresses):
            yield country_from_text(addr.rsplit(",", 1)[-1])
    elif isinstance(addresses, list):
        for addr in addresses:
            if isinstance(addr, dict):
                yield country_from_text(addr.get("country"))


def _countries(row: dict[str, Any], person: bool) -> list[str]:
    """Every country the row gives, in the order of precedence (module docstring)."""
    found: list[str | None] = [country_from_text(row.get("country"))]
    if person:
        for key in ("nationalities", "citizenships"):
            found.extend(country_from_text(v) for v in _values(row.get(key), ";"))
    found.extend(_address_countries(row.get("addresses")))
    out: list[str] = []
    for code in found:
        if code is not None and code not in out:
            out.append(code)
    return out


def _row_id(row: dict[str, Any], flag: str, name: str) -> tuple[str | None, bool]:
    """(id without prefix, derived?); None when the row's own id is unusable."""
    rid = row.get("_id", row.get("id"))
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if isinstance(rid, str) and rid.strip():
        rid = rid.strip()
        return (rid if ID_RE.match(rid) and len(rid) <= 250 else None), False
    number = row.get("entity_number")
    if isinstance(number, int) and not isinstance(number, bool):
        number = str(number)
    if isinstance(number, str) and number.strip().isdigit() and len(number.strip()) <= 20:
        return f"ofac-{number.strip()}", True
    digest = hashlib.sha256(normalise_name(name).encode()).hexdigest()[:16]
    return f"{flag.replace('csl:', 'csl-')}-{digest}", True


def _row_entity(
    row: dict[str, Any], where: tuple[int | None, str], rep: SourceReport, src: int
) -> tuple[Entity, bool] | None:
    line, path = where
    name = row.get("name")
    if not isinstance(name, str) or not name.strip():
        rep.bad(line, path, "missing name")
        return None
    name = name.strip()[:MAX_NAME_CHARS]
    source = row.get("source")
    if not isinstance(source, str) or not source.strip():
        rep.bad(line, path, "missing source")
        return None
    flag = source_flag(source, rep)
    rid, derived = _row_id(row, flag, name)
    if rid is None:
        shown = str(row.get("_id", row.get("id")))[:40]
        rep.bad(line, path, f"invalid _id {shown!r}")
        return None
    alt = tuple(
        _SERIES_AND.sub("", a)[:MAX_NAME_CHARS]
        for a in _values(row.get("alt_names"))[:MAX_ALT_NAMES]
    )
    kind = row_kind(row, [name, *alt])
    countries = _countries(row, kind == PERSON)
    country = countries[0] if countries else None
    ent = Entity(
        id="csl:" + rid,
        name=name,
        kind=kind,
        country=country,
        hq_country=None if kind in NO_HQ_KINDS else country,
        flags=frozenset({flag}),
        source=src,
        line=line,
        alt_names=alt,
    )
    return ent, derived


def _add(
    col: Collector, got: tuple[Entity, bool], rep: SourceReport, line: int | None, path: str
) -> None:
    ent, derived = got
    prior = col.add_entity(ent)
    if prior is None:
        return
    if derived:
        # The same party on a second row (or a second list): one entity, everything united.
        prior.flags = prior.flags | ent.flags
        prior.alt_names = tuple(dict.fromkeys(prior.alt_names + ent.alt_names))[:MAX_ALT_NAMES]
        prior.kind = merged_kind(prior.kind, ent.kind)
        if prior.country is None:
            prior.country = ent.country
        prior.hq_country = None if prior.kind in NO_HQ_KINDS else prior.country
        rep.note("rows_merged")
        return
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


def _open(path: str) -> IO[bytes]:
    try:
        return open(path, "rb")  # the caller closes it
    except OSError as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read: {exc.strerror}")]) from None


def load_csv(path: str, col: Collector, src: int, hasher: Any) -> None:
    rep = col.reports[src]
    state: dict[str, int] = {"bad_utf8": 0}
    with _open(path) as fh:
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
                if missing:
                    raise ConfigError(
                        [Problem(path, line, "", f"header lacks column(s): {', '.join(missing)}")]
                    )
                if "_id" not in header and "id" not in header:
                    rep.note("rows_without_id")  # the older export: ids are derived
                continue
            if len(row) != len(header):
                rep.bad(line, "", f"row has {len(row)} fields, the header has {len(header)}")
                continue
            got = _row_entity(dict(zip(header, row, strict=True)), (line, ""), rep, src)
            if got is not None:
                _add(col, got, rep, line, "")
        if header is None:
            raise ConfigError([Problem(path, None, "", "empty file: no CSV header")])


def load_json(path: str, col: Collector, src: int, hasher: Any) -> None:
    rep = col.reports[src]
    with _open(path) as fh:
        raw = fh.read(MAX_JSON_BYTES + 1)
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
        got = _row_entity(row, (None, where), rep, src)
        if got is not None:
            _add(col, got, rep, None, where)


def load_csl(path: str, col: Collector, src: int, hasher: Any) -> None:
    """Load a CSL export; ``.json`` files as JSON, anything else as CSV."""
    if path.lower().endswith(".json"):
        load_json(path, col, src, hasher)
    else:
        load_csv(path, col, src, hasher)
