"""The vocabulary of conditions: attributes a rule may read and the operators over them.

Each attribute has a type (``str``, ``bool``, ``num``, ``set`` or ``any``) and a getter on
``PolicyInput``. A getter returns one of three kinds of value:

- a value;
- ``None`` when the whole fact is *absent* (no compute on a read route, no principal on an
  anonymous route): every comparison is false, ``exists`` is false, ``missing`` is false;
- ``UNKNOWN`` when the fact is there but the source that should provide this attribute has no
  value for this request (an entity without a recorded country, an address the GeoIP database does
  not hold, a model outside the catalog, a claim the token does not carry). A comparison with an
  unknown value is neither true nor false (see ``terms``); ``exists`` is false, ``missing`` true.

Which attributes can be unknown, and when, is the table ``UNKNOWN_IF_NONE`` (not on an internal
network: ``NOT_APPLICABLE_WHEN``) plus the special getters below; every other attribute is always
known when its fact is there (e.g. an address absent from the anonymous-IP database is known not
to be a VPN).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

from .model import PolicyInput
from .purpose import declared_purposes

Getter = Callable[[PolicyInput], Any]
Predicate = Callable[[Any], bool]

STR, BOOL, NUM, SET, ANY = "str", "bool", "num", "set", "any"
_TYPE_NAMES = {STR: "a string", BOOL: "a boolean", NUM: "a number", SET: "a set", ANY: "any value"}


class _Unknown:
    """The value of an attribute a configured source has no value for (a singleton)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()


@dataclass(frozen=True, slots=True)
class Attribute:
    """A readable attribute: its dotted name, its type and its getter (value, None or UNKNOWN).

    ``multi``: the value is a set of strings read as "any of them" by the single-value operators
    (``request.purpose``: the token's purpose claim plus any purpose the client adds).
    """

    name: str
    type: str
    get: Getter
    multi: bool = False
    # For a plain field: the fact and field it reads, and whether an empty field is unknown
    # (lets ``terms`` fuse the read and the comparison into one closure on the hot path).
    fact: str | None = None
    field: str | None = None
    unknown_if_none: bool = False


# Attributes whose value, when the fact is there but the field is empty, is unknown rather than
# "no value": the source is configured and did not say.
UNKNOWN_IF_NONE = frozenset(
    {
        "principal.tenant",
        "principal.entity",
        "principal.nationality",
        "entity.name",
        "entity.country",
        "entity.hq_country",
        "ownership.ultimate_parent",
        "ownership.parent_hq_country",
        "geo.country",
        "geo.registered_country",
        "geo.asn",
    }
)

# The configuration key that must be set for an attribute to have a value at all; ``policy
# validate`` and start-up warn about rules reading one whose source is not configured.
SOURCES: Mapping[str, str] = {
    "geo.asn": "geoip.asn_db",
    "geo.anonymous": "geoip.anonymous_db",
    "geo.vpn": "geoip.anonymous_db",
    "geo.tor": "geoip.anonymous_db",
    "geo.hosting": "geoip.anonymous_db",
    "geo.proxy": "geoip.anonymous_db",
}


# A fact field that, when true, makes the fact's empty fields "no value" rather than unknown: an
# address on an internal network has no country or ASN to look up.
NOT_APPLICABLE_WHEN: Mapping[str, str] = {"geo": "internal"}


def _field(fact: str, name: str, unknown_if_none: bool) -> Getter:
    fact_of = attrgetter(fact)
    value_of = attrgetter(name)
    guard = NOT_APPLICABLE_WHEN.get(fact)
    if not unknown_if_none:

        def get(inp: PolicyInput) -> Any:
            obj = fact_of(inp)
            return None if obj is None else value_of(obj)

        return get

    def get_or_unknown(inp: PolicyInput) -> Any:
        obj = fact_of(inp)
        if obj is None:
            return None
        value = value_of(obj)
        if value is None and not (guard and getattr(obj, guard)):
            return UNKNOWN
        return value

    return get_or_unknown


def _purpose(inp: PolicyInput) -> frozenset[str]:
    # SECURITY: the token's claim always counts; the client's header can only add purposes.
    req = inp.request
    claim = inp.principal.purpose if inp.principal is not None else None
    return declared_purposes(claim, req.purpose if req is not None else None)


