"""What kind of party a CSL row lists: a person, an organisation, a vessel, an aircraft, or unknown.

Treasury rows say it in ``type`` (older OFAC exports in ``nsp_type``): Individual, Entity, Vessel,
Aircraft. BIS and State rows (Entity List, Denied Persons, Unverified, ISN, DTC) usually leave it
empty, and then only the row itself is read, in this order:

1. **Fields only persons have**: ``dates_of_birth``, ``places_of_birth``, ``nationalities``,
   ``citizenships``, ``title`` (a position held) -> person.
2. **The names** (``name`` and every ``alt_names`` entry), each read for the forms the lists use:

   - for people: "SURNAME, Given Names" ("ABELAIRAS, AMANCIO J.", "Jawid, Said Jan Abd-al-Salam"),
     "Given Names SURNAME" (OFAC's newer form, "Evren KAYAKIRAN"), a generational suffix
     ("Gustavo Gonzalez, Jr."), or a leading honorific ("Engineer Idris", "Haji ...");
   - for organisations: a legal form (Ltd, Inc, LLC, GmbH, OAO, S.A., ...) or a word that names an
     institution or a business (Company, Institute, University, Bank, Regiment, Trading, ...).

   Names that point one way only decide it; names that point both ways, or neither, decide
   nothing.
3. Otherwise the kind is **unknown**, ``legal_entity`` (FollowTheMoney's ``LegalEntity``: a person
   or a company, the source does not say). "Murat Peker" or "KATSUTA KEISUKE" read as people to a
   reader who knows the given names, but the row does not say so, and the gate does not guess.

An unknown kind is never the more permissive reading: it has no headquarters of its own, so a
headquarters test on it, or on anything it controls, meets an unknown value
(``model.NO_HQ_KINDS``); its listing, its flags and the holdings that name it count exactly as an
organisation's. A person misread as an organisation would have its country taken as a
headquarters; that is why an organisation needs a word in its name that says so.
"""

from __future__ import annotations

import re
from typing import Any

from ..model import LEGAL_ENTITY, PERSON

#: ``type`` values as published (lower case) -> kind. Any other value reads as no type at all.
TYPE_KINDS = {
    "individual": PERSON,
    "person": PERSON,
    "vessel": "vessel",
    "aircraft": "aircraft",
    "entity": "organization",
    "organization": "organization",
    "company": "organization",
}
PERSON_FIELDS = ("dates_of_birth", "places_of_birth", "nationalities", "citizenships", "title")

# Words (lower case, dots removed) that make a name an organisation's: legal forms, then nouns
# that name an institution or a business. A person's name carries none of them.
_ORG_WORDS = frozenset(
    """inc incorporated ltd llc llp lp co corp corporation company companies limited gmbh ag
    plc bv nv oao ooo zao pao jsc ojsc cjsc pjsc pte pvt srl spa sarl sa sas kg ltda cia fze fzco
    fzc est bhd sdn sc
    group holding holdings trading trade traders industries industrial industry international
    intl enterprise enterprises bank university univ institute institution academy center centre
    laboratory laboratories lab labs factory plant works ministry department agency bureau
    office organization organisation regiment army brigade division corps forces services
    logistics technology technologies tech technik electronics engineering shipping airlines
    airline airways air aviation aerospace import export contracting consulting investment
    investments solutions systems research development construction association foundation
    society committee council network manufacturing machinery equipment chemical chemicals
    petroleum oil gas energy metal metals steel photonics semiconductor semiconductors
    microelectronics telecom communications software cargo freight marine maritime school
    college hospital""".split()  # noqa: SIM905
)
_HONORIFICS = frozenset(
    """mr mrs ms miss dr engineer eng haji hajji hadji mullah mulla maulawi mawlawi maulavi
    mawlavi sheikh shaykh sheik qari""".split()  # noqa: SIM905
)
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv"})
_TOKEN = re.compile(r"[^\W_]+")
# One word of a person's name: letters, with inner or leading apostrophes and hyphens
# ("AL-'UBAYSI", "'ANABI", "Abd-al-Salam"), or an initial ("J.").
_NAME_WORD = r"'?[^\W\d_]+(?:['-][^\W\d_]+)*'?\.?"
# "SURNAME, Given Names" (up to four words each side; the surname not in lower case).
_SURNAME_FIRST = re.compile(
    rf"^(?=[^a-z])(?:{_NAME_WORD} ){{0,3}}{_NAME_WORD}, (?:{_NAME_WORD} ){{0,5}}{_NAME_WORD}$"
)
# "Given Names SURNAME": given names with lower-case letters, then a surname in capitals.
_SURNAME_LAST = re.compile(
    r"^(?:[A-Z][^\W\d_]*[a-z][^\W\d_]*(?:['-][^\W\d_]+)*\.? ){1,4}"
    r"[A-Z][A-Z'-]*[A-Z](?: [A-Z][A-Z'-]*[A-Z]){0,2}$"
)


def _tokens(name: str) -> list[str]:
    return _TOKEN.findall(name.lower().replace(".", ""))


def name_kind(name: str) -> str | None:
    """``person`` or ``organization`` when the form of ``name`` says so, else None."""
    name = " ".join(name.split())
    words = _tokens(name)
    if not words:
        return None
    if not _ORG_WORDS.isdisjoint(words):
        return "organization"
    if any(c.isdigit() for c in name):
        return None
    if words[-1] in _SUFFIXES and len(words) >= 3:
        return PERSON
    if words[0] in _HONORIFICS and len(words) >= 2:
        return PERSON
    if _SURNAME_FIRST.match(name) or _SURNAME_LAST.match(name):
        return PERSON
    return None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(";") if v.strip()]
    if isinstance(value, list):
        return [v.strip() for v in value if isinstance(v, str) and v.strip()]
    return []


def row_kind(row: dict[str, Any], names: list[str]) -> str:
    """The kind of the party a CSL row lists; ``names`` are its name and alternative names."""
    for key in ("type", "nsp_type", "sdn_type"):
        typ = row.get(key)
        if isinstance(typ, str) and typ.strip().lower() in TYPE_KINDS:
            return TYPE_KINDS[typ.strip().lower()]
    if any(_strings(row.get(k)) for k in PERSON_FIELDS):
        return PERSON
    found = {k for k in map(name_kind, names) if k is not None}
    return found.pop() if len(found) == 1 else LEGAL_ENTITY


def merged_kind(a: str, b: str) -> str:
    """The kind of one party read from two rows: what they agree on, or what one of them knows."""
    if a == b or b == LEGAL_ENTITY:
        return a
    return b if a == LEGAL_ENTITY else LEGAL_ENTITY
