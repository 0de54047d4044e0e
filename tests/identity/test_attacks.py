"""The attack table: hostile tokens and headers, each refused with its own reason code."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from multidict import CIMultiDict

from gatekeeper.errors import Deny, DependencyError
from gatekeeper.identity import Authenticator
from tests.identity.conftest import Ring
from tests.identity.keyring import (
    AUD,
    ISS_A,
    ISS_B,
    b64,
    claims_for,
    raw_token,
    resign,
    rsa_key,
    sign_raw,
)

Case = Callable[[Ring], "tuple[list[tuple[str, str]], tuple[str, ...]]"]


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def only(token_fn: Callable[[Ring], str]) -> Case:
    return lambda r: (bearer(token_fn(r)), ())


def hs256_with_public_pem(r: Ring) -> str:
    # The classic key confusion: HMAC keyed with the RSA public key the verifier holds.
    header = {"alg": "HS256", "typ": "JWT", "kid": r.rsa_a.kid}
    signing_input = f"{b64(json.dumps(header))}.{b64(json.dumps(claims_for()))}"
    sig = hmac.new(r.rsa_a.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def signed_header(r: Ring, header: dict[str, Any], key: Any = None, **claims: Any) -> str:
    base = r.rsa_a.sign(claims_for(**claims))
    return resign(base, key or r.rsa_a, header)


def tampered_payload(r: Ring) -> str:
    h, _, s = r.rsa_a.sign().split(".")
    return f"{h}.{b64(json.dumps(claims_for(sub='root')))}.{s}"


def stripped_signature(r: Ring) -> str:
    h, p, _ = r.rsa_a.sign().split(".")
    return f"{h}.{p}."


def embedded_jwk(r: Ring) -> str:
    # The attacker embeds their own public key and signs with it (CVE-2018-0114 style).
    return r.evil_rsa.sign(headers={"jwk": r.evil_rsa.jwk()})


NOW = int(time.time())

ATTACKS: list[tuple[str, Case, str]] = [
    # --- algorithm attacks
    (
        "alg-none",
        only(lambda r: raw_token({"alg": "none", "kid": r.rsa_a.kid}, claims_for())),
        "token-algorithm",
    ),
    (
        "alg-None-mixed-case",
        only(lambda r: raw_token({"alg": "NoNe"}, claims_for(), b"x")),
        "token-algorithm",
    ),
    ("alg-missing", only(lambda r: raw_token({"kid": "x"}, claims_for(), b"x")), "token-algorithm"),
    ("hs256-with-rsa-public-pem", only(hs256_with_public_pem), "token-algorithm"),
    (
        "rs512-outside-allow-list",
        only(lambda r: r.rsa_a.sign(alg="RS512")),
        "token-algorithm",
    ),
    ("ps256-outside-allow-list", only(lambda r: r.rsa_a.sign(alg="PS256")), "token-algorithm"),
    (
        "es256-outside-issuer-b-allow-list",
        only(lambda r: r.evil_ec.sign(claims_for(ISS_B, email="a@b"), kid=r.rsa_b.kid)),
        "token-algorithm",
    ),
    (
        "es256-token-naming-an-rsa-kid",
        only(lambda r: r.evil_ec.sign(kid=r.rsa_a.kid)),
        "token-algorithm",
    ),
    # --- kid injection: the kid is only ever a dictionary key
    (
        "kid-path-traversal",
        only(lambda r: r.evil_rsa.sign(kid="../../../../../../dev/null")),
        "token-unknown-key",
    ),
    (
        "kid-sql-injection",
        only(lambda r: r.evil_rsa.sign(kid="x' UNION SELECT 'secret' --")),
        "token-unknown-key",
    ),
    (
        "kid-command-injection",
        only(lambda r: r.evil_rsa.sign(kid="a-rsa-1|curl evil.test;")),
        "token-unknown-key",
    ),
    ("kid-nul-suffix", only(lambda r: r.evil_rsa.sign(kid="a-rsa-1\x00")), "token-unknown-key"),
    ("kid-huge", only(lambda r: r.evil_rsa.sign(kid="k" * 5000)), "token-unknown-key"),
    (
        "kid-not-a-string",
        only(lambda r: signed_header(r, {"alg": "RS256", "kid": 7})),
        "token-malformed",
    ),
    # --- keys from the token itself are ignored (same kid as the real key, attacker's signature)
    (
        "jku-to-attacker-jwks",
        only(lambda r: r.evil_rsa.sign(headers={"jku": "http://127.0.0.1:9/jwks.json"})),
        "token-signature",
    ),
    (
        "x5u-to-attacker-cert",
        only(lambda r: r.evil_rsa.sign(headers={"x5u": "http://127.0.0.1:9/cert.pem"})),
        "token-signature",
    ),
    ("embedded-jwk", only(embedded_jwk), "token-signature"),
    (
        "x5c-chain",
        only(lambda r: r.evil_ec.sign(headers={"x5c": ["MIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3"]})),
        "token-signature",
    ),
    # --- critical headers
    (
        "crit-unknown",
        only(
            lambda r: signed_header(
                r, {"alg": "RS256", "kid": "a-rsa-1", "crit": ["urn:x"], "urn:x": 1}
            )
        ),
        "token-crit",
    ),
    (
        "crit-b64-false",
        only(
            lambda r: signed_header(
                r, {"alg": "RS256", "kid": "a-rsa-1", "crit": ["b64"], "b64": False}
            )
        ),
        "token-crit",
    ),
    (
        "b64-without-crit",
        only(lambda r: signed_header(r, {"alg": "RS256", "kid": "a-rsa-1", "b64": False})),
        "token-malformed",
    ),
    # --- time
    ("expired", only(lambda r: r.rsa_a.sign(claims_for(exp=NOW - 3600))), "token-expired"),
    (
        "nbf-in-future",
        only(lambda r: r.rsa_a.sign(claims_for(nbf=NOW + 3600))),
        "token-not-yet-valid",
    ),
    (
        "iat-in-future",
        only(lambda r: r.rsa_a.sign(claims_for(iat=NOW + 3600))),
        "token-not-yet-valid",
    ),
    # --- issuer and audience
    (
        "iss-not-configured",
        only(lambda r: r.evil_rsa.sign(claims_for("https://evil.test/"))),
        "token-issuer",
    ),
    (
        "iss-trailing-slash-variant",
        only(lambda r: r.rsa_a.sign(claims_for("https://idp-a.test"))),
        "token-issuer",
    ),
    ("iss-missing", only(lambda r: r.rsa_a.sign(claims_for(iss=...))), "token-issuer"),
    (
        "iss-not-a-string",
        only(lambda r: sign_raw(r.rsa_a, claims_for(iss=[ISS_A]))),
        "token-issuer",
    ),
    ("aud-wrong", only(lambda r: r.rsa_a.sign(claims_for(aud="billing"))), "token-audience"),
    ("aud-missing", only(lambda r: r.rsa_a.sign(claims_for(aud=...))), "token-audience"),
    # --- signatures
    ("signature-stripped", only(stripped_signature), "token-signature"),
    ("payload-tampered", only(tampered_payload), "token-signature"),
    (
        "signed-by-other-issuers-key-with-our-kid",
        only(lambda r: r.rsa_b.sign(kid=r.rsa_a.kid)),
        "token-signature",
    ),
    (
        "signed-by-other-issuers-key-with-its-kid",
        only(lambda r: r.rsa_b.sign()),
        "token-unknown-key",
    ),
    (
        "rsa-1024-attacker-key",
        only(lambda r: rsa_key("a-rsa-1", bits=1024).sign()),
        "token-signature",
    ),
    # --- structure
    ("base64-garbage", only(lambda r: "eyJ!!!.e30.sig"), "token-malformed"),
    ("base64-padding", only(lambda r: r.rsa_a.sign().replace(".", "=.", 1)), "token-malformed"),
    (
        "header-not-json",
        only(lambda r: f"{b64('not json')}.{b64('{}')}.{b64('s')}"),
        "token-malformed",
    ),
    ("header-json-array", only(lambda r: raw_token([1, 2], claims_for(), b"s")), "token-malformed"),
    (
        "payload-duplicate-iss",
        only(
            lambda r: raw_token(
                {"alg": "RS256", "kid": "a-rsa-1"},
                f'{{"iss": "https://evil.test/", "iss": "{ISS_A}", "sub": "x"}}',
                b"s",
            )
        ),
        "token-malformed",
    ),
    (
        "payload-nan",
        only(lambda r: raw_token({"alg": "RS256"}, '{"exp": NaN}', b"s")),
        "token-malformed",
    ),
    ("two-segments", only(lambda r: ".".join(r.rsa_a.sign().split(".")[:2])), "token-malformed"),
    ("jwe-five-segments", only(lambda r: "a.b.c.d.e"), "token-malformed"),
    ("non-ascii", only(lambda r: r.rsa_a.sign() + "é"), "token-malformed"),
    ("100-kb-token", only(lambda r: "a" * 50_000 + "." + "b" * 50_000 + ".c"), "token-too-large"),
    # --- claims
    ("sub-missing", only(lambda r: r.rsa_a.sign(claims_for(sub=...))), "token-claims"),
    ("sub-not-a-string", only(lambda r: r.rsa_a.sign(claims_for(sub=42))), "token-claims"),
    ("exp-not-a-number", only(lambda r: r.rsa_a.sign(claims_for(exp="tomorrow"))), "token-claims"),
    (
        "tenant-not-a-string",
        only(lambda r: r.rsa_a.sign(claims_for(org_id={"x": 1}))),
        "token-claims",
    ),
    ("entity-huge", only(lambda r: r.rsa_a.sign(claims_for(entity_id="e" * 2000))), "token-claims"),
    (
        "issuer-b-required-email-missing",
        only(lambda r: r.rsa_b.sign(claims_for(ISS_B))),
        "token-claims",
    ),
    # --- headers
    (
        "duplicate-authorization",
        lambda r: ([*bearer(r.rsa_a.sign()), *bearer(r.rsa_a.sign())], ()),
        "token-duplicate",
    ),
    (
        "duplicate-authorization-one-garbage",
        lambda r: ([*bearer(r.rsa_a.sign()), ("authorization", "Basic Zm9vOmJhcg==")], ()),
        "token-duplicate",
    ),
    (
        "two-sources-two-tokens",
        lambda r: (
            [*bearer(r.rsa_a.sign()), ("X-SLURM-USER-TOKEN", r.ec_a.sign())],
            ("X-SLURM-USER-TOKEN",),
        ),
        "token-duplicate",
    ),
    (
        "duplicate-extra-header",
        lambda r: (
            [("X-SLURM-USER-TOKEN", r.rsa_a.sign()), ("x-slurm-user-token", r.rsa_a.sign())],
            ("X-SLURM-USER-TOKEN",),
        ),
        "token-duplicate",
    ),
    ("no-token", lambda r: ([], ()), "token-missing"),
    ("empty-bearer", lambda r: ([("Authorization", "Bearer ")], ()), "token-missing"),
    ("basic-auth-only", lambda r: ([("Authorization", "Basic Zm9vOmJhcg==")], ()), "token-missing"),
    (
        "extra-header-not-configured-for-route",
        lambda r: ([("X-SLURM-USER-TOKEN", r.rsa_a.sign())], ()),
        "token-missing",
    ),
    (
        "authorization-header-100-kb",
        lambda r: ([("Authorization", "Bearer " + "a" * 100_000)], ()),
        "token-too-large",
    ),
]


def test_attack_table_is_large_enough() -> None:
    assert len(ATTACKS) >= 20
    assert len({name for name, _, _ in ATTACKS}) == len(ATTACKS)


@pytest.mark.parametrize(("name", "case", "reason"), ATTACKS, ids=[a[0] for a in ATTACKS])
async def test_attack_is_refused_with_reason(
    auth: Authenticator, ring: Ring, name: str, case: Case, reason: str
) -> None:
    pairs, token_headers = case(ring)
    headers = CIMultiDict(pairs)
    with pytest.raises(Deny) as info:
        await auth.authenticate(headers, token_headers)
    deny = info.value
    assert deny.reason == reason, f"{name}: got {deny.reason} ({deny.detail})"
    assert deny.status == 401
    challenge = deny.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    # the token (or any of its segments) never leaks into what the client, logs or audit see
    for _, value in pairs:
        for part in value.replace("Bearer ", "").split("."):
            if len(part) >= 8:
                assert part not in deny.detail
                assert part not in challenge
                assert part not in str(deny)


async def test_a_cached_token_does_not_vouch_for_a_malformed_variant(
    auth: Authenticator, ring: Ring
) -> None:
    """The shape check runs on a cache miss only: a variant of a cached token is a miss."""
    good = ring.rsa_a.sign()
    principal = await auth.authenticate(CIMultiDict(bearer(good)))
    assert await auth.authenticate(CIMultiDict(bearer(good))) == principal  # a hit
    checks = auth.verifier.signature_checks
    for variant in (
        good + ".x",
        good.replace(".", "..", 1),
        good + "!",
        good[:-1] + "=",
        good + "\u00e9",
    ):
        with pytest.raises(Deny) as info:
            await auth.authenticate(CIMultiDict(bearer(variant)))
        assert info.value.reason == "token-malformed", variant[-12:]
    assert auth.verifier.signature_checks == checks


async def test_attacks_never_reach_signature_check_when_refused_early(
    auth: Authenticator, ring: Ring
) -> None:
    """alg=none, HS256 confusion and unknown issuers are refused before any key is used."""
    for token in (
        raw_token({"alg": "none"}, claims_for()),
        hs256_with_public_pem(ring),
        ring.evil_rsa.sign(claims_for("https://evil.test/")),
    ):
        with pytest.raises(Deny):
            await auth.authenticate(CIMultiDict(bearer(token)))
    assert auth.verifier.signature_checks == 0


async def test_jwks_unavailable_is_a_dependency_error_not_a_deny(tmp_path: Any, ring: Ring) -> None:
    """An issuer whose JWKS URL never answered gives 503, not a 401 blaming the client."""
    from gatekeeper.config import IdentityConfig, IssuerConfig
    from tests.support import free_port

    cfg = IdentityConfig(
        issuers=(
            IssuerConfig(
                issuer=ISS_A,
                audiences=(AUD,),
                jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json",
                jwks_timeout_s=1.0,
                jwks_min_fetch_interval_s=60,
            ),
        )
    )
    a = Authenticator(cfg)
    await a.start()  # an unreachable IdP does not fail start-up
    try:
        assert a.healthy()["ok"] is False
        with pytest.raises(DependencyError) as info:
            await a.authenticate(CIMultiDict(bearer(ring.rsa_a.sign())))
        assert info.value.reason == "jwks-unavailable"
        assert info.value.status == 503
    finally:
        await a.close()