def _gpu_model(inp: PolicyInput) -> Any:
    # A model outside the catalog is not known to be what its name says (it is priced as the
    # catalog's top part); the name is then unknown for conditions on the model.
    c = inp.compute
    if c is None:
        return None
    if not c.model_known or c.gpu_model is None:
        return UNKNOWN
    return c.gpu_model


def _claim(name: str) -> Getter:
    def get(inp: PolicyInput) -> Any:
        p = inp.principal
        if p is None:
            return None
        value = p.claims.get(name)
        if value is None:
            return UNKNOWN  # the issuer is configured and its token does not say
        # Lists from JSON claims are compared as sets (contains / intersects).
        return frozenset(value) if isinstance(value, list) and _hashable(value) else value

    return get


def _hashable(values: list[Any]) -> bool:
    return all(isinstance(v, str | int | float | bool) for v in values)


_SPEC: tuple[tuple[str, str, str, str], ...] = (
    # (dotted name, type, fact, field)
    ("principal.subject", STR, "principal", "subject"),
    ("principal.tenant", STR, "principal", "tenant"),
    ("principal.entity", STR, "principal", "entity"),
    ("principal.issuer", STR, "principal", "issuer"),
    ("principal.nationality", STR, "principal", "nationality"),
    ("entity.known", BOOL, "ownership", "known"),
    ("entity.id", STR, "ownership", "id"),
    ("entity.name", STR, "ownership", "name"),
    ("entity.country", STR, "ownership", "country"),
    ("entity.hq_country", STR, "ownership", "hq_country"),
    ("entity.flags", SET, "ownership", "flags"),
    ("ownership.affiliated", BOOL, "ownership", "affiliated"),
    ("ownership.possibly_affiliated", BOOL, "ownership", "possibly_affiliated"),
    ("ownership.listed_share", NUM, "ownership", "listed_share"),
    ("ownership.listed_via", SET, "ownership", "listed_via"),
    ("ownership.affiliated_flags", SET, "ownership", "affiliated_flags"),
    ("ownership.ultimate_parent", STR, "ownership", "ultimate_parent"),
    ("ownership.parent_hq_country", STR, "ownership", "parent_hq_country"),
    ("geo.known", BOOL, "geo", "known"),
    ("geo.country", STR, "geo", "country"),
    ("geo.registered_country", STR, "geo", "registered_country"),
    ("geo.asn", NUM, "geo", "asn"),
    ("geo.anonymous", BOOL, "geo", "anonymous"),
    ("geo.vpn", BOOL, "geo", "vpn"),
    ("geo.tor", BOOL, "geo", "tor"),
    ("geo.hosting", BOOL, "geo", "hosting"),
    ("geo.proxy", BOOL, "geo", "proxy"),
    ("geo.internal", BOOL, "geo", "internal"),
    ("compute.gpu_model", STR, "compute", "gpu_model"),
    ("compute.gpus", NUM, "compute", "gpus"),
    ("compute.hours", NUM, "compute", "hours"),
    ("compute.gpu_hours", NUM, "compute", "gpu_hours"),
    ("compute.tpp", NUM, "compute", "tpp"),
    ("compute.tpp_hours", NUM, "compute", "tpp_hours"),
    ("compute.eccn", STR, "compute", "eccn"),
    ("compute.controlled", BOOL, "compute", "controlled"),
    ("compute.reasons", SET, "compute", "assumptions"),  # older name of compute.assumptions
    ("compute.assumptions", SET, "compute", "assumptions"),
    ("compute.model_known", BOOL, "compute", "model_known"),
    ("request.route", STR, "request", "route"),
    ("request.method", STR, "request", "method"),
)

ATTRIBUTES: Mapping[str, Attribute] = {
    name: Attribute(
        name,
        typ,
        _field(fact, fld, name in UNKNOWN_IF_NONE),
        fact=fact,
        field=fld,
        unknown_if_none=name in UNKNOWN_IF_NONE,
    )
    for name, typ, fact, fld in _SPEC
} | {
    "compute.gpu_model": Attribute("compute.gpu_model", STR, _gpu_model),
    "request.purpose": Attribute("request.purpose", STR, _purpose, multi=True),
}

