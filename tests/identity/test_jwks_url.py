"""JWKS over HTTP against a real local IdP: rotation, unknown-kid flood, IdP down, hostile answers."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from multidict import CIMultiDict
from prometheus_client import REGISTRY

from gatekeeper.config import IdentityConfig, IssuerConfig
from gatekeeper.errors import Deny, DependencyError
from gatekeeper.identity import Authenticator
from tests.identity.conftest import Ring
from tests.identity.idp import FakeIdP
from tests.identity.keyring import AUD, claims_for, jwks, rsa_key


def bearer(token: str) -> CIMultiDict[str]:
    return CIMultiDict([("Authorization", f"Bearer {token}")])


def fetches(issuer: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "gatekeeper_jwks_fetches_total", {"issuer": issuer, "result": result}
    )
    return value or 0.0


@pytest.fixture
async def idp(ring: Ring) -> AsyncIterator[FakeIdP]:
    server = await FakeIdP(jwks(ring.rsa_a, ring.ec_a)).start()
    try:
        yield server
    finally:
        await server.stop()


def url_config(idp: FakeIdP, issuer: str, **over: Any) -> IdentityConfig:
    params: dict[str, Any] = {
        "issuer": issuer,
        "audiences": (AUD,),
        "jwks_url": idp.url,
        "jwks_refresh_s": 3600.0,
        "jwks_min_fetch_interval_s": 60.0,
        "jwks_timeout_s": 2.0,
    }
    params.update(over)
    return IdentityConfig(issuers=(IssuerConfig(**params),), cache_size=0)


async def started(cfg: IdentityConfig) -> Authenticator:
    a = Authenticator(cfg)
    await a.start()
    return a


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def test_fetch_at_start_and_verify(idp: FakeIdP, ring: Ring) -> None:
    iss = "https://url-start.test/"
    a = await started(url_config(idp, iss))
    try:
        assert idp.requests == 1
        assert fetches(iss, "ok") == 1
        p = await a.authenticate(bearer(ring.ec_a.sign(claims_for(iss))))
        assert p.issuer == iss
        health = a.healthy()["issuers"][iss]
        assert health["keys"] == 2 and health["usable"] and not health["stale"]
    finally:
        await a.close()


async def test_rotation_accepted_after_one_scheduled_refresh(idp: FakeIdP, ring: Ring) -> None:
    iss = "https://url-rotate.test/"
    # A refresh period long against a poll, so that a third fetch cannot slip in between the
    # second one and the check below even when the machine is slow.
    a = await started(url_config(idp, iss, jwks_refresh_s=1.0, jwks_min_fetch_interval_s=60.0))
    try:
        old_token = ring.rsa_a.sign(claims_for(iss))
        assert (await a.authenticate(bearer(old_token))).subject == "alice"
        new = rsa_key("rotated-1")
        idp.doc = jwks(new)  # the IdP rotates: old key gone, new key in
        seen: list[int] = []  # the IdP's request count when the new key first showed up

        def rotated() -> bool:
            if a.sources[iss].keyset.has_kid("rotated-1"):
                seen.append(idp.requests)
            return bool(seen)

        await wait_for(rotated)
        assert seen == [2]  # exactly one refresh was needed
        assert (await a.authenticate(bearer(new.sign(claims_for(iss))))).subject == "alice"
        with pytest.raises(Deny) as info:
            await a.authenticate(bearer(old_token))
        assert info.value.reason == "token-unknown-key"
    finally:
        await a.close()


async def test_rotation_picked_up_by_unknown_kid_refetch(idp: FakeIdP, ring: Ring) -> None:
    iss = "https://url-kid.test/"
    a = await started(url_config(idp, iss, jwks_min_fetch_interval_s=0.05))
    try:
        new = rsa_key("rotated-2")
        idp.doc = jwks(ring.rsa_a, new)
        await asyncio.sleep(0.06)
        assert (await a.authenticate(bearer(new.sign(claims_for(iss))))).subject == "alice"
        assert idp.requests == 2
    finally:
        await a.close()


async def test_unknown_kid_flood_is_rate_limited(idp: FakeIdP, ring: Ring) -> None:
    """1,000 random kids: at most one fetch per jwks_min_fetch_interval_s, measured at the IdP."""
    iss = "https://url-flood.test/"
    interval = 0.25
    a = await started(url_config(idp, iss, jwks_min_fetch_interval_s=interval))
    try:
        await asyncio.sleep(interval)  # let the start fetch age out so the flood *can* refetch
        before = idp.requests
        t0 = time.monotonic()
        for i in range(1000):
            token = ring.evil_rsa.sign(claims_for(iss), kid=secrets.token_hex(8))
            with pytest.raises(Deny) as info:
                await a.authenticate(bearer(token))
            assert info.value.reason == "token-unknown-key"
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        elapsed = time.monotonic() - t0
        made = idp.requests - before
        allowed = math.floor(elapsed / interval) + 1
        print(f"flood: {made} fetches in {elapsed:.2f}s (allowed {allowed})")
        assert 1 <= made <= allowed, (made, elapsed)
    finally:
        await a.close()


async def test_concurrent_unknown_kids_share_one_fetch(idp: FakeIdP, ring: Ring) -> None:
    iss = "https://url-burst.test/"
    a = await started(url_config(idp, iss, jwks_min_fetch_interval_s=0.05))
    try:
        await asyncio.sleep(0.06)
        tokens = [ring.evil_rsa.sign(claims_for(iss), kid=f"rand-{i}") for i in range(1000)]
        results = await asyncio.gather(
            *(a.authenticate(bearer(t)) for t in tokens), return_exceptions=True
        )
        assert all(isinstance(r, Deny) and r.reason == "token-unknown-key" for r in results)
        assert idp.requests == 2  # the start fetch + one shared refetch
    finally:
        await a.close()


async def test_idp_down_serves_cached_keys_until_max_stale(idp: FakeIdP, ring: Ring) -> None:
    iss = "https://url-down.test/"
    # max_stale leaves room for the steps before the sleep below on a slow machine
    max_stale = 2.0
    a = await started(
        url_config(idp, iss, jwks_max_stale_s=max_stale, jwks_min_fetch_interval_s=0.0)
    )
    try:
        await idp.stop()
        errors = fetches(iss, "error")
        await a.reload()  # refetch fails: connection refused
        failed = time.monotonic()  # later than the last good fetch
        assert fetches(iss, "error") == errors + 1
        health = a.healthy()["issuers"][iss]
        assert health["stale"] is True and health["usable"] is True
        assert "ClientConnectorError" in health["last_error"]
        # fresh tokens (cache disabled) still verify with the cached keys
        for key in (ring.rsa_a, ring.ec_a):
            assert (await a.authenticate(bearer(key.sign(claims_for(iss))))).subject == "alice"
        await asyncio.sleep(failed + max_stale + 0.1 - time.monotonic())
        with pytest.raises(DependencyError) as info:
            await a.authenticate(bearer(ring.rsa_a.sign(claims_for(iss))))
        assert (info.value.reason, info.value.status) == ("jwks-unavailable", 503)
        assert a.healthy()["ok"] is False
    finally:
        await a.close()


async def test_idp_down_at_start_then_recovers(ring: Ring) -> None:
    iss = "https://url-late.test/"
    idp = FakeIdP(jwks(ring.rsa_a))
    a = await started(url_config(idp, iss, jwks_min_fetch_interval_s=0.1, jwks_timeout_s=1.0))
    try:
        assert a.healthy()["issuers"][iss]["usable"] is False
        with pytest.raises(DependencyError):
            await a.authenticate(bearer(ring.rsa_a.sign(claims_for(iss))))
        await idp.start()
        await wait_for(lambda: a.sources[iss].usable())  # the background retry got the keys
        assert (await a.authenticate(bearer(ring.rsa_a.sign(claims_for(iss))))).subject == "alice"
    finally:
        await a.close()
        await idp.stop()


@pytest.mark.parametrize(
    ("status", "body", "result"),
    [
        (500, b"oops", "error"),
        (200, b"<html>not json</html>", "invalid"),
        (200, b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "invalid"),
        (200, b'{"keys": []}', "invalid"),
        (200, b'{"keys": [], "pad": "' + b"a" * (2 << 20) + b'"}', "invalid"),
    ],
    ids=["http-500", "not-json", "only-symmetric", "empty", "2-MB"],
)
async def test_hostile_idp_answer_keeps_cached_keys(
    idp: FakeIdP, ring: Ring, status: int, body: bytes, result: str
) -> None:
    iss = f"https://url-hostile-{status}-{len(body)}.test/"
    a = await started(url_config(idp, iss))
    try:
        before = fetches(iss, result)
        idp.status, idp.body = status, body
        await a.reload()
        assert fetches(iss, result) == before + 1
        assert a.sources[iss].keyset.count == 2
        assert (await a.authenticate(bearer(ring.rsa_a.sign(claims_for(iss))))).subject == "alice"
    finally:
        await a.close()


async def test_jku_and_x5u_are_never_fetched(idp: FakeIdP, ring: Ring) -> None:
    """An attacker's JWKS server named in jku/x5u receives no request at all."""
    attacker = await FakeIdP(jwks(ring.evil_rsa)).start()
    iss = "https://url-jku.test/"
    a = await started(url_config(idp, iss, jwks_min_fetch_interval_s=0.0))
    try:
        for header in ("jku", "x5u"):
            token = ring.evil_rsa.sign(claims_for(iss), headers={header: attacker.url})
            with pytest.raises(Deny) as info:
                await a.authenticate(bearer(token))
            assert info.value.reason == "token-signature"
            token = ring.evil_rsa.sign(
                claims_for(iss), kid="attacker", headers={header: attacker.url}
            )
            with pytest.raises(Deny) as info:
                await a.authenticate(bearer(token))
            assert info.value.reason == "token-unknown-key"
        assert attacker.requests == 0
    finally:
        await a.close()
        await attacker.stop()
