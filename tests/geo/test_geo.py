"""GeoIP: real .mmdb files built with mmdb-writer, and the built-in GeoLite2-City database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from multidict import CIMultiDict
from netaddr import IPSet

from gatekeeper.config import GeoConfig
from gatekeeper.context import RequestContext, RequestInfo
from gatekeeper.errors import ConfigError
from gatekeeper.geo import GeoResolver
from gatekeeper.stages.geo import GeoStage


def _country(iso: str, registered: str | None = None) -> dict[str, object]:
    rec: dict[str, object] = {"country": {"iso_code": iso, "names": {"en": iso}}}
    rec["registered_country"] = {"iso_code": registered or iso}
    return rec


def build_dbs(folder: Path) -> dict[str, str]:
    country = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    country.insert_network(IPSet(["203.0.113.0/24"]), _country("CN"))
    country.insert_network(IPSet(["198.51.100.0/24"]), _country("US"))
    country.insert_network(IPSet(["192.0.2.0/24"]), _country("RU", "NL"))
    country.insert_network(IPSet(["2001:db8:1::/48"]), _country("IR"))
    country.insert_network(IPSet(["100.64.0.0/24"]), {"registered_country": {"iso_code": "MO"}})
    asn = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN")
    asn.insert_network(
        IPSet(["203.0.113.0/24"]),
        {"autonomous_system_number": 4134, "autonomous_system_organization": "CHINANET"},
    )
    anon = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Anonymous-IP")
    # Keys are present only when true .
    anon.insert_network(
        IPSet(["198.51.100.10/32"]), {"is_anonymous": True, "is_anonymous_vpn": True}
    )
    anon.insert_network(
        IPSet(["198.51.100.11/32"]), {"is_anonymous": True, "is_tor_exit_node": True}
    )
    anon.insert_network(IPSet(["198.51.100.12/32"]), {"is_hosting_provider": True})
    anon.insert_network(IPSet(["198.51.100.13/32"]), {"is_residential_proxy": True})
    anon.insert_network(
        IPSet(["2001:db8:1::5/128"]), {"is_anonymous": True, "is_public_proxy": True}
    )
    paths = {}
    for name, writer in (("country", country), ("asn", asn), ("anon", anon)):
        paths[name] = str(folder / f"{name}.mmdb")
        writer.to_db_file(paths[name])
    return paths


@pytest.fixture(scope="module")
def dbs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_dbs(tmp_path_factory.mktemp("mmdb"))


@pytest.fixture(scope="module")
def resolver(dbs: dict[str, str]) -> Iterator[GeoResolver]:
    r = GeoResolver(
        GeoConfig(
            country_db=dbs["country"],
            asn_db=dbs["asn"],
            anonymous_db=dbs["anon"],
            internal_networks=("10.0.0.0/8", "127.0.0.0/8", "fd00::/8"),
            cache_size=128,
        )
    )
    yield r
    r.close()


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.7", {"country": "CN", "asn": 4134, "asn_org": "CHINANET", "anonymous": False}),
        ("::ffff:203.0.113.7", {"country": "CN", "asn": 4134}),
        ("198.51.100.1", {"country": "US", "asn": None, "vpn": False}),
        ("198.51.100.10", {"country": "US", "anonymous": True, "vpn": True, "tor": False}),
        ("198.51.100.11", {"anonymous": True, "tor": True, "vpn": False}),
        ("198.51.100.12", {"hosting": True, "anonymous": True, "proxy": False}),
        ("198.51.100.13", {"proxy": True, "anonymous": True}),
        ("192.0.2.9", {"country": "RU", "registered_country": "NL"}),
        ("2001:db8:1::1", {"country": "IR", "proxy": False}),
        ("2001:db8:1::5", {"country": "IR", "proxy": True, "anonymous": True}),
        ("2001:db8:1::1%eth0", {"country": "IR"}),
        ("100.64.0.1", {"country": "MO", "registered_country": "MO", "known": True}),
        ("10.1.2.3", {"country": "internal", "internal": True, "known": True}),
        ("127.0.0.1", {"country": "internal", "internal": True}),
        ("::ffff:10.0.0.1", {"country": "internal", "internal": True}),
        ("fd00::1", {"country": "internal", "internal": True}),
        ("8.8.8.8", {"known": False, "country": None}),
        ("2001:db8:2::1", {"known": False}),
        ("not-an-ip", {"known": False, "country": None}),
        ("", {"known": False}),
        ("1.2.3.4.5", {"known": False}),
        ("x" * 1000, {"known": False}),
    ],
)
def test_lookup(resolver: GeoResolver, ip: str, expected: dict[str, object]) -> None:
    info = resolver.lookup(ip).to_json()
    for key, value in expected.items():
        assert info[key] == value, (ip, key, info)
    if "known" not in expected and "country" in expected and expected["country"] is not None:
        assert info["known"] is True


def test_lookup_is_cached(resolver: GeoResolver) -> None:
    first = resolver.lookup("203.0.113.99")
    before = resolver.cache_info().hits
    assert resolver.lookup("203.0.113.99") is first
    assert resolver.cache_info().hits == before + 1
    assert resolver.cache_info().maxsize == 128


def test_cache_is_bounded(dbs: dict[str, str]) -> None:
    r = GeoResolver(GeoConfig(country_db=dbs["country"], cache_size=4))
    try:
        for i in range(50):
            r.lookup(f"198.51.100.{i}")
        assert r.cache_info().currsize == 4
    finally:
        r.close()


def test_builtin_geolite2() -> None:
    r = GeoResolver(GeoConfig(country_db="builtin"))
    try:
        google = r.lookup("8.8.8.8")
        assert google.known and google.country == "US"
        assert r.lookup("2001:4860:4860::8888").country == "US"
        assert r.lookup("::ffff:8.8.8.8").country == "US"
        assert r.lookup("1.1.1.1").known
        assert r.lookup("127.0.0.1").internal
        assert not r.lookup("0.0.0.1").known
    finally:
        r.close()


def test_missing_db_is_config_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.mmdb")
    with pytest.raises(ConfigError) as exc:
        GeoResolver(GeoConfig(country_db=missing))
    assert missing in str(exc.value) and "geoip.country_db" in str(exc.value)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b"",
        lambda b: b"garbage" * 100,
        lambda b: b[: len(b) // 2],
        lambda b: b[:-20],
    ],
    ids=["empty", "garbage", "half", "metadata-cut"],
)
def test_corrupt_db_is_config_error(tmp_path: Path, dbs: dict[str, str], mangle) -> None:  # type: ignore[no-untyped-def]
    with open(dbs["country"], "rb") as fh:
        data = fh.read()
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(mangle(data))
    with pytest.raises(ConfigError, match=r"geoip\.country_db"):
        GeoResolver(GeoConfig(country_db=str(bad)))


def test_wrong_database_kind_is_config_error(dbs: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="not a country or city or enterprise database"):
        GeoResolver(GeoConfig(country_db=dbs["asn"]))
    with pytest.raises(ConfigError, match=r"geoip\.anonymous_db"):
        GeoResolver(GeoConfig(country_db=dbs["country"], anonymous_db=dbs["asn"]))


def test_bad_internal_network_is_config_error(dbs: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"internal_networks\[1\]"):
        GeoResolver(
            GeoConfig(country_db=dbs["country"], internal_networks=("10.0.0.0/8", "10.0.0.0/33"))
        )


def test_replaced_file_picked_up_by_new_resolver(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    paths = build_dbs(folder)
    live = str(tmp_path / "live.mmdb")
    os.replace(paths["country"], live)
    old = GeoResolver(GeoConfig(country_db=live))
    assert old.lookup("203.0.113.1").country == "CN"
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    w.insert_network(IPSet(["203.0.113.0/24"]), _country("JP"))
    w.to_db_file(str(tmp_path / "new.mmdb"))
    os.replace(str(tmp_path / "new.mmdb"), live)  # atomic swap, as a database updater does
    new = GeoResolver(GeoConfig(country_db=live))
    try:
        assert new.lookup("203.0.113.1").country == "JP"
        assert old.lookup("203.0.113.1").country == "CN"  # the open reader keeps its mapping
    finally:
        old.close()
        new.close()
    assert not old.lookup("203.0.113.200").known  # closed: unknown, never raises


async def test_geo_stage_sets_fact(resolver: GeoResolver) -> None:
    ctx = RequestContext(
        decision_id="d",
        request=RequestInfo(route="r", method="POST", path="/", client_ip="203.0.113.5"),
        headers=CIMultiDict(),
    )
    GeoStage(resolver).run(ctx)
    assert ctx.geo.country == "CN" and ctx.geo.asn == 4134
