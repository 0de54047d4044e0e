"""``gatekeeper check`` decides exactly as a real ``gatekeeper serve`` does, on hostile input too.

The same requests go to the running gate over raw sockets (its decision read back from the audit
record) and to ``check``'s ``decide_offline`` on the same configuration; action, rule, reasons
and, for a refusal, the status must be equal. The inputs are the ones a live-only check would
let through: override headers in underscore spelling, ``_method`` query variants, an encoded or
oversized body on a measured route, a bad path, no route, a spoofed gate header.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from gatekeeper.check import decide_offline
from gatekeeper.config import load_config
from gatekeeper.runtime import Runtime
from tests.security.harness import NO_IP, SUBMIT, US_IP, SecGate, request_bytes, slurm_job

JOB = json.dumps(slurm_job()).encode()


def _cases(secgate: SecGate) -> list[tuple[str, str, str, list[tuple[str, str]], bytes]]:
    """(name, method, target, headers, body)."""
    auth = secgate.auth()
    json_type = ("Content-Type", "application/json")
    return [
        ("underscore method override", "GET", "/slurm/v0.0.41/jobs",
         [*auth, ("X_HTTP_Method_Override", "POST")], JOB),
        ("underscore url override", "GET", "/slurm/v0.0.41/jobs",
         [*auth, ("X_Original_URL", SUBMIT)], b""),
        ("dash override", "GET", "/slurm/v0.0.41/jobs", [*auth, ("X-HTTP-Method", "POST")], b""),
        ("_method[] param", "GET", "/slurm/v0.0.41/jobs?_method[]=POST", auth, b""),
        ("encoded body", "POST", SUBMIT, [*auth, json_type, ("Content-Encoding", "gzip")], JOB),
        ("oversized body", "POST", SUBMIT, [*auth, json_type], b" " * 70000 + JOB),
        ("bad path", "GET", "/open/a%2", [("X-Forwarded-For", US_IP)], b""),
        ("dot segments", "GET", "/open/%2e%2e/slurm/v0.0.41/jobs", [("X-Forwarded-For", US_IP)],
         b""),
        ("no route", "DELETE", "/nowhere", [("X-Forwarded-For", US_IP)], b""),
        ("spoofed tenant", "GET", "/open/x",
         [("X-Forwarded-For", US_IP), ("X-Gatekeeper-Tenant", "evil")], b""),
        ("no token", "POST", SUBMIT, [("X-Forwarded-For", US_IP), json_type], JOB),
        ("embargoed ip", "POST", SUBMIT, [*secgate.auth(ip=NO_IP), json_type], JOB),
        ("allowed submit", "POST", SUBMIT, [*auth, json_type], JOB),
    ]  # fmt: skip


def _live(secgate: SecGate, method: str, target: str, headers: list[tuple[str, str]],
          body: bytes) -> dict[str, Any]:  # fmt: skip
    ex = secgate.exchange(request_bytes(method, target, headers=headers, body=body), expect=1)
    assert len(ex.statuses) == 1, (ex.statuses, ex.rest[:200])
    decision_id = ex.responses[0].header("X-Gatekeeper-Decision-Id")
    assert decision_id
    deadline = time.monotonic() + 30
    while (record := secgate.records().get(decision_id)) is None:
        assert time.monotonic() < deadline, f"no audit record for {decision_id}"
        time.sleep(0.05)
    decision = record["decision"]
    # The decision record is written before the act: its status is the gate's own refusal, or
    # None when the request was forwarded (the upstream's answer is on the outcome line).
    status = record["http"]["status"]
    assert status is None or status == ex.statuses[0]
    return {
        "action": decision["action"],
        "rule": decision["rule"],
        "reasons": decision["reasons"],
        "status": status,
    }


def _payload(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes
) -> dict[str, Any]:
    values: dict[str, list[str]] = {}
    for k, v in headers:
        values.setdefault(k, []).append(v)
    return {"method": method, "path": target, "headers": values, "client_ip": "127.0.0.1",
            "body_text": body.decode()}  # fmt: skip


async def _offline(config: str, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    runtime = Runtime(load_config(config))
    await runtime.start(with_audit=False)
    try:
        outs = [await decide_offline(runtime, p, consume=False) for p in payloads]
    finally:
        await runtime.close()
    return [{k: out[k] for k in ("action", "rule", "reasons", "status")} for out in outs]


def test_check_decides_hostile_input_as_serve_does(secgate: SecGate) -> None:
    cases = _cases(secgate)
    live = [_live(secgate, m, t, h, b) for _, m, t, h, b in cases]
    offline = asyncio.run(
        _offline(str(secgate.gate.path), [_payload(m, t, h, b) for _, m, t, h, b in cases])
    )
    for (name, *_), got, want in zip(cases, offline, live, strict=True):
        assert got == want, name
    statuses = [w["status"] for w in live]
    # Refusals at intake and in the pipeline, and one allow, all among the cases.
    assert {400, 404, 413}.issubset(statuses) and statuses[-1] is None
