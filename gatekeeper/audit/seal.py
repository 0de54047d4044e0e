"""Ed25519 seals of the chain head (docs/reference.md).

A hash chain shows edits, deletions and reordering, but someone who can write the file can rewrite
its tail and recompute every hash. With ``audit.signing_key`` each group commit therefore ends with
a seal line::

    {"v":1,"type":"seal","seq":<last seq>,"hash":<chain head>,"replica":"gk-0",
     "ts":"...Z","sig":"ed25519:<base64>"}

The signed message is ``canonical(seal without "sig")``, i.e. the canonical JSON of
``{hash, replica, seq, ts, type, v}``. Seals are not part of the chain (no seq of their own, no
effect on ``prev_hash``); a seal vouches for its record and, through the chain, for every record
before it. Keys are PEM files: PKCS#8 private keys for the gate, SubjectPublicKeyInfo public keys
(or the private key, from which the public half is derived) for ``audit verify``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatekeeper.audit.record import canonical
from gatekeeper.errors import ConfigError, Problem

SIG_PREFIX = "ed25519:"


def _read(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            [Problem(path, None, "audit.signing_key", f"cannot read: {exc}")]
        ) from exc
    if len(data) > 64 * 1024:
        raise ConfigError([Problem(path, None, "audit.signing_key", "file too large for a key")])
    return data


def load_private_key(path: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8) file; ``ConfigError`` for anything else."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        msg = f"not an unencrypted PEM private key: {exc}"
        raise ConfigError([Problem(path, None, "audit.signing_key", msg)]) from exc
    if not isinstance(key, Ed25519PrivateKey):
        msg = f"expected an Ed25519 key, got {type(key).__name__}"
        raise ConfigError([Problem(path, None, "audit.signing_key", msg)])
    return key


def load_public_key(path: str) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (public key, or private key whose half is used)."""
    data = _read(path)
    try:
        pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return load_private_key(path).public_key()
    if not isinstance(pub, Ed25519PublicKey):
        msg = f"expected an Ed25519 public key, got {type(pub).__name__}"
        raise ConfigError([Problem(path, None, "public_key", msg)])
    return pub


def seal_message(seal: dict[str, Any]) -> bytes:
    """The exact bytes a seal signs: canonical JSON of the seal without ``sig``."""
    return canonical({k: v for k, v in seal.items() if k != "sig"})


class Sealer:
    """Makes signed seal lines for one replica's chain."""

    def __init__(self, key: Ed25519PrivateKey, replica: str) -> None:
        self._key = key
        self.replica = replica

    def seal(self, seq: int, head: str, ts: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "v": 1,
            "type": "seal",
            "seq": seq,
            "hash": head,
            "replica": self.replica,
            "ts": ts,
        }
        sig = self._key.sign(seal_message(body))
        body["sig"] = SIG_PREFIX + base64.b64encode(sig).decode("ascii")
        return body


def check_seal(pub: Ed25519PublicKey, seal: dict[str, Any]) -> bool:
    """True when ``seal["sig"]`` is a valid signature of ``seal_message(seal)`` by ``pub``."""
    sig = seal.get("sig")
    if not isinstance(sig, str) or not sig.startswith(SIG_PREFIX):
        return False
    try:
        raw = base64.b64decode(sig[len(SIG_PREFIX) :], validate=True)
        pub.verify(raw, seal_message(seal))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
