"""Rules that read an attribute no configured source provides (``policy validate``, start-up).

A condition on ``geo.asn`` with no ``geoip.asn_db`` configured can never see a value: the
attribute is unknown on every request. A condition on ``geo.vpn``/``tor``/``hosting``/``proxy``/
``anonymous`` with no ``geoip.anonymous_db`` sees false on every request: nothing is on a list that
is not there. Neither is an error (one policy may serve deployments with different databases);
both are reported, with the file and line of the condition, so that an operator knows.
"""

from __future__ import annotations

from ..config import GeoConfig
from .criteria import SOURCES, UNKNOWN_IF_NONE
from .engine import PolicySet


def _configured(geoip: GeoConfig) -> dict[str, bool]:
    return {
        "geoip.asn_db": geoip.asn_db is not None,
        "geoip.anonymous_db": geoip.anonymous_db is not None,
    }


def unprovided_reads(policy: PolicySet, geoip: GeoConfig) -> list[str]:
    """One ``file:line: warning: ...`` line per condition reading an unprovided attribute."""
    configured = _configured(geoip)
    out: list[str] = []
    for pset in (policy, *policy.shadows):
        for attr, file, line in pset.reads:
            key = SOURCES.get(attr)
            if key is None or configured[key]:
                continue
            seen = "unknown" if attr in UNKNOWN_IF_NONE else "false"
            text = (
                f"{file}:{line}: warning: {attr} has no source ({key} is not configured); "
                f"it is {seen} on every request"
            )
            if text not in out:
                out.append(text)
    return out
