"""deploy/keys: the demo keys load the way the gate loads them, and demo_keys.py works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from gatekeeper.audit.seal import load_private_key, load_public_key
from gatekeeper.config import Config
from gatekeeper.identity.keys import parse_jwks
from tests.deploy.manifests import REPO
from tests.deploy.test_stack import _demo_keys

KEYS = REPO / "deploy" / "keys"


def test_committed_demo_keys_match_the_config(cfg: Config) -> None:
    issuer = cfg.identity.issuers[0]
    assert issuer.jwks_file is not None
    keyset, problems = parse_jwks(
        (KEYS / Path(issuer.jwks_file).name).read_bytes(), issuer.algorithms
    )
    assert problems == [] and keyset.count == 1
    mod = _demo_keys()
    assert (issuer.issuer, issuer.audiences[0]) == (mod.ISSUER, mod.AUDIENCE)
    assert cfg.audit.signing_key is not None
    private = load_private_key(str(KEYS / Path(cfg.audit.signing_key).name))
    public = load_public_key(str(KEYS / "audit-seal.pub.pem"))
    assert private.public_key().public_bytes_raw() == public.public_bytes_raw()


def test_token_command_output_verifies_against_jwks(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(KEYS / "demo_keys.py"), "token", "--entity", "acme-sg", "--tenant", "acme"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    token = out.stdout.strip()
    jwk = json.loads((KEYS / "jwks.json").read_text())["keys"][0]
    claims = jwt.decode(
        token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="gpu-gatekeeper",
        issuer="https://idp.gatekeeper.example/",
    )  # fmt: skip
    assert (claims["entity_id"], claims["org_id"]) == ("acme-sg", "acme")
    assert claims["exp"] - claims["iat"] == 3600


def test_generate_writes_a_loadable_set(tmp_path: Path) -> None:
    mod = _demo_keys()
    mod.generate(tmp_path)
    keyset, problems = parse_jwks((tmp_path / "jwks.json").read_bytes(), ["ES256"])
    assert problems == [] and keyset.count == 1
    load_private_key(str(tmp_path / "audit-seal.pem"))
    # Readable by the container user through a bind mount.
    assert all((p.stat().st_mode & 0o777) == 0o644 for p in tmp_path.iterdir())
    token = mod.mint(subject="s", tenant="t", entity="e", key_path=tmp_path / "demo-issuer.pem")
    with pytest.raises(jwt.InvalidSignatureError):  # a different key than the committed one
        jwk = json.loads((KEYS / "jwks.json").read_text())["keys"][0]
        jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="gpu-gatekeeper")
