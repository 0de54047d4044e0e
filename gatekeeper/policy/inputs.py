"""Build a ``PolicyInput`` from dotted attributes, for policy tests and ``check``.

Keys are the attribute names a condition reads (``entity.country``, ``geo.vpn``,
``principal.claims.purpose``...), given flat (``{"entity.country": "SG"}``) or nested
(``{"entity": {"country": "SG"}}``). A fact none of whose attributes is given stays ``None``, as on
a route where no stage produced it. As in the registry, an entity given without an ultimate
parent is its own, headquartered at its ``hq_country`` (else its ``country``); give
``ownership.parent_hq_country: null`` for a parent whose headquarters is unknown. Extra keys:
``entity.licenses`` (list of licence mappings as in the entity data), ``geo.ip``,
``request.path``, ``request.mode``, ``compute.reasons``. Unknown keys and values of the wrong type
raise ``ValueError`` naming the key.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from ..context import ComputeRequest, GeoInfo, License, OwnershipProfile, Principal, RequestInfo
from .criteria import ATTRIBUTES, BOOL, CLAIM_PREFIX, NUM, SET, STR
from .model import PolicyInput

_EXTRA = {
    "entity.licenses": "licenses",
    "geo.ip": STR,
    "principal.purpose": STR,
    "request.path": STR,
    "request.mode": STR,
    "request.client_ip": STR,
}


def flatten(attrs: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"entity": {"country": "SG"}}`` → ``{"entity.country": "SG"}``; claims stay whole."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not name.startswith("principal.claims"):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _typed(name: str, typ: str, value: Any) -> Any:
    if value is None:
        return None
    if typ == BOOL and not isinstance(value, bool):
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if typ == NUM and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if typ == STR and not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {value!r}")
    if typ == SET and not (
        isinstance(value, list | tuple | set | frozenset) and all(isinstance(v, str) for v in value)
    ):
        raise ValueError(f"{name}: expected a list of strings, got {value!r}")
    return value


def _licenses(value: Any) -> tuple[License, ...]:
    if not isinstance(value, list):
        raise ValueError(f"entity.licenses: expected a list, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            raise ValueError(f"entity.licenses[{i}]: expected a mapping with an id")
        expires = item.get("expires")
        max_tpp = item.get("max_tpp_hours")
        if max_tpp is not None and (
            isinstance(max_tpp, bool) or not isinstance(max_tpp, int | float)
        ):
            raise ValueError(f"entity.licenses[{i}].max_tpp_hours: expected a number")
        out.append(
            License(
                id=item["id"],
                eccns=tuple(str(e) for e in item.get("eccns") or ()),
                countries=tuple(str(c) for c in item.get("countries") or ()),
                expires=None if expires is None else str(expires),
                max_tpp_hours=None if max_tpp is None else float(max_tpp),
            )
        )
    return tuple(out)


def _parent(values: Mapping[str, Any]) -> tuple[Any, Any]:
    """(ultimate parent, its HQ). As the registry resolves them: an entity nobody controls is
    its own ultimate parent, and an organisation without a recorded HQ sits where it is
    incorporated. A parent named without an HQ, or an explicit null, leaves the HQ unknown."""
    parent = values.get("ownership.ultimate_parent")
    if "ownership.parent_hq_country" in values or parent is not None:
        return parent, values.get("ownership.parent_hq_country")
    if values.get("entity.known") is False:
        return None, None
    return values.get("entity.id", "test-entity"), values.get("entity.hq_country") or values.get(
        "entity.country"
    )


def input_from_attributes(
    attrs: Mapping[str, Any],
    today: datetime.date,
    *,
    license_used: Mapping[str, float] | None = None,
) -> PolicyInput:
    """A ``PolicyInput`` whose attributes are ``attrs`` (dotted or nested); see the docstring."""
    flat = flatten(attrs)
    values: dict[str, Any] = {}
    claims: dict[str, Any] = {}
    for name, value in flat.items():
        if name.startswith(CLAIM_PREFIX):
            claims[name[len(CLAIM_PREFIX) :]] = value
        elif name == "principal.claims":
            if not isinstance(value, Mapping):
                raise ValueError("principal.claims: expected a mapping")
            claims.update(value)
        elif name in ATTRIBUTES:
            values[name] = _typed(name, ATTRIBUTES[name].type, value)
        elif name in _EXTRA:
            values[name] = (
                _licenses(value) if name == "entity.licenses" else _typed(name, _EXTRA[name], value)
            )
        else:
            raise ValueError(f"unknown attribute {name!r}")

    def given(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in values) or (
            "principal." in prefixes and bool(claims)
        )

    def v(name: str, default: Any = None) -> Any:
        got = values.get(name)
        return default if got is None else got

    principal = None
    if given("principal."):
        principal = Principal(
            subject=v("principal.subject", "test-subject"),
            issuer=v("principal.issuer", "test-issuer"),
            tenant=v("principal.tenant"),
            entity=v("principal.entity"),
            nationality=v("principal.nationality"),
            purpose=v("principal.purpose", claims.get("purpose")),
            claims=claims,
        )
    ownership = None
    if given("entity.", "ownership."):
        parent, parent_hq = _parent(values)
        ownership = OwnershipProfile(
            id=v("entity.id", "test-entity"),
            known=v("entity.known", True),
            name=v("entity.name"),
            country=v("entity.country"),
            hq_country=v("entity.hq_country"),
            flags=frozenset(v("entity.flags", ())),
            affiliated=v("ownership.affiliated", False),
            listed_share=float(v("ownership.listed_share", 0.0)),
            listed_via=tuple(v("ownership.listed_via", ())),
            affiliated_flags=frozenset(v("ownership.affiliated_flags", ())),
            ultimate_parent=parent,
            parent_hq_country=parent_hq,
            licenses=v("entity.licenses", ()),
        )
    geo = None
    if given("geo."):
        country = v("geo.country")
        geo = GeoInfo(
            ip=v("geo.ip", "192.0.2.1"),
            known=v("geo.known", country is not None),
            country=country,
            registered_country=v("geo.registered_country"),
            asn=v("geo.asn"),
            anonymous=v("geo.anonymous", False),
            vpn=v("geo.vpn", False),
            tor=v("geo.tor", False),
            hosting=v("geo.hosting", False),
            proxy=v("geo.proxy", False),
            internal=v("geo.internal", False),
        )
    compute = None
    if given("compute."):
        gpus = float(v("compute.gpus", 0.0))
        hours = float(v("compute.hours", 0.0))
        gpu_hours = float(v("compute.gpu_hours", gpus * hours))
        tpp = float(v("compute.tpp", 0.0))
        compute = ComputeRequest(
            gpu_model=v("compute.gpu_model"),
            gpus=gpus,
            hours=hours,
            gpu_hours=gpu_hours,
            tpp=tpp,
            tpp_hours=float(v("compute.tpp_hours", gpu_hours * tpp)),
            eccn=v("compute.eccn"),
            controlled=v("compute.controlled", False),
            assumptions=tuple(v("compute.assumptions", v("compute.reasons", ()))),
            model_known=bool(v("compute.model_known", True)),
        )
    request = None
    if given("request."):
        request = RequestInfo(
            route=v("request.route", "test-route"),
            method=v("request.method", "POST"),
            path=v("request.path", "/"),
            client_ip=v("request.client_ip", v("geo.ip", "192.0.2.1")),
            purpose=v("request.purpose"),
            mode=v("request.mode", "enforce"),
        )
    return PolicyInput(
        principal=principal,
        ownership=ownership,
        geo=geo,
        compute=compute,
        request=request,
        today=today,
        license_used=dict(license_used or {}),
    )
