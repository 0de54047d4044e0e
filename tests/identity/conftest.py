"""Fixtures: real RSA/EC keys (generated once per session), JWKS files, a started Authenticator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatekeeper.config import ClaimMap, IdentityConfig, IssuerConfig
from gatekeeper.identity import Authenticator
from tests.identity.keyring import AUD, ISS_A, ISS_B, Key, ec_key, jwks, rsa_key, write_jwks


@dataclass
class Ring:
    rsa_a: Key  # issuer A, RS256
    ec_a: Key  # issuer A, ES256
    rsa_b: Key  # issuer B, RS256
    evil_rsa: Key  # attacker
    evil_ec: Key  # attacker


@pytest.fixture(scope="session")
def ring() -> Ring:
    return Ring(
        rsa_a=rsa_key("a-rsa-1"),
        ec_a=ec_key("a-ec-1"),
        rsa_b=rsa_key("b-rsa-1"),
        evil_rsa=rsa_key("a-rsa-1"),  # same kid as the real key: only the key material differs
        evil_ec=ec_key("a-ec-1"),
    )


def identity_config(tmp_path: Path, ring: Ring, **over: object) -> IdentityConfig:
    file_a = write_jwks(tmp_path / "a.jwks.json", jwks(ring.rsa_a, ring.ec_a))
    file_b = write_jwks(tmp_path / "b.jwks.json", jwks(ring.rsa_b))
    issuers = (
        IssuerConfig(
            issuer=ISS_A,
            audiences=(AUD, "other-aud"),
            algorithms=("RS256", "ES256"),
            jwks_file=file_a,
        ),
        IssuerConfig(
            issuer=ISS_B,
            audiences=(AUD,),
            algorithms=("RS256",),
            jwks_file=file_b,
            claims=ClaimMap(subject="email", tenant="tid", entity="ent", purpose="use"),
            required_claims=("exp", "email"),
        ),
    )
    params: dict[str, object] = {"leeway_s": 5.0, "issuers": issuers}
    params.update(over)
    return IdentityConfig(**params)  # type: ignore[arg-type]


@pytest.fixture
async def auth(tmp_path: Path, ring: Ring) -> AsyncIterator[Authenticator]:
    a = Authenticator(identity_config(tmp_path, ring))
    await a.start()
    try:
        yield a
    finally:
        await a.close()
