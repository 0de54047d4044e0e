"""The entity graph as loaded from the sources, before resolution.

Sources (``sources/native.py``, ``ftm.py``, ``csl.py``) feed one ``Collector``: entities become
``Entity`` records, ownership edges go into compact parallel arrays (a million entities and 1.5
million edges must fit in memory comfortably), and every rejected row becomes a located ``Problem``
counted in that source's ``SourceReport`` — nothing is dropped silently.

Shares are kept as integers in units of 1/10,000 of a percentage point (``SCALE``) so the 50% rule
sums exactly: 33.3 + 16.7 is 50, and 49.99 is not.

Id spaces: native ids are bare (``acme-sg``); imported ids carry their source's prefix (``ftm:``,
``csl:``) so two sources never collide by accident. The native file links them explicitly:
``same_as: [ftm:Q123]`` makes the imported record an *alias* of the native entity (its flags and its
edges are merged into the native entity, and ``profile("ftm:Q123")`` returns the native profile),
and a native ``owners:`` list may name imported ids directly.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from ..context import License
from ..errors import Problem

SCALE = 10_000  # share units per percentage point
FULL = 100 * SCALE
HALF = 50 * SCALE
#: Share units of a holding whose size the source does not state (an FtM ``Ownership`` without a
#: percentage). Never counted as 0: the resolver bounds it from above (``possibly_affiliated``).
UNKNOWN_SHARE = -1
#: Edge control bits: control without equity (a VIE contract), and a stated share whose upper
#: bound may be a majority (an FtM range or lower bound such as "50 - 75" or ">= 25%").
#: A share stated only as bounds is kept as its lower bound (``e_units``, what the 50% rule counts)
#: plus, when the upper bound is higher, that bound in ``Collector.e_high`` (what the rule bounded
#: from above, ``possibly_affiliated``, counts): sparse, since most published shares are exact.
CONTROL = 1
MAY_CONTROL = 2

#: Flags that make an entity *listed* for the US 50% rule (docs/entities.md), read by the policy as
#: ``ownership.affiliated`` / ``listed_share`` / ``listed_via``: ``entity_list`` (BIS Entity List)
#: and ``meu`` (BIS Military End-User List) are the lists the BIS Affiliates Rule extends to
#: 50%-owned affiliates; ``sdn`` is OFAC's 50% rule. They aggregate with each other (30% SDN + 20%
#: Entity List is a US affiliate) but never with another jurisdiction's designations.
#: ``sdn_affiliate`` / ``entity_list_affiliate`` are the publisher's own 50%-rule findings
#: (OpenSanctions ``sanction.control`` / ``export.control.linked``): an entity found to be owned
#: or controlled by a listed party is treated as listed, so its holdings carry the rule further
#: even when the edges that made it an affiliate are not in our data.
#: ``entities.listing_flags`` overrides the set.
LISTING_FLAGS: frozenset[str] = frozenset(
    {"entity_list", "sdn", "meu", "sdn_affiliate", "entity_list_affiliate"}
)

#: Flags that each get a 50% rule of their own, seeded only by entities carrying that flag, read as
#: ``ownership.affiliated_flags``. ``military_end_user`` is the Chinese MOFCOM designation (No. 1
#: [2026] catches "any end user" acting for a Japanese military end user); it must not make an
#: entity a *US* affiliate, nor add up with US lists, so it has its own fixpoint. Overridden with
#: ``entities.affiliation_flags``. Every other flag is kept on the profile but does not propagate.
AFFILIATION_FLAGS: frozenset[str] = frozenset({"entity_list", "sdn", "meu", "military_end_user"})

PERSON = "person"
#: A legal entity of unknown kind (FollowTheMoney's ``LegalEntity``): the source does not say
#: whether the party is a person or an organisation (an untyped CSL row, ``sources/cslkind.py``).
LEGAL_ENTITY = "legal_entity"
KINDS = ("company", "organization", PERSON, LEGAL_ENTITY)
#: Kinds whose country is not a headquarters: a person has none, and of a legal entity of unknown
#: kind nobody knows whether it has one, so a headquarters test on it (or on what it controls)
#: meets an unknown value rather than its country. Vessels and aircraft keep their flag state.
NO_HQ_KINDS: frozenset[str] = frozenset({PERSON, LEGAL_ENTITY})
IMPORT_PREFIXES = ("ftm:", "csl:")

MAX_ID_LEN = 256
ID_RE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,256}$")
FLAG_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
ECCN_RE = re.compile(r"^[0-9][A-E][0-9]{3}(\.[A-Za-z0-9]+)*$|^EAR99$")

# ISO 3166-1 alpha-2, officially assigned codes, plus XK (Kosovo, user-assigned but universal in
# sanctions data). Checked by licences and the native loader; imports keep only codes in this set.
ISO_COUNTRIES: frozenset[str] = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
    GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW XK""".split()  # noqa: SIM905
)


def country_code(value: Any) -> str | None:
    """``value`` as an upper-case ISO alpha-2 code, or None when it is not one."""
    if not isinstance(value, str) or len(value) != 2:
        return None
    code = value.upper()
    return code if code in ISO_COUNTRIES else None


