"""A real gate with an authenticated Slurm route, a Kubernetes route and an open read route, plus a
raw-socket HTTP/1.1 client and the invariant every security test checks.

The invariant ("nothing reaches the upstream in a form the gate did not decide on"): every request
the recording upstream saw carries exactly one ``X-Gatekeeper-Decision-Id`` that names a decision
record in the audit file with the same method and path, whose decision let it through; its
``X-Gatekeeper-Tenant``/``-Entity`` equal the record's principal, no other ``X-Gatekeeper-*`` header
is present, and no decision id reaches the upstream twice.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.demo import DATA, DemoKeys, _policies_dir
from tests.e2e.gate import Gate, Upstream
from tests.support import free_port

SUBMIT = "/slurm/v0.0.41/job/submit"
K8S_JOBS = "/apis/batch/v1/namespaces/ml/jobs"
US_IP = "8.8.8.8"  # builtin GeoLite2: US
NO_IP = "84.208.20.110"  # Norway
GATE_HEADERS = {"x-gatekeeper-decision-id", "x-gatekeeper-tenant", "x-gatekeeper-entity"}
HEADER_TIMEOUT_S = 1.5
KEEPALIVE_TIMEOUT_S = 4.0
DATA_DIR = Path(__file__).resolve().parent / "data"


def gate_config(tmp: Path, keys: DemoKeys, upstream: str) -> dict[str, Any]:
    """The demo's identity/entities/geo/policy sections with our routes and a short header timeout."""
    policies = _policies_dir()
    return {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        # loopback plays the trusted load balancer so X-Forwarded-For picks the country
        "trusted_proxies": ["127.0.0.1/32"],
        "limits": {
            "max_body_bytes": 65536,
            "header_timeout_s": HEADER_TIMEOUT_S,
            "keepalive_timeout_s": KEEPALIVE_TIMEOUT_S,
            "body_timeout_s": HEADER_TIMEOUT_S,
            "upstream_timeout_s": 5,
            "max_header_bytes": 8192,
            "drain_timeout_s": 2,
        },
        "identity": {
            "issuers": [
                {
                    "issuer": "https://idp.demo.gatekeeper.invalid/",
                    "audiences": ["gpu-gatekeeper"],
                    "jwks_file": str(keys.jwks_path),
                    "algorithms": ["RS256"],
                    "claims": {"tenant": "org_id", "entity": "entity_id"},
                }
            ]
        },
        "entities": {"sources": [{"path": str(DATA / "entities.yaml")}]},
        "geoip": {"country_db": "builtin", "anonymous_db": str(DATA / "anonymous-ip.mmdb")},
        "policy": {
            "files": [str(policies / "us-remote-access.yaml"), str(DATA_DIR / "open-reads.yaml")],
            "gpus": str(policies / "gpus.yaml"),
            "default_action": "deny",
        },
        "quota": {"store": "memory"},
        "audit": {
            "durability": "buffered",
            "replica": "security",
            "sinks": [{"type": "file", "path": str(tmp / "audit.jsonl")}],
        },
        "routes": [
            {"name": "slurm-submit",
             "match": {"path_prefix": "/slurm/", "methods": ["POST", "PUT", "PATCH"]},
             "upstream": upstream, "adapter": "slurm", "gpu_model": "H100-SXM", "max_hours": 168},
            {"name": "k8s-jobs", "match": {"path_prefix": "/apis/", "methods": ["POST", "PUT", "PATCH"]},
             "upstream": upstream, "adapter": "kubernetes", "gpu_model": "H100-SXM",
             "max_hours": 168},
            {"name": "slurm-read", "match": {"path_prefix": "/slurm/", "methods": ["GET", "HEAD"]},
             "upstream": upstream},
            {"name": "open", "match": {"path_prefix": "/open/"}, "upstream": upstream,
             "authenticate": False},
        ],
    }  # fmt: skip


def slurm_job(gpus: int = 8, minutes: int = 60) -> dict[str, Any]:
    return {
        "job": {
            "name": "train",
            "partition": "h100",
            "nodes": "1",
            "tres_per_job": f"gres/gpu:{gpus}",
            "time_limit": {"set": True, "infinite": False, "number": minutes},
            "current_working_directory": "/home/sec",
            "environment": ["PATH=/usr/bin"],
        },
        "script": "#!/bin/bash\nsrun true\n",
    }


# ------------------------------------------------------------------------------ raw HTTP/1.1


@dataclass
class RawResponse:
    """One parsed HTTP/1.x response."""

    version: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Exchange:
    """What came back on one connection: parsed responses, and whether the server closed it."""

    responses: list[RawResponse] = field(default_factory=list)
    closed: bool = False
    rest: bytes = b""

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


def _parse_one(buf: bytes, head_only: bool = False) -> tuple[RawResponse, bytes] | None:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    version, status, *_ = head[0].split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in head[1:])]
    rest = buf[end + 4 :]
    resp = RawResponse(version, int(status), headers, b"")
    if head_only or resp.status in (204, 304) or 100 <= resp.status < 200:
        return resp, rest
    length = resp.header("Content-Length")
    if length is not None:
        n = int(length)
        if len(rest) < n:
            return None
        resp.body = rest[:n]
        return resp, rest[n:]
    if (resp.header("Transfer-Encoding") or "").lower() == "chunked":
        body = b""
        pos = 0
        while True:
            nl = rest.find(b"\r\n", pos)
            if nl < 0:
                return None
            size = int(rest[pos:nl].split(b";")[0], 16)
            if len(rest) < nl + 2 + size + 2:
                return None
            body += rest[nl + 2 : nl + 2 + size]
            pos = nl + 2 + size + 2
            if size == 0:
                resp.body = body
                return resp, rest[pos:]
    return None  # body until close: caller finishes it


