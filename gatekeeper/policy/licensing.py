"""When does a held export licence turn ``require_license`` into allow (docs/policy.md).

A licence held by the requesting entity (``ownership.licenses``; a parent's licences do not count)
satisfies the requirement when all of these hold:

1. **Unexpired**: ``expires`` (ISO date, inclusive) ≥ today. A licence with no or an unreadable
   expiry date is treated as invalid (fail closed: a licence without a validity date is a data
   error).
2. **ECCN**: the request's ``compute.eccn`` is listed exactly, or a listed entry is a parent
   paragraph of it (``3A090`` covers ``3A090.a`` and ``3A090.b``). There is no implicit
   3A090 ↔ 4A090 cross-coverage: BIS licences name each ECCN they authorise, so a licence for
   chips (3A090.a) does not authorise a node (4A090.a) unless it lists it, as the example does.
   Comparison ignores case. A request without an ECCN cannot be covered.
3. **Country**: the entity's country of incorporation (``entity.country``) is in ``countries``
   and, when the client's location is known (a geolocated country that is not ``internal``), so is
   that location: a licence authorising use by a Singapore party does not authorise that party's
   use from a country the licence does not name.
4. **Budget**: ``max_tpp_hours`` (``None`` = no cap) minus the TPP-hours already used under that
   licence (``PolicyInput.license_used[id]``) is at least the request's ``compute.tpp_hours``.

The first licence satisfying all four is recorded. If licences failed only on budget, the verdict
carries the reason ``license-exhausted``.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass

from ..context import License
from .model import PolicyInput


@dataclass(frozen=True, slots=True)
class LicenseCheck:
    """The licence that covers the request (or ``None``), and why each licence did or did not."""

    granted: License | None
    exhausted: bool
    notes: tuple[str, ...]


@functools.lru_cache(maxsize=4096)
def _expiry(text: str) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(text[:10])
    except (TypeError, ValueError):
        return None


def covers_eccn(listed: tuple[str, ...], eccn: str) -> bool:
    """Whether a licence listing ``listed`` ECCNs covers ``eccn`` (exact or parent paragraph)."""
    if eccn in listed:  # the common case, without allocating
        return True
    want = eccn.casefold()
    for entry in listed:
        have = entry.casefold()
        if want == have or want.startswith(have + "."):
            return True
    return False


def _why_not(lic: License, inp: PolicyInput) -> str | None:
    """``None`` if ``lic`` covers the request, else the first failing condition."""
    if not isinstance(lic.expires, str):
        return "no expiry date recorded"
    expires = _expiry(lic.expires)
    if expires is None:
        return f"unreadable expiry date {lic.expires!r}"
    if expires < inp.today:
        return f"expired {expires.isoformat()}"
    compute = inp.compute
    eccn = compute.eccn if compute is not None else None
    if not eccn:
        return "request has no ECCN"
    if not covers_eccn(lic.eccns, eccn):
        return f"ECCN {eccn} not covered"
    own = inp.ownership
    country = own.country if own is not None else None
    if country is None or country not in lic.countries:
        return f"entity country {country} not covered"
    geo = inp.geo
    located = geo is not None and geo.country and not geo.internal and geo.country != "internal"
    if located and geo is not None and geo.country not in lic.countries:
        return f"location {geo.country} not covered"
    if lic.max_tpp_hours is not None:
        used = float(inp.license_used.get(lic.id, 0.0))
        need = float(compute.tpp_hours) if compute is not None else 0.0
        left = float(lic.max_tpp_hours) - used
        if left < need:
            return f"budget exhausted: {left:.6g} TPP-hours left, {need:.6g} requested"
    return None


def find_license(inp: PolicyInput, *, explain: bool = False) -> LicenseCheck:
    """The first licence of the entity covering this request (see the module docstring).
    ``notes`` (one line per licence) are built only when ``explain`` is set (traces)."""
    own = inp.ownership
    if own is None or not own.licenses:
        return LicenseCheck(None, False, ("entity holds no licence",) if explain else ())
    notes: list[str] = []
    exhausted = False
    for lic in own.licenses:
        why = _why_not(lic, inp)
        if why is None:
            if explain:
                notes.append(f"{lic.id}: covers the request")
            return LicenseCheck(lic, False, tuple(notes))
        exhausted = exhausted or why.startswith("budget exhausted")
        if explain:
            notes.append(f"{lic.id}: {why}")
    return LicenseCheck(None, exhausted, tuple(notes))