CLAIM_PREFIX = "principal.claims."


def lookup_attribute(name: str) -> Attribute | None:
    """The attribute called ``name`` (``principal.claims.<claim>`` included), or ``None``."""
    attr = ATTRIBUTES.get(name)
    if attr is not None:
        return attr
    if name.startswith(CLAIM_PREFIX) and len(name) > len(CLAIM_PREFIX):
        return Attribute(name, ANY, _claim(name[len(CLAIM_PREFIX) :]))
    return None


def suggest(name: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else an empty string."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------------- operators

OPERATORS = (
    "contains",
    "exists",
    "gt",
    "gte",
    "in",
    "in_group",
    "intersects",
    "lt",
    "lte",
    "missing",
    "not_in",
    "not_in_group",
)
# Operators that test whether there is a value: always true or false, never unknown.
EXPLICIT_OPS = frozenset({"exists", "missing"})
COMBINATORS = ("all", "any", "not")

_NUMERIC_OPS = ("gt", "gte", "lt", "lte")


class OperandError(ValueError):
    """A value or operator does not fit the attribute; the message is shown to the author."""


def describe(value: Any) -> str:
    """A short rendering of a YAML value for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# YAML 1.1 (PyYAML) reads `2.0e8` as a string: its float syntax wants a signed exponent. Authors
# copy such numbers from the contract, so a string in exactly that shape is accepted as a number.
_EXP_NUMBER = re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$")


def as_number(value: Any) -> Any:
    """``value``, or the float it spells when it is a YAML-1.2-style exponent string."""
    if isinstance(value, str) and _EXP_NUMBER.match(value):
        return float(value)
    return value


def check_scalar(attr: Attribute, value: Any) -> Any:
    """``value`` if it is a valid operand for ``attr``'s type, else ``OperandError``."""
    t = attr.type
    if t == NUM:
        value = as_number(value)
    if value is None:
        raise OperandError("null is not a value; use {exists: false}")
    if t == BOOL:
        if not isinstance(value, bool):
            raise OperandError(f"expected true or false, got {describe(value)}")
    elif t == NUM:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OperandError(f"expected a number, got {describe(value)}")
    elif t in (STR, SET):
        if not isinstance(value, str):
            raise OperandError(f"expected a string, got {describe(value)}")
    elif not isinstance(value, str | int | float | bool):
        raise OperandError(f"expected a scalar, got {describe(value)}")
    return value


def _check_list(attr: Attribute, value: Any, op: str) -> frozenset[Any]:
    if not isinstance(value, list):
        raise OperandError(f"{op} needs a list, got {describe(value)}")
    return frozenset(check_scalar(attr, v) for v in value)


def _is_number(v: Any) -> bool:
    return v is not None and not isinstance(v, bool) and isinstance(v, int | float)


def _numeric(op: str, x: float, *, guarded: bool) -> Predicate:
    """``v <op> x``; false for None, and (for untyped claims) for anything not a number."""
    if guarded:
        inner = _numeric(op, x, guarded=False)
        return lambda v: _is_number(v) and inner(v)
    if op == "gt":
        return lambda v: v is not None and v > x
    if op == "gte":
        return lambda v: v is not None and v >= x
    if op == "lt":
        return lambda v: v is not None and v < x
    return lambda v: v is not None and v <= x


def _strict_eq(expected: Any) -> Predicate:
    # For untyped claims: True == 1 in Python, but a policy saying `true` must not match 1.
    kind = type(expected)

    def pred(v: Any) -> bool:
        return type(v) is kind and v == expected

    return pred


def equality(attr: Attribute, value: Any) -> tuple[Predicate, Any]:
    """(predicate, normalised operand) for a bare value (equality). Sets have no equality."""
    if isinstance(value, list):
        raise OperandError("a bare list is ambiguous; use {in: [...]} or {intersects: [...]}")
    if attr.type == SET:
        raise OperandError(f"{attr.name} is a set; use contains, intersects or exists")
    x = check_scalar(attr, value)
    if attr.type == ANY:
        return _strict_eq(x), x
    if attr.multi:
        return (lambda vs: x in vs), x
    # Not x.__eq__: it returns NotImplemented (truthy) for a value of another type, e.g. None.
    return (lambda v: v == x), x


def operator(
    attr: Attribute, op: str, value: Any, groups: Mapping[str, tuple[Any, ...]]
) -> tuple[Predicate, Any]:
    """(predicate, normalised operand) for ``{attr: {op: value}}``; raises ``OperandError``,
    or ``KeyError`` for an unknown group."""
    t = attr.type
    if op in EXPLICIT_OPS:
        if not isinstance(value, bool):
            raise OperandError(f"{op} needs true or false, got {describe(value)}")
        return _presence(attr, op == "exists", value), value
    if attr.multi:
        return _multi(attr, op, value, groups)
    if op in _NUMERIC_OPS:
        if t not in (NUM, ANY):
            raise OperandError(f"{op} needs a numeric attribute; {attr.name} is {_TYPE_NAMES[t]}")
        value = as_number(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OperandError(f"expected a number, got {describe(value)}")
        x = float(value)
        return _numeric(op, x, guarded=(t == ANY)), x
    if op in ("in", "not_in", "in_group", "not_in_group"):
        if t == SET:
            raise OperandError(
                f"{op} needs a single-valued attribute; {attr.name} is a set (use intersects)"
            )
        members = _members(attr, op, value, groups)
        if t == ANY:
            if op.startswith("not_"):
                return (lambda v: isinstance(v, str | int | float) and v not in members), members
            return (lambda v: isinstance(v, str | int | float) and v in members), members
        if op.startswith("not_"):
            return (lambda v: v is not None and v not in members), members
        return members.__contains__, members
    if op == "contains":
        if t not in (SET, ANY):
            raise OperandError(f"contains needs a set attribute; {attr.name} is {_TYPE_NAMES[t]}")
        x = check_scalar(attr, value)
        return (lambda v: isinstance(v, frozenset | tuple | set) and x in v), x
    if op == "intersects":
        if t not in (SET, ANY):
            raise OperandError(f"intersects needs a set attribute; {attr.name} is {_TYPE_NAMES[t]}")
        members = _check_list(attr, value, op)
        return (
            lambda v: isinstance(v, frozenset | tuple | set) and not members.isdisjoint(v)
        ), members
    raise LookupError(op)


def _presence(attr: Attribute, exists: bool, value: bool) -> Predicate:
    """``exists`` (there is a value) or ``missing`` (the value is unknown), never unknown."""
    if exists:
        if attr.multi:  # a set of declared purposes exists when it is not empty
            return (lambda v: bool(v)) if value else (lambda v: not v)
        if value:
            return lambda v: v is not None and v is not UNKNOWN
        return lambda v: v is None or v is UNKNOWN
    if value:
        return lambda v: v is UNKNOWN
    return lambda v: v is not UNKNOWN


def _multi(
    attr: Attribute, op: str, value: Any, groups: Mapping[str, tuple[Any, ...]]
) -> tuple[Predicate, Any]:
    """Operators on a set read as "any of its values": ``in`` matches when one value is listed,
    ``not_in`` when none is (the negation of ``in``), ``contains`` is equality."""
    if op in _NUMERIC_OPS:
        raise OperandError(f"{op} needs a numeric attribute; {attr.name} is {_TYPE_NAMES[STR]}")
    if op == "contains":
        x = check_scalar(attr, value)
        return (lambda vs: x in vs), x
    members = _members(attr, op, value, groups)
    if op.startswith("not_"):
        return members.isdisjoint, members
    return (lambda vs: not members.isdisjoint(vs)), members


def _members(
    attr: Attribute, op: str, value: Any, groups: Mapping[str, tuple[Any, ...]]
) -> frozenset[Any]:
    """The listed values of ``in``/``not_in`` or the members of the group ``value`` names."""
    if not op.endswith("_group"):
        return _check_list(attr, value, op)
    if not isinstance(value, str):
        raise OperandError(f"{op} needs a group name, got {describe(value)}")
    if value not in groups:
        raise KeyError(value)
    try:
        return _check_list(attr, list(groups[value]), op)
    except OperandError as exc:
        raise OperandError(f"group {value!r}: {exc}") from None
