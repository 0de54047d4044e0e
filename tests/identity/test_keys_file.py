"""JWKS files and identity config: malformed, hostile and oversized input; reload keeps last good."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import RSAAlgorithm
from multidict import CIMultiDict

from gatekeeper.config import IdentityConfig, IssuerConfig
from gatekeeper.errors import ConfigError, Deny
from gatekeeper.identity import Authenticator, validate_identity
from gatekeeper.identity.keys import MAX_JWKS_BYTES, parse_jwks
from tests.identity.conftest import Ring, identity_config
from tests.identity.keyring import AUD, ISS_A, ec_key, jwks, rsa_key, write_jwks


def one_issuer(path: str, **over: Any) -> IdentityConfig:
    params: dict[str, Any] = {"issuer": ISS_A, "audiences": (AUD,), "jwks_file": path}
    params.update(over)
    return IdentityConfig(issuers=(IssuerConfig(**params),))


def bearer(token: str) -> CIMultiDict[str]:
    return CIMultiDict([("Authorization", f"Bearer {token}")])


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"algorithms": ("HS256",)}, "'HS256' is not supported"),
        ({"algorithms": ("RS256", "none")}, "'none' is not supported"),
        ({"algorithms": ()}, "at least one algorithm"),
        ({"audiences": ()}, "at least one audience"),
        ({"jwks_url": "https://idp/jwks"}, "exactly one of jwks_file and jwks_url"),
        ({"jwks_file": None}, "exactly one of jwks_file and jwks_url"),
        ({"jwks_file": None, "jwks_url": "file:///etc/passwd"}, "must be an http(s) URL"),
        ({"jwks_refresh_s": 0}, "jwks_refresh_s: must be positive"),
    ],
)
def test_config_problems(over: dict[str, Any], message: str) -> None:
    problems = validate_identity(one_issuer("/x.json", **over))
    assert any(message in p for p in problems), problems
    with pytest.raises(ConfigError):
        Authenticator(one_issuer("/x.json", **over))


def test_duplicate_issuer_and_all_problems_at_once() -> None:
    iss = IssuerConfig(issuer=ISS_A, audiences=(), jwks_file="/x")
    problems = validate_identity(IdentityConfig(issuers=(iss, iss), max_token_bytes=0))
    assert "identity.issuers[1].issuer: duplicate issuer 'https://idp-a.test/'" in problems
    assert "identity.max_token_bytes: must be positive" in problems
    assert sum("at least one audience" in p for p in problems) == 2


async def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError) as info:
        await Authenticator(one_issuer(path)).start()
    assert info.value.problems == [f"{path}: cannot read: No such file or directory"]


def _rsa_jwk(**extra: Any) -> dict[str, Any]:
    return rsa_key("k").jwk(**extra)


HOSTILE: list[tuple[str, Any, str]] = [
    ("empty", b"", "not valid JSON"),
    ("not-json", b"{keys: [", "not valid JSON"),
    ("array", b"[]", 'expected an object with a "keys" list'),
    ("keys-not-list", {"keys": {"kty": "RSA"}}, 'expected an object with a "keys" list'),
    ("no-keys", {"keys": []}, "keys: no keys"),
    ("key-not-object", {"keys": ["x"]}, "keys[0]: not an object"),
    ("symmetric-oct", {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}, "private key"),
    ("rsa-private", {"keys": [None]}, "private key material"),
    ("unknown-kty", {"keys": [{"kty": "XYZ", "kid": "x"}]}, "unsupported key type"),
    ("rsa-1024", {"keys": [rsa_key("small", bits=1024).jwk()]}, "RSA key of 1024 bits"),
    ("bad-modulus", {"keys": [{"kty": "RSA", "kid": "x", "n": "!!", "e": "AQAB"}]}, "invalid key"),
    ("kid-not-string", {"keys": [None]}, "kid must be a string"),
    ("ec-p384-for-es256", {"keys": [None]}, "serves none of ['RS256', 'ES256']"),
    ("alg-mismatch", {"keys": [None]}, "serves none of"),
    ("too-many-keys", {"keys": [{"kty": "RSA"}] * 101}, "more than the limit of 100"),
    ("deep-nesting", b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not valid JSON"),
    ("oversized", b'{"keys": [], "x": "' + b"a" * MAX_JWKS_BYTES + b'"}', "larger than"),
]


def _hostile_doc(name: str, doc: Any) -> Any:
    # keys that need real key material are built here, not at import
    if name == "rsa-private":
        key = rsa_key("p")
        return {"keys": [RSAAlgorithm.to_jwk(key.private, as_dict=True)]}
    if name == "kid-not-string":
        return {"keys": [_rsa_jwk(kid=5)]}
    if name == "ec-p384-for-es256":
        return {"keys": [ec_key("p384", curve=ec.SECP384R1()).jwk()]}
    if name == "alg-mismatch":
        return {"keys": [_rsa_jwk(alg="PS256")]}
    return doc


@pytest.mark.parametrize(("name", "doc", "message"), HOSTILE, ids=[x[0] for x in HOSTILE])
async def test_hostile_jwks_file_is_a_config_error(
    tmp_path: Path, name: str, doc: Any, message: str
) -> None:
    path = write_jwks(tmp_path / f"{name}.json", _hostile_doc(name, doc))
    with pytest.raises(ConfigError) as info:
        await Authenticator(one_issuer(path)).start()
    text = str(info.value)
    assert text.startswith(path), text
    assert message in text, text


def test_parse_jwks_keeps_good_keys_and_skips_encryption_keys() -> None:
    good = rsa_key("good")
    doc = {
        "keys": [
            good.jwk(),
            rsa_key("enc").jwk(use="enc"),
            rsa_key("wrap").jwk(key_ops=["wrapKey"]),
            {"kty": "oct", "k": "AA", "kid": "s"},
        ]
    }
    keyset, problems = parse_jwks(json.dumps(doc).encode(), ("RS256", "PS256"))
    assert keyset.count == 1
    assert set(keyset.by_kid["good"]) == {"RS256", "PS256"}
    assert [p for p, _ in problems] == ["keys[3]"]


def test_declared_alg_binds_the_key() -> None:
    key = rsa_key("bound")
    keyset, problems = parse_jwks(json.dumps(jwks(key, with_alg=True)).encode(), ("RS256", "PS256"))
    assert not problems
    assert set(keyset.by_kid["bound"]) == {"RS256"}


async def test_reload_bad_file_keeps_last_good_keys(tmp_path: Path, ring: Ring) -> None:
    a = Authenticator(identity_config(tmp_path, ring, cache_size=0))
    await a.start()
    token = ring.rsa_a.sign()
    (tmp_path / "a.jwks.json").write_text("{broken")
    with pytest.raises(ConfigError) as info:
        await a.reload()
    assert "a.jwks.json" in str(info.value)
    assert (await a.authenticate(bearer(token))).subject == "alice"
    assert a.healthy()["issuers"][ISS_A]["stale"] is True


async def test_reload_rotated_file_swaps_keys_and_drops_cached_tokens(
    tmp_path: Path, ring: Ring
) -> None:
    a = Authenticator(identity_config(tmp_path, ring))
    await a.start()
    old = ring.rsa_a.sign()
    await a.authenticate(bearer(old))  # now cached
    new_key = rsa_key("a-rsa-2")
    write_jwks(tmp_path / "a.jwks.json", jwks(new_key, ring.ec_a))
    await a.reload()
    assert (await a.authenticate(bearer(new_key.sign()))).subject == "alice"
    # the old key was removed: its cached token must not outlive it
    with pytest.raises(Deny) as info:
        await a.authenticate(bearer(old))
    assert info.value.reason == "token-unknown-key"
    health = a.healthy()
    assert health["ok"] is True
    assert health["issuers"][ISS_A]["keys"] == 2
    assert health["issuers"][ISS_A]["stale"] is False


async def test_kidless_forgery_costs_bounded_signature_checks(tmp_path: Path, ring: Ring) -> None:
    keys = [rsa_key(f"k{i}") for i in range(12)]
    doc = {"keys": [{k: v for k, v in key.jwk().items() if k != "kid"} for key in keys]}
    a = Authenticator(one_issuer(write_jwks(tmp_path / "many.json", doc), algorithms=("RS256",)))
    await a.start()
    with pytest.raises(Deny) as info:
        await a.authenticate(bearer(ring.evil_rsa.sign(kid=None)))
    assert info.value.reason == "token-signature"
    assert a.verifier.signature_checks == 8
    # a kid-less token from one of the first keys still verifies
    assert (await a.authenticate(bearer(keys[3].sign(kid=None)))).subject == "alice"
