"""GeoIP resolution: client address -> ``GeoInfo`` (country, ASN, anonymity flags) .

A Country or City database is required (``builtin`` = the GeoLite2-City file shipped by the
``maxminddb-geolite2`` package, so a fresh install works offline); ASN and Anonymous-IP databases
are optional. Databases are read with ``maxminddb`` directly in ``MODE_AUTO`` (the C extension with
mmap when available): ``geoip2``'s typed readers refuse a City file for ``country()`` and build
model objects we do not need.

- IPv4, IPv6 and IPv4-mapped IPv6 (looked up as the IPv4 address); a zone id (``%eth0``) is dropped.
- ``internal_networks`` -> country ``internal``, ``internal: true`` (no database lookup).
- An address the database does not hold -> ``known: false`` (the policy decides).
- ``country`` is where the address is; when a record has none, its ``registered_country`` is used.
- Anonymous-IP keys are present only when true; ``proxy`` = public or residential proxy;
  ``anonymous`` = ``is_anonymous`` or any of the other flags.
- Results are kept in a bounded LRU cache. Lookups never raise: bad input -> ``known: false``.

Reload: build a new ``GeoResolver`` (a replaced file is opened afresh) and ``close()`` the old one
once no request uses it.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import maxminddb

from .config import GeoConfig
from .context import GeoInfo
from .errors import ConfigError, Problem

log = logging.getLogger(__name__)

INTERNAL = "internal"
MAX_IP_TEXT = 64

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def builtin_country_db() -> str:
    """Path of the GeoLite2-City database shipped by ``maxminddb-geolite2``."""
    from geolite2 import geolite2  # imported lazily: only needed for "builtin"

    return str(geolite2.filename)


def _open(path: str, key: str, kinds: tuple[str, ...]) -> Any:
    """Open one database; a missing, corrupt or wrong-kind file is a ``ConfigError``."""
    try:
        reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
    except FileNotFoundError:
        raise ConfigError([Problem(path, None, f"geoip.{key}", "file not found")]) from None
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
        msg = f"not a valid MaxMind database: {exc}"
        raise ConfigError([Problem(path, None, f"geoip.{key}", msg)]) from None
    db_type = str(reader.metadata().database_type)
    if not any(k in db_type.lower() for k in kinds):
        reader.close()
        msg = f"database type {db_type!r} is not a {' or '.join(kinds)} database"
        raise ConfigError([Problem(path, None, f"geoip.{key}", msg)])
    try:
        # Touch the search tree and data section once so a truncated file fails now, not later.
        reader.get("1.1.1.1" if reader.metadata().ip_version == 4 else "::1.1.1.1")
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
        reader.close()
        msg = f"database is corrupt: {exc}"
        raise ConfigError([Problem(path, None, f"geoip.{key}", msg)]) from None
    return reader


def _iso(record: Any, key: str) -> str | None:
    section = record.get(key) if isinstance(record, dict) else None
    code = section.get("iso_code") if isinstance(section, dict) else None
    return code if isinstance(code, str) else None


class GeoResolver:
    """Opened GeoIP readers plus the internal networks; ``lookup`` is cached and never raises."""

    def __init__(self, cfg: GeoConfig) -> None:
        problems: list[Problem] = []
        networks: list[_Network] = []
        for i, cidr in enumerate(cfg.internal_networks):
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError as exc:
                problems.append(Problem("", None, f"geoip.internal_networks[{i}]", str(exc)))
        if problems:
            raise ConfigError(problems)
        self._v4 = tuple(n for n in networks if n.version == 4)
        self._v6 = tuple(n for n in networks if n.version == 6)
        path = builtin_country_db() if cfg.country_db == "builtin" else cfg.country_db
        self.country_path = path
        self._readers: list[Any] = []
        self._country = _open(path, "country_db", ("country", "city", "enterprise"))
        self._readers.append(self._country)
        try:
            self._asn = _open(cfg.asn_db, "asn_db", ("asn",)) if cfg.asn_db else None
            if self._asn is not None:
                self._readers.append(self._asn)
            self._anon = (
                _open(cfg.anonymous_db, "anonymous_db", ("anonymous",))
                if cfg.anonymous_db
                else None
            )
            if self._anon is not None:
                self._readers.append(self._anon)
        except ConfigError:
            self.close()
            raise
        self._cached: Callable[[str], GeoInfo]
        if cfg.cache_size > 0:
            self._cached = functools.lru_cache(maxsize=cfg.cache_size)(self._resolve)
        else:
            self._cached = self._resolve

    def lookup(self, ip: str) -> GeoInfo:
        """Geo facts for ``ip`` (any text); unknown or unparsable addresses -> ``known: false``."""
        if not isinstance(ip, str) or len(ip) > MAX_IP_TEXT:
            return GeoInfo(ip=str(ip)[:MAX_IP_TEXT])
        return self._cached(ip)

    def cache_info(self) -> Any:
        return getattr(self._cached, "cache_info", lambda: None)()

    def _resolve(self, ip: str) -> GeoInfo:
        try:
            addr: _Address = ipaddress.ip_address(ip.strip().split("%", 1)[0])
        except ValueError:
            return GeoInfo(ip=ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        nets = self._v4 if addr.version == 4 else self._v6
        for net in nets:
            if addr in net:
                return GeoInfo(ip=ip, known=True, country=INTERNAL, internal=True)
        try:
            record = self._country.get(addr)
            asn_rec = self._asn.get(addr) if self._asn is not None else None
            anon = self._anon.get(addr) if self._anon is not None else None
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
            # A database damaged after start-up: report unknown, let the policy decide.
            log.warning("geoip lookup failed for %s: %s", ip, exc)
            return GeoInfo(ip=ip)
        country = _iso(record, "country")
        registered = _iso(record, "registered_country")
        asn: int | None = None
        asn_org: str | None = None
        if isinstance(asn_rec, dict):
            number = asn_rec.get("autonomous_system_number")
            asn = number if isinstance(number, int) and not isinstance(number, bool) else None
            org = asn_rec.get("autonomous_system_organization")
            asn_org = org if isinstance(org, str) else None
        flags = anon if isinstance(anon, dict) else {}
        vpn = flags.get("is_anonymous_vpn") is True
        tor = flags.get("is_tor_exit_node") is True
        hosting = flags.get("is_hosting_provider") is True
        proxy = flags.get("is_public_proxy") is True or flags.get("is_residential_proxy") is True
        anonymous = flags.get("is_anonymous") is True or vpn or tor or hosting or proxy
        located = country or registered
        return GeoInfo(
            ip=ip,
            known=located is not None,
            country=located,
            registered_country=registered,
            asn=asn,
            asn_org=asn_org,
            anonymous=anonymous,
            vpn=vpn,
            tor=tor,
            hosting=hosting,
            proxy=proxy,
        )

    def close(self) -> None:
        """Close every reader; later lookups report ``known: false``."""
        for reader in self._readers:
            try:
                reader.close()
            except Exception:  # closing twice or a reader already gone is harmless
                log.debug("closing geoip reader failed", exc_info=True)
        self._readers.clear()
        clear = getattr(getattr(self, "_cached", None), "cache_clear", None)
        if clear is not None:
            clear()
