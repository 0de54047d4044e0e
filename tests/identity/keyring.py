"""Real keys, JWKS documents and hand-built tokens for the identity tests (no mocks)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

ISS_A = "https://idp-a.test/"
ISS_B = "https://idp-b.test/"
AUD = "gpu-gatekeeper"


@dataclass
class Key:
    """A private key, its kid, and the algorithm it signs with."""

    kid: str
    alg: str
    private: Any

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def jwk(self, *, with_alg: bool = False, **extra: Any) -> dict[str, Any]:
        pub = self.public
        if isinstance(pub, rsa.RSAPublicKey):
            out = RSAAlgorithm.to_jwk(pub, as_dict=True)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            out = ECAlgorithm.to_jwk(pub, as_dict=True)
        else:
            out = OKPAlgorithm.to_jwk(pub, as_dict=True)
        out["kid"] = self.kid
        out["use"] = "sig"
        if with_alg:
            out["alg"] = self.alg
        out.update(extra)
        return out

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(
        self,
        claims: dict[str, Any] | None = None,
        *,
        headers: dict[str, Any] | None = None,
        kid: str | bool | None = True,
        alg: str | None = None,
    ) -> str:
        """A token signed by this key; kid=True uses the key's kid, None omits it."""
        hdr: dict[str, Any] = dict(headers or {})
        if kid is True:
            hdr["kid"] = self.kid
        elif kid is not None and kid is not False:
            hdr["kid"] = kid
        return jwt.encode(
            claims or claims_for(), self.private, algorithm=alg or self.alg, headers=hdr
        )


def rsa_key(kid: str, alg: str = "RS256", bits: int = 2048) -> Key:
    return Key(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=bits))


def ec_key(kid: str, alg: str = "ES256", curve: ec.EllipticCurve | None = None) -> Key:
    return Key(kid, alg, ec.generate_private_key(curve or ec.SECP256R1()))


def ed_key(kid: str) -> Key:
    return Key(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def jwks(*keys: Key, **kw: Any) -> dict[str, Any]:
    return {"keys": [k.jwk(**kw) for k in keys]}


def write_jwks(path: Path, doc: dict[str, Any] | bytes | str) -> str:
    if isinstance(doc, dict):
        path.write_text(json.dumps(doc))
    elif isinstance(doc, bytes):
        path.write_bytes(doc)
    else:
        path.write_text(doc)
    return str(path)


def claims_for(issuer: str = ISS_A, **over: Any) -> dict[str, Any]:
    """Good claims for ``issuer``; keyword overrides, ``...`` removes a claim."""
    now = int(time.time())
    out: dict[str, Any] = {
        "iss": issuer,
        "aud": AUD,
        "sub": "alice",
        "iat": now,
        "exp": now + 600,
        "org_id": "lab-1",
        "entity_id": "acme-us",
        "nationality": "US",
    }
    for k, v in over.items():
        if v is ...:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: Any, payload: Any, signature: bytes = b"") -> str:
    """A token assembled by hand (for hostile shapes PyJWT would refuse to produce)."""
    h = header if isinstance(header, str) else json.dumps(header)
    p = payload if isinstance(payload, str) else json.dumps(payload)
    return f"{b64(h)}.{b64(p)}.{b64(signature) if signature else ''}"


def sign_raw(key: Key, claims: Any, header: dict[str, Any] | None = None) -> str:
    """Sign arbitrary JSON claims (PyJWT's encoder refuses some hostile shapes)."""
    hdr = header or {"alg": key.alg, "kid": key.kid}
    signing_input = f"{b64(json.dumps(hdr))}.{b64(json.dumps(claims))}".encode()
    algo = get_default_algorithms()[hdr["alg"]]
    sig = algo.sign(signing_input, algo.prepare_key(key.private))
    return f"{signing_input.decode()}.{b64(sig)}"


def resign(token: str, key: Key, header: dict[str, Any]) -> str:
    """Replace the header of ``token`` and sign header.payload with ``key`` (any algorithm)."""
    payload_b64 = token.split(".")[1]
    signing_input = f"{b64(json.dumps(header))}.{payload_b64}".encode()
    algo = get_default_algorithms()[header["alg"]]
    sig = algo.sign(signing_input, algo.prepare_key(key.private))
    return f"{signing_input.decode()}.{b64(sig)}"
