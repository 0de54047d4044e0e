"""Good tokens are accepted and mapped; the cache skips signature checks; the authn stage."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from multidict import CIMultiDict
from prometheus_client import REGISTRY

from gatekeeper import metrics
from gatekeeper.config import IdentityConfig, RouteConfig
from gatekeeper.context import RequestContext, RequestInfo
from gatekeeper.errors import Deny
from gatekeeper.identity import Authenticator
from gatekeeper.stages.authn import AuthnStage
from tests.identity.conftest import Ring, identity_config
from tests.identity.keyring import AUD, ISS_A, ISS_B, claims_for, ed_key, jwks, write_jwks


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def cache_count(result: str) -> float:
    metrics.flush()  # hits are buffered (flushed by the server when idle and before /metrics)
    value = REGISTRY.get_sample_value("gatekeeper_token_cache_total", {"result": result})
    return value or 0.0


async def test_rs256_accepted_and_mapped(auth: Authenticator, ring: Ring) -> None:
    claims = claims_for(purpose="training", extra={"nested": [1, 2]})
    p = await auth.authenticate(h(("Authorization", f"Bearer {ring.rsa_a.sign(claims)}")))
    assert (p.subject, p.issuer, p.tenant, p.entity, p.nationality, p.purpose) == (
        "alice",
        ISS_A,
        "lab-1",
        "acme-us",
        "US",
        "training",
    )
    assert p.claims["extra"] == {"nested": [1, 2]}
    assert p.expires_at == float(claims["exp"])


async def test_es256_accepted(auth: Authenticator, ring: Ring) -> None:
    p = await auth.authenticate(h(("authorization", f"bearer {ring.ec_a.sign()}")))
    assert p.subject == "alice"


async def test_token_without_kid_tries_the_issuers_keys(auth: Authenticator, ring: Ring) -> None:
    p = await auth.authenticate(h(("Authorization", f"Bearer {ring.ec_a.sign(kid=None)}")))
    assert p.subject == "alice"
    with pytest.raises(Deny) as info:
        await auth.authenticate(h(("Authorization", f"Bearer {ring.evil_ec.sign(kid=None)}")))
    assert info.value.reason == "token-signature"


async def test_second_audience_and_aud_list(auth: Authenticator, ring: Ring) -> None:
    for aud in ("other-aud", ["x", AUD]):
        token = ring.rsa_a.sign(claims_for(aud=aud))
        assert (await auth.authenticate(h(("Authorization", f"Bearer {token}")))).subject == "alice"


async def test_leeway_accepts_just_expired(auth: Authenticator, ring: Ring) -> None:
    token = ring.rsa_a.sign(claims_for(exp=int(time.time()) - 2))  # leeway is 5 s
    assert (await auth.authenticate(h(("Authorization", f"Bearer {token}")))).subject == "alice"


async def test_issuer_b_custom_claim_map(auth: Authenticator, ring: Ring) -> None:
    claims = claims_for(ISS_B, email="bob@b.test", tid="t-9", ent="ent-9", use="inference")
    p = await auth.authenticate(h(("Authorization", f"Bearer {ring.rsa_b.sign(claims)}")))
    assert (p.subject, p.tenant, p.entity, p.purpose, p.issuer) == (
        "bob@b.test",
        "t-9",
        "ent-9",
        "inference",
        ISS_B,
    )


@pytest.mark.parametrize(
    ("header", "value"),
    [("X-SLURM-USER-TOKEN", "{t}"), ("x-ray-authorization", "Bearer {t}")],
)
async def test_extra_token_header(auth: Authenticator, ring: Ring, header: str, value: str) -> None:
    token = ring.rsa_a.sign()
    p = await auth.authenticate(h((header, value.format(t=token))), (header,))
    assert p.subject == "alice"
    # the same token in Authorization too is not ambiguous
    both = h((header, value.format(t=token)), ("Authorization", f"Bearer {token}"))
    assert (await auth.authenticate(both, (header,))).subject == "alice"


async def test_cache_skips_signature_check_and_is_keyed_by_hash(
    auth: Authenticator, ring: Ring
) -> None:
    token = ring.rsa_a.sign()
    hits = cache_count("hit")
    await auth.authenticate(h(("Authorization", f"Bearer {token}")))
    assert auth.verifier.signature_checks == 1
    for _ in range(5):
        await auth.authenticate(h(("Authorization", f"Bearer {token}")))
    assert auth.verifier.signature_checks == 1
    assert cache_count("hit") - hits == 5
    keys = list(auth.verifier.cache._data)
    assert keys == [hashlib.sha256(token.encode()).digest()]


async def test_expired_cached_token_is_rejected(tmp_path: Path, ring: Ring) -> None:
    now = [time.time()]
    a = Authenticator(identity_config(tmp_path, ring, leeway_s=0.0), clock=lambda: now[0])
    await a.start()
    token = ring.rsa_a.sign(claims_for(exp=int(time.time()) + 60))
    headers = h(("Authorization", f"Bearer {token}"))
    await a.authenticate(headers)
    now[0] += 30
    await a.authenticate(headers)  # still valid: a cache hit
    assert a.verifier.signature_checks == 1
    now[0] += 31
    expired = cache_count("expired")
    with pytest.raises(Deny) as info:
        await a.authenticate(headers)
    assert info.value.reason == "token-expired"
    assert cache_count("expired") - expired == 1
    assert len(a.verifier.cache) == 0


async def test_cache_is_bounded_lru(tmp_path: Path, ring: Ring) -> None:
    a = Authenticator(identity_config(tmp_path, ring, cache_size=3))
    await a.start()
    tokens = [ring.ec_a.sign(claims_for(sub=f"u{i}")) for i in range(5)]
    for t in tokens:
        await a.authenticate(h(("Authorization", f"Bearer {t}")))
    assert len(a.verifier.cache) == 3
    checks = a.verifier.signature_checks
    await a.authenticate(h(("Authorization", f"Bearer {tokens[0]}")))  # evicted: verified again
    assert a.verifier.signature_checks == checks + 1


async def test_cache_disabled(tmp_path: Path, ring: Ring) -> None:
    a = Authenticator(identity_config(tmp_path, ring, cache_size=0))
    await a.start()
    token = ring.rsa_a.sign()
    for _ in range(3):
        await a.authenticate(h(("Authorization", f"Bearer {token}")))
    assert a.verifier.signature_checks == 3


async def test_eddsa_issuer(tmp_path: Path) -> None:
    from gatekeeper.config import IssuerConfig

    key = ed_key("ed-1")
    cfg = IdentityConfig(
        issuers=(
            IssuerConfig(
                issuer=ISS_A,
                audiences=(AUD,),
                algorithms=("EdDSA",),
                jwks_file=write_jwks(tmp_path / "ed.json", jwks(key)),
            ),
        )
    )
    a = Authenticator(cfg)
    await a.start()
    assert (await a.authenticate(h(("Authorization", f"Bearer {key.sign()}")))).subject == "alice"


async def test_authn_stage_sets_principal(auth: Authenticator, ring: Ring) -> None:
    route = RouteConfig(name="slurm", upstream="http://x", token_headers=("X-SLURM-USER-TOKEN",))
    ctx = RequestContext(
        decision_id="d1",
        request=RequestInfo(route="slurm", method="POST", path="/slurm/x", client_ip="127.0.0.1"),
        headers=h(("X-SLURM-USER-TOKEN", ring.rsa_a.sign())),
        route_config=route,
    )
    stage = AuthnStage(auth)
    assert stage.name == "authn"
    await stage.run(ctx)
    assert ctx.principal.entity == "acme-us"
