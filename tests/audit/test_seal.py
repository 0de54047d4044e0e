"""Signing keys: only Ed25519 PEM keys are accepted; anything else is a located ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.seal import Sealer, check_seal, load_private_key, load_public_key
from gatekeeper.errors import ConfigError
from tests.audit.helpers import file_cfg, make_keys


def test_seal_signature_round_trip(tmp_path: Path) -> None:
    priv, pub = make_keys(tmp_path)
    seal = Sealer(load_private_key(priv), "gk-0").seal(7, "sha256:" + "a" * 64, "t")
    assert check_seal(load_public_key(pub), seal)
    for field, value in (("seq", 8), ("hash", "sha256:" + "b" * 64), ("replica", "gk-1")):
        assert not check_seal(load_public_key(pub), {**seal, field: value})
    assert not check_seal(load_public_key(pub), {**seal, "sig": "ed25519:!!!"})
    assert not check_seal(load_public_key(pub), {**seal, "sig": 5})


def _ec_key(path: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    return str(path)


@pytest.mark.parametrize("kind", ["missing", "garbage", "empty", "ec", "public-only", "huge"])
def test_bad_signing_key_is_a_config_error(tmp_path: Path, kind: str) -> None:
    key = tmp_path / "key.pem"
    if kind == "garbage":
        key.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    elif kind == "empty":
        key.write_bytes(b"")
    elif kind == "ec":
        _ec_key(key)
    elif kind == "public-only":
        _, pub = make_keys(tmp_path)
        key = Path(pub)
    elif kind == "huge":
        key.write_bytes(b"A" * 100_000)
    with pytest.raises(ConfigError) as exc:
        AuditLog(file_cfg(tmp_path / "a.jsonl", signing_key=str(key)), replica="gk-0")
    assert str(key) in str(exc.value) and "audit.signing_key" in str(exc.value)


def test_ec_public_key_is_refused_for_verify(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    _ec_key(path)
    with pytest.raises(ConfigError, match="Ed25519"):
        load_public_key(str(path))
