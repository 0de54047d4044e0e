"""Shared helpers for gate-level race, fault and load tests (real ``gatekeeper serve`` processes).

* ``Keys``: a fresh RSA key, its JWKS (file or served by ``tests.identity.idp.FakeIdP``), tokens.
* ``write_entities`` / ``write_policy``: small registries and policy files written by the test.
* ``gate_config``: a full config (authenticated Slurm route, trusted loopback proxy, audit file).
* ``start_gate``: ``Gate`` that also waits until every worker has opened its audit chain.
* ``submit`` / ``Result``: one authenticated Slurm submission, its status, headers and problem body.
* ``audit_lines`` / ``decisions`` / ``outcomes``: what the audit files of a gate hold.
* ``forwarded_ids``: the decision ids the upstream saw (``X-Gatekeeper-Decision-Id``).
* ``assert_accounted``: nothing reached the upstream without an allow record; every response
  with a decision id has its record (except 503 ``audit-unavailable``, refused *because* the
  record could not be written).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from gatekeeper.audit.files import chain_files
from tests.e2e.gate import Gate, Upstream
from tests.support import await_until, free_port, listeners, wait_until

ISSUER = "https://idp.faults.test/"
AUDIENCE = "gpu-gatekeeper"
SUBMIT = "/slurm/v0.0.41/job/submit"
US_IP = "8.8.8.8"  # builtin GeoLite2: US
CN_IP = "114.114.114.114"  # builtin GeoLite2: CN


class Keys:
    """An RSA signing key, its JWKS document and tokens for an entity."""

    def __init__(self, kid: str = "k1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
        self.jwks: dict[str, Any] = {"keys": [jwk]}
        self._cache: dict[str, str] = {}

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks))
        return path

    def token(self, entity: str, *, tenant: str | None = None, ttl: int = 3600) -> str:
        """One token per (entity, tenant), reused: the gate's token cache keeps verification cheap."""
        cache_key = f"{entity}|{tenant}"
        if cache_key not in self._cache:
            now = int(time.time())
            claims = {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": f"user@{entity}",
                "org_id": tenant or entity,
                "entity_id": entity,
                "iat": now,
                "nbf": now,
                "exp": now + ttl,
            }
            self._cache[cache_key] = jwt.encode(
                claims, self.key, algorithm="RS256", headers={"kid": self.kid}
            )
        return self._cache[cache_key]


def write_entities(path: Path, entities: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"entities": entities}, sort_keys=False))
    return path


def write_policy(
    path: Path, rules: list[dict[str, Any]], quotas: dict[str, Any] | None = None
) -> Path:
    doc: dict[str, Any] = {"version": 1, "name": path.stem, "rules": rules}
    if quotas:
        doc["quotas"] = quotas
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def gate_config(
    tmp: Path,
    *,
    upstream: str,
    entities: Path,
    policies: list[Path],
    jwks_file: Path | None = None,
    jwks_url: str | None = None,
    store: str = "memory",
    workers: int = 1,
    audit_dir: Path | None = None,
    extra_sinks: list[dict[str, Any]] | None = None,
    geoip: dict[str, Any] | None = None,
    issuer_extra: dict[str, Any] | None = None,
    extra_routes: list[dict[str, Any]] | None = None,
    quota_timeout_s: float = 2.0,
    lease_requests: int | None = None,
) -> dict[str, Any]:
    issuer: dict[str, Any] = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "algorithms": ["RS256"],
        "claims": {"tenant": "org_id", "entity": "entity_id"},
    }
    if jwks_file is not None:
        issuer["jwks_file"] = str(jwks_file)
    if jwks_url is not None:
        issuer["jwks_url"] = jwks_url
    issuer.update(issuer_extra or {})
    audit = audit_dir or tmp
    routes: list[dict[str, Any]] = [
        {"name": "slurm-submit",
         "match": {"path_prefix": "/slurm/", "methods": ["POST"], "path_regex": "/job/submit$"},
         "upstream": upstream, "adapter": "slurm", "gpu_model": "H100-SXM", "max_hours": 168},
    ]  # fmt: skip
    routes += extra_routes or []
    quota: dict[str, Any] = {"store": store, "on_store_error": "deny", "timeout_s": quota_timeout_s}
    if lease_requests is not None:
        quota["lease_requests"] = lease_requests
    return {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "workers": workers,
        "trusted_proxies": ["127.0.0.1/32"],
        "limits": {"upstream_timeout_s": 10, "header_timeout_s": 10, "drain_timeout_s": 5},
        "identity": {"issuers": [issuer]},
        "entities": {"sources": [{"path": str(entities)}]},
        "geoip": geoip or {"country_db": "builtin"},
        "policy": {"files": [str(p) for p in policies], "default_action": "deny"},
        "quota": quota,
        "audit": {
            "durability": "fsync",
            "sinks": [{"type": "file", "path": str(audit / "audit.jsonl")}, *(extra_sinks or [])],
        },
        "routes": routes,
    }


def audit_files(config: dict[str, Any]) -> list[Path]:
    """The live audit file of each process (``audit.w<i>.jsonl`` per worker when workers > 1)."""
    base = Path(config["audit"]["sinks"][0]["path"])
    workers = int(config.get("workers", 1))
    if workers == 1:
        return [base]
    return [base.with_name(f"{base.stem}.w{i}{base.suffix}") for i in range(workers)]