def share_units(percent: float) -> int:
    """A percentage (0–100) as integer share units."""
    return round(percent * SCALE)


@dataclass(slots=True)
class Entity:
    """One company, organisation, person (or party of unknown kind) as a source described it."""

    id: str
    name: str | None = None
    kind: str = "company"
    country: str | None = None
    hq_country: str | None = None
    flags: frozenset[str] = frozenset()
    licenses: tuple[License, ...] = ()
    source: int = 0  # index of the SourceReport
    line: int | None = None
    alt_names: tuple[str, ...] = ()  # other names the source gives (CSL ``alt_names``)
    datasets: tuple[str, ...] = ()  # provenance: the publisher's datasets (FtM ``datasets``)


@dataclass(slots=True)
class SourceReport:
    """What one source contributed and what it rejected (``Registry.stats['sources']``)."""

    path: str
    format: str
    strict: bool  # native files are hand-written config: any problem fails the load
    # CSL: bad rows are reported and skipped; only a file with more bad rows than good fails
    lenient: bool = False
    entities: int = 0
    edges: int = 0
    bad_rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # well-formed rows we do not use
    notes: dict[str, int] = field(default_factory=dict)  # counted data-quality observations
    problems: list[Problem] = field(default_factory=list)
    # Rows read with a caveat (a share that cannot be read is taken as of unknown size): they
    # never fail the load, but each names its row, so the publisher's data can be corrected.
    warnings: list[Problem] = field(default_factory=list)

    MAX_KEPT = 1000  # problem messages kept per source; the count stays exact

    def bad(self, line: int | None, path: str, message: str) -> None:
        self.bad_rows += 1
        if len(self.problems) < self.MAX_KEPT:
            self.problems.append(Problem(self.path, line, path, message))

    def warn(self, line: int | None, path: str, message: str, note: str) -> None:
        """A row kept with a caveat, counted under ``notes[note]``."""
        self.note(note)
        if len(self.warnings) < self.MAX_KEPT:
            self.warnings.append(Problem(self.path, line, path, message))

    def note(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n

    def skip(self, key: str) -> None:
        self.skipped[key] = self.skipped.get(key, 0) + 1

    def to_json(self, max_problems: int = 20) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "entities": self.entities,
            "edges": self.edges,
            "bad_rows": self.bad_rows,
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
            "problems": [str(p) for p in self.problems[:max_problems]],
            "warnings": [str(p) for p in self.warnings[:max_problems]],
        }


class Collector:
    """Accumulates entities and edges from every source into one id space.

    Ids are interned to dense integers on first sight (as an entity or as an edge endpoint), so
    edges may name entities defined later or in another source; ``entities[i] is None`` marks an id
    that was only ever referenced.
    """

    def __init__(self, as_of: date | None = None) -> None:
        # The day holdings are judged on (FtM ``startDate``/``endDate``); today (UTC) by default.
        self.as_of: date = as_of or datetime.now(UTC).date()
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.entities: list[Entity | None] = []
        self.reports: list[SourceReport] = []
        # Edges as parallel arrays: owner, asset, share units, control, source, line.
        self.e_owner = array("l")
        self.e_asset = array("l")
        self.e_units = array("l")
        self.e_control = bytearray()
        self.e_source = array("l")
        self.e_line = array("l")  # 0 = unknown
        self.e_high: dict[int, int] = {}  # edge index -> upper bound, for a share stated as bounds
        self.alias_of: dict[int, int] = {}  # alias id -> canonical (native) id
        self.alias_line: dict[int, tuple[int, int]] = {}  # alias id -> (source, line)

    def add_report(
        self, path: str, fmt: str, *, strict: bool, lenient: bool = False
    ) -> SourceReport:
        self.reports.append(SourceReport(path, fmt, strict, lenient))
        return self.reports[-1]

    def intern(self, entity_id: str) -> int:
        idx = self.index.get(entity_id)
        if idx is None:
            idx = len(self.ids)
            self.index[entity_id] = idx
            self.ids.append(entity_id)
            self.entities.append(None)
        return idx

    def add_entity(self, ent: Entity) -> Entity | None:
        """Add ``ent``; returns the earlier entity with the same id instead when there is one."""
        idx = self.intern(ent.id)
        prior = self.entities[idx]
        if prior is not None:
            return prior
        ent.id = self.ids[idx]  # share the interned string
        self.entities[idx] = ent
        self.reports[ent.source].entities += 1
        return None

    def add_edge(
        self,
        owner: str,
        asset: str,
        units: int,
        control: bool,
        source: int,
        line: int | None,
        *,
        high: int | None = None,
    ) -> None:
        """``high``: the upper bound of a share stated as bounds (``units`` is its lower bound)."""
        may_control = False
        if high is not None and high > units >= 0:
            self.e_high[len(self.e_units)] = high
            may_control = high > HALF
        self.e_owner.append(self.intern(owner))
        self.e_asset.append(self.intern(asset))
        self.e_units.append(units)
        self.e_control.append((CONTROL if control else 0) | (MAY_CONTROL if may_control else 0))
        self.e_source.append(source)
        self.e_line.append(line or 0)
        self.reports[source].edges += 1