def exchange(
    port: int,
    data: bytes | list[bytes],
    *,
    expect: int | None = None,
    timeout: float = 5.0,
    pause: float = 0.0,
    between: Callable[[], object] | None = None,
) -> Exchange:
    """Send ``data`` (a list: several writes, ``pause`` apart, each after ``between()`` returns)
    and parse responses until the server closes, ``expect`` responses arrived, or ``timeout``
    passes."""
    result = Exchange()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        for i, part in enumerate([data] if isinstance(data, bytes) else data):
            if i and pause:
                time.sleep(pause)
            if i and between is not None:
                between()
            try:
                s.sendall(part)
            except OSError:
                result.closed = True
                break
        buf = b""
        deadline = time.monotonic() + timeout
        while not result.closed and time.monotonic() < deadline:
            if expect is not None and len(result.responses) >= expect:
                break
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                result.closed = True
            buf += chunk
            while (parsed := _parse_one(buf)) is not None:
                resp, buf = parsed
                result.responses.append(resp)
        if result.closed and buf:
            # a response delimited by the close
            end = buf.find(b"\r\n\r\n")
            if end >= 0 and (parsed := _parse_one(buf, head_only=True)) is not None:
                resp, tail = parsed
                resp.body = tail
                result.responses.append(resp)
                buf = b""
        result.rest = buf
    return result


def request_bytes(
    method: str,
    target: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    length: bool = True,
) -> bytes:
    lines = [f"{method} {target} {version}", "Host: gate.test"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if length and body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ------------------------------------------------------------------------------ the gate


class SecGate:
    """A running gate + recording upstream; checks the forwarding invariant."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.keys = DemoKeys(tmp)
        self.upstream = Upstream(tmp)
        self.config = gate_config(tmp, self.keys, self.upstream.url)
        self.audit_path = Path(self.config["audit"]["sinks"][0]["path"])
        self.gate = Gate(tmp, self.config, name="security-gate")
        self.port = self.gate.port
        self._tokens: dict[str, str] = {}

    def token(self, entity: str) -> str:
        if entity not in self._tokens:
            self._tokens[entity] = self.keys.token(entity)
        return self._tokens[entity]

    def auth(self, entity: str = "frontier-labs", ip: str = US_IP) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.token(entity)}"), ("X-Forwarded-For", ip)]

    def submit_bytes(
        self,
        body: bytes | None = None,
        *,
        entity: str = "frontier-labs",
        ip: str = US_IP,
        extra: list[tuple[str, str]] | None = None,
        ctype: str = "application/json",
    ) -> bytes:
        payload = json.dumps(slurm_job()).encode() if body is None else body
        headers = [*self.auth(entity, ip), ("Content-Type", ctype), *(extra or [])]
        return request_bytes("POST", SUBMIT, headers=headers, body=payload)

    def exchange(self, data: bytes | list[bytes], **kw: Any) -> Exchange:
        return exchange(self.port, data, **kw)

    def seen(self) -> list[dict[str, Any]]:
        return self.upstream.seen()

    def records(self) -> dict[str, dict[str, Any]]:
        """Decision records by id (outcome lines and seals skipped)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.audit_path.exists():
            return out
        for line in self.audit_path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("type") is None and "decision_id" in rec:
                out[rec["decision_id"]] = rec
        return out

    def check_invariant(self) -> int:
        """Assert the forwarding invariant over everything the upstream saw; returns the count."""
        return check_forwarded(self.seen(), self.records())

    def stop(self) -> None:
        self.gate.stop()
        self.upstream.stop()


def check_forwarded(seen: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> int:
    ids: set[str] = set()
    for req in seen:
        # "_" counts as "-": CGI/WSGI upstreams read X_Gatekeeper_Tenant as X-Gatekeeper-Tenant
        names = [k.lower().replace("_", "-") for k, _ in req["headers"]]
        gk = {k.lower(): v for k, v in req["headers"] if k.lower().startswith("x-gatekeeper-")}
        where = f"{req['method']} {req['path']}"
        stray = [n for n in names if n.startswith("x-gatekeeper-") and n not in GATE_HEADERS]
        assert not stray, f"client X-Gatekeeper-* header reached the upstream: {stray} ({where})"
        for name in GATE_HEADERS:
            assert names.count(name) <= 1, f"{name} twice upstream ({where})"
        did = gk.get("x-gatekeeper-decision-id")
        assert did, f"request without a decision id reached the upstream: {where}"
        assert did not in ids, f"decision {did} reached the upstream twice"
        ids.add(did)
        rec = records.get(did)
        assert rec is not None, f"decision {did} ({where}) has no audit record"
        assert rec["http"]["method"] == req["method"], (rec["http"], where)
        assert rec["http"]["path"] == req["path"].split("?", 1)[0], (rec["http"], where)
        decision = rec["decision"]
        assert decision["action"] == "allow" or decision["enforced"] is False, (decision, where)
        principal = rec.get("principal") or {}
        assert gk.get("x-gatekeeper-tenant") == principal.get("tenant"), (gk, principal, where)
        assert gk.get("x-gatekeeper-entity") == principal.get("entity"), (gk, principal, where)
    return len(seen)
