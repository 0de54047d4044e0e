"""Shared helpers for the audit tests: configs, keys, a filled-in request context, file edits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from multidict import CIMultiDict, CIMultiDictProxy

from gatekeeper.audit.record import canonical, chain_hash
from gatekeeper.config import AuditConfig, AuditSinkConfig
from gatekeeper.context import (
    ComputeRequest,
    Decision,
    GeoInfo,
    OwnershipProfile,
    Principal,
    QuotaState,
    RequestContext,
    RequestInfo,
)

SECRET_TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"


def file_cfg(
    path: Path,
    *,
    durability: str = "fsync",
    rotate_bytes: int = 104_857_600,
    signing_key: str | None = None,
    extra: tuple[AuditSinkConfig, ...] = (),
) -> AuditConfig:
    sink = AuditSinkConfig(type="file", path=str(path), rotate_bytes=rotate_bytes)
    return AuditConfig(durability=durability, signing_key=signing_key, sinks=(sink, *extra))


def make_keys(folder: Path) -> tuple[str, str]:
    """(private PKCS#8 PEM path, public SPKI PEM path) of a fresh Ed25519 key."""
    key = Ed25519PrivateKey.generate()
    priv = folder / "audit-signing.pem"
    pub = folder / "audit-signing.pub.pem"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(priv), str(pub)


def body(i: int, *, tenant: str = "acme", action: str = "allow") -> dict[str, Any]:
    return {
        "decision_id": f"d{i:06d}",
        "http": {
            "method": "POST",
            "path": "/slurm/job/submit",
            "route": "slurm-submit",
            "client_ip": "203.0.113.7",
            "status": 200 if action == "allow" else 451,
            "upstream_status": 200 if action == "allow" else None,
            "latency_ms": 1.5,
        },
        "principal": {"subject": "alice", "tenant": tenant, "entity": "acme-sg", "issuer": "idp"},
        "decision": {
            "action": action,
            "rule": "foreign-tenant" if action == "allow" else "x",
            "reasons": [],
            "enforced": True,
            "policy_version": "sha256:ab",
            "shadow": [],
            "license": None,
        },
    }


def full_ctx() -> RequestContext:
    headers = CIMultiDictProxy(
        CIMultiDict({"Authorization": f"Bearer {SECRET_TOKEN}", "X-Slurm-User-Token": SECRET_TOKEN})
    )
    ctx = RequestContext(
        decision_id="01JTESTDECISION",
        request=RequestInfo(
            route="slurm-submit",
            method="POST",
            path="/slurm/v0.0.41/job/submit",
            client_ip="203.0.113.7",
        ),
        headers=headers,
        body=json.dumps({"token": SECRET_TOKEN}).encode(),
    )
    ctx.principal = Principal(
        subject="alice",
        issuer="https://idp.example.com/",
        tenant="acme",
        entity="acme-sg",
        nationality="SG",
        claims={"raw_token": SECRET_TOKEN},
    )
    ctx.ownership = OwnershipProfile(
        id="acme-sg",
        known=True,
        ultimate_parent="acme-group",
        parent_hq_country="CN",
        affiliated=False,
        listed_share=0.0,
    )
    ctx.geo = GeoInfo(ip="203.0.113.7", known=True, country="SG", asn=7473)
    ctx.compute = ComputeRequest(
        gpu_model="H100-SXM",
        gpus=32,
        hours=12.0,
        gpu_hours=384.0,
        tpp=15832.0,
        tpp_hours=6079488.0,
        eccn="3A090.a",
        controlled=True,
    )
    ctx.decision = Decision(
        action="require_license",
        rule="d5-headquarters",
        reasons=["d5-headquarters"],
        status=451,
        policy_version="sha256:ab",
    )
    ctx.quota = QuotaState(name="foreign-monthly", consumed=0.0, remaining=1.0e8)
    return ctx


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def rechain(lines: list[bytes]) -> list[bytes]:
    """Recompute every hash as a forger with write access would (seal lines are dropped)."""
    out: list[bytes] = []
    head = "sha256:" + "0" * 64
    seq = 0
    for raw in lines:
        obj = json.loads(raw)
        if obj.get("type") == "seal":
            continue
        seq += 1
        obj["seq"] = seq
        obj["prev_hash"] = head
        obj.pop("hash", None)
        obj["hash"] = head = chain_hash(head, obj)
        out.append(canonical(obj) + b"\n")
    return out
