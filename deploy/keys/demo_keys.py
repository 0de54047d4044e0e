"""Demo keys for docker-compose: generate them, and mint tokens the demo issuer signs.

    python deploy/keys/demo_keys.py generate            # (re)writes the four key files here
    python deploy/keys/demo_keys.py token --entity frontier-labs --tenant frontier

The files in this folder are DEMO keys, committed so that ``docker compose up`` works on a fresh
clone. Anyone can mint tokens with them. Never mount them in a real deployment: see
docs/operations.md ("Keys") for where production keys come from.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

HERE = Path(__file__).resolve().parent
ISSUER = "https://idp.gatekeeper.example/"  # must equal identity.issuers[0].issuer in the config
AUDIENCE = "gpu-gatekeeper"
KID = "compose-demo-1"

ISSUER_KEY = HERE / "demo-issuer.pem"  # ES256 private key that signs demo tokens
JWKS = HERE / "jwks.json"  # its public half, what the gate reads (identity.issuers[].jwks_file)
SEAL_KEY = HERE / "audit-seal.pem"  # Ed25519 private key: audit.signing_key
SEAL_PUB = HERE / "audit-seal.pub.pem"  # for `gatekeeper audit verify --public-key`


def _pem_private(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate(folder: Path = HERE) -> None:
    """Write a fresh issuer key, its JWKS, and an audit seal key pair into ``folder``."""
    issuer = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(issuer.public_key()))
    jwk.update({"kid": KID, "use": "sig", "alg": "ES256"})
    seal = ed25519.Ed25519PrivateKey.generate()
    # 0644 on purpose: the container user (uid 10001) must read bind-mounted files. Demo only.
    files = {
        folder / ISSUER_KEY.name: _pem_private(issuer),
        folder / JWKS.name: (json.dumps({"keys": [jwk]}, indent=2) + "\n").encode(),
        folder / SEAL_KEY.name: _pem_private(seal),
        folder / SEAL_PUB.name: seal.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for path, data in files.items():
        path.write_bytes(data)
        path.chmod(0o644)
        print(f"wrote {path}")


def mint(
    *, subject: str, tenant: str, entity: str, ttl_s: int = 3600, key_path: Path = ISSUER_KEY
) -> str:
    """A demo token the gate in docker-compose accepts (claims per identity.issuers[0].claims)."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + ttl_s,
        "org_id": tenant,
        "entity_id": entity,
    }
    return jwt.encode(claims, key_path.read_bytes(), algorithm="ES256", headers={"kid": KID})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="write new demo keys into this folder")
    tok = sub.add_parser("token", help="print a demo bearer token")
    tok.add_argument("--entity", default="frontier-labs", help="entity_id claim")
    tok.add_argument("--tenant", default="frontier", help="org_id claim")
    tok.add_argument("--subject", default="alice@example.com", help="sub claim")
    tok.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    args = parser.parse_args(argv)
    if args.command == "generate":
        generate()
    else:
        print(mint(subject=args.subject, tenant=args.tenant, entity=args.entity, ttl_s=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