def start_gate(tmp: Path, config: dict[str, Any], *, name: str = "gatekeeper") -> Gate:
    """Start ``gatekeeper serve`` and wait until every worker has its audit chain open."""
    gate = Gate(tmp, config, name=name)
    deadline = time.monotonic() + 30
    while not all(p.exists() for p in audit_files(config)):
        if time.monotonic() > deadline:
            gate.stop()
            raise TimeoutError(f"workers did not start: {gate.stderr()}")
        time.sleep(0.05)
    workers = int(config.get("workers", 1))
    if workers > 1:
        # The last worker binds its SO_REUSEPORT listener just after opening its audit chain.
        try:
            wait_until(lambda: listeners(gate.port) == workers, 30, what="every worker listening")
        except TimeoutError:
            gate.stop()
            raise
    return gate


def slurm_body(gpus: int = 8, hours: float = 1.0) -> dict[str, Any]:
    per_node = min(gpus, 8)
    return {
        "job": {
            "name": "fault-test",
            "partition": "h100",
            "nodes": str(max(1, gpus // 8)),
            "tres_per_node": f"gres/gpu:h100:{per_node}",
            "time_limit": {"set": True, "infinite": False, "number": int(hours * 60)},
            "current_working_directory": "/home/test",
            "environment": ["PATH=/usr/bin"],
        },
        "script": "#!/bin/bash\nsrun true\n",
    }


@dataclass
class Result:
    """One answer the client got (or the exception instead)."""

    status: int
    decision_id: str | None
    headers: dict[str, str] = field(default_factory=dict)
    problem: dict[str, Any] | None = None
    error: str | None = None
    sent: float = 0.0
    done: float = 0.0


async def submit(
    session: aiohttp.ClientSession,
    base: str,
    token: str | None,
    *,
    ip: str = US_IP,
    gpus: int = 8,
    hours: float = 1.0,
    timeout: float = 30.0,
) -> Result:
    headers = {"X-Forwarded-For": ip}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sent = time.monotonic()
    try:
        async with session.post(
            base + SUBMIT,
            json=slurm_body(gpus, hours),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as r:
            raw = await r.read()
            problem = None
            if r.content_type == "application/problem+json":
                problem = json.loads(raw)
            return Result(
                r.status,
                r.headers.get("X-Gatekeeper-Decision-Id"),
                dict(r.headers),
                problem,
                sent=sent,
                done=time.monotonic(),
            )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Result(
            0, None, error=f"{type(exc).__name__}: {exc}", sent=sent, done=time.monotonic()
        )


def audit_lines(paths: list[Path]) -> list[dict[str, Any]]:
    """Every complete JSON line of the given audit files (and their rotated segments)."""
    out: list[dict[str, Any]] = []
    for p in paths:
        for seg in chain_files(str(p)):
            for raw in Path(seg).read_bytes().splitlines():
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue  # a torn line
                if isinstance(obj, dict):
                    out.append(obj)
    return out


def decisions(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Decision records by decision id (outcome lines and seals left out)."""
    return {r["decision_id"]: r for r in lines if r.get("type") is None and "decision_id" in r}


def outcomes(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["decision_id"]: r for r in lines if r.get("type") == "outcome"}


def forwarded_ids(upstream: Upstream) -> list[str]:
    """Decision ids of every request that reached the upstream (from its request log)."""
    ids = []
    for line in upstream.log.read_text().splitlines():
        if not line:
            continue
        rec = json.loads(line)
        found = [v for k, v in rec["headers"] if k.lower() == "x-gatekeeper-decision-id"]
        ids.append(found[0] if found else "<none>")
    return ids


def assert_accounted(
    upstream: Upstream, paths: list[Path], results: list[Result], *, since: int = 0
) -> dict[str, dict[str, Any]]:
    """No request forwarded without an allow record; every answered request has its record."""
    recs = decisions(audit_lines(paths))
    fwd = forwarded_ids(upstream)[since:]
    unaccounted = [i for i in fwd if i not in recs]
    assert not unaccounted, f"{len(unaccounted)} forwarded without a decision record"
    not_allowed = [
        i
        for i in fwd
        if recs[i]["decision"]["action"] != "allow" and recs[i]["decision"]["enforced"]
    ]
    assert not not_allowed, f"forwarded although not allowed: {not_allowed[:3]}"
    missing = [
        r
        for r in results
        if r.decision_id
        and r.decision_id not in recs
        and not (r.status == 503 and r.problem and r.problem["type"].endswith("audit-unavailable"))
    ]
    assert not missing, f"{len(missing)} answered without a record, e.g. {missing[:2]}"
    return recs


_METRIC_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<v>\S+)$"
)


async def metric(admin_url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples on ``/metrics`` whose labels include ``labels``."""
    async with (
        aiohttp.ClientSession() as s,
        s.get(admin_url + "/metrics") as r,
    ):
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        m = _METRIC_RE.match(line)
        if not m or m["name"] != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m["v"])
    return total


async def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> float:
    """Await ``predicate()`` (sync or async) until true; returns the seconds it took."""
    return await await_until(predicate, timeout, interval)


@contextlib.contextmanager
def tmpfs_mount(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the test (mounting needs root: where it is
    refused, the test is skipped with a loud reason)."""
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"CANNOT MOUNT A TMPFS HERE (needs root): {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
