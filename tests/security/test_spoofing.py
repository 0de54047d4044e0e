"""Identity spoofing attempts: client-supplied ``X-Gatekeeper-*`` headers in
every spelling, client-address headers, and forged identities next to a valid token. What reached
the upstream is scanned here and again, for the whole folder, by ``test_zz_spoofing.py``.
"""

from __future__ import annotations

import json
import time

from tests.security.harness import SUBMIT, US_IP, SecGate, request_bytes, slurm_job

SPOOF = [
    ("X-Gatekeeper-Tenant", "evil-tenant"),
    ("x-gatekeeper-entity", "frontier-labs"),
    ("X-GATEKEEPER-DECISION-ID", "01AAAAAAAAAAAAAAAAAAAAAAAA"),
    ("X-Gatekeeper-Decision-Id", "01BBBBBBBBBBBBBBBBBBBBBBBB"),
    ("X_Gatekeeper_Tenant", "underscore-tenant"),
    ("X-Gatekeeper_Entity", "mixed-entity"),
    ("x_gatekeeper-decision-id", "01CCCCCCCCCCCCCCCCCCCCCCCC"),
    ("X-Gatekeeper-Approved", "true"),
    ("X-Gatekeeper-Purpose", "weather-forecasting"),
]
ADDRESS = [
    ("X-Real-IP", "10.0.0.1"),
    ("True-Client-IP", "10.0.0.2"),
    ("X-Client-IP", "10.0.0.3"),
    ("CF-Connecting-IP", "10.0.0.4"),
    ("X-Forwarded-Host", "admin.internal"),
    ("X-Forwarded-Proto", "https"),
    ("Forwarded", "for=10.0.0.5;proto=https"),
]


def _headers(echo: dict[str, object]) -> list[tuple[str, str]]:
    return [(str(k), str(v)) for k, v in echo["header_list"]]  # type: ignore[attr-defined]


def test_spoofed_gate_headers_never_reach_the_upstream(secgate: SecGate) -> None:
    job = json.dumps(slurm_job()).encode()
    sent = [
        request_bytes(
            "POST", SUBMIT, headers=[*secgate.auth("fjord-research", "84.208.20.110"),
                                     ("Content-Type", "application/json"), *SPOOF, *ADDRESS],
            body=job,
        ),
        request_bytes("GET", "/open/spoof", headers=[("X-Forwarded-For", US_IP), *SPOOF, *ADDRESS]),
        request_bytes("GET", "/slurm/v0.0.41/jobs", headers=[*secgate.auth(), *SPOOF, *ADDRESS]),
    ]  # fmt: skip
    ex = secgate.exchange(b"".join(sent), expect=3)
    assert ex.statuses == [200, 200, 200]
    expected = [("fjord-research", "fjord-research"), (None, None),
                ("frontier-labs", "frontier-labs")]  # fmt: skip
    for resp, (tenant, entity) in zip(ex.responses, expected, strict=True):
        headers = _headers(resp.json())
        lower = [(k.lower().replace("_", "-"), v) for k, v in headers]
        gate = [(k, v) for k, v in lower if k.startswith("x-gatekeeper-")]
        did = resp.header("X-Gatekeeper-Decision-Id")
        want = [("x-gatekeeper-decision-id", did)]
        want += [("x-gatekeeper-tenant", tenant)] if tenant else []
        want += [("x-gatekeeper-entity", entity)] if entity else []
        assert sorted(gate) == sorted(want), gate
        names = {k for k, _ in lower}
        assert not names & {k.lower() for k, _ in ADDRESS} - {"x-forwarded-proto"}
        assert dict(lower)["x-forwarded-for"] == (
            "84.208.20.110" if tenant == "fjord-research" else US_IP
        )
        assert dict(lower)["x-forwarded-proto"] == "http"  # the gate's, not the client's
    time.sleep(0.05)
    secgate.check_invariant()


def test_purpose_header_is_read_but_not_forwarded(secgate: SecGate) -> None:
    """A self-declared purpose can only tighten a decision: a WMD end use is denied (451)."""
    job = json.dumps(slurm_job()).encode()
    ex = secgate.exchange(
        request_bytes(
            "POST", SUBMIT, headers=[*secgate.auth(), ("Content-Type", "application/json"),
                                     ("X-Gatekeeper-Purpose", "nuclear-weapons")], body=job,
        ),
        expect=1,
    )  # fmt: skip
    assert ex.statuses == [451], ex.responses[0].body[:300]


def test_token_of_one_tenant_with_anothers_headers_acts_as_the_token(secgate: SecGate) -> None:
    """A valid token for acme-sg plus forged frontier-labs identity headers is still acme-sg:
    a licence is required (451), nothing is forwarded."""
    job = json.dumps(slurm_job(gpus=64)).encode()
    before = len(secgate.seen())
    ex = secgate.exchange(
        request_bytes(
            "POST", SUBMIT,
            headers=[*secgate.auth("acme-sg", US_IP), ("Content-Type", "application/json"),
                     ("X-Gatekeeper-Tenant", "frontier-labs"),
                     ("X-Gatekeeper-Entity", "frontier-labs")],
            body=job,
        ),
        expect=1,
    )  # fmt: skip
    assert ex.statuses == [451]
    rec = secgate.records()[ex.responses[0].header("X-Gatekeeper-Decision-Id") or ""]
    assert rec["principal"]["entity"] == "acme-sg"
    time.sleep(0.05)
    assert secgate.seen()[before:] == []
