"""Declared purpose through a real ``gatekeeper serve``: the token's claim stands, the client's
``X-Gatekeeper-Purpose`` header can only add a purpose, and a repeated header is refused (400).

The gate is the security suite's (us-remote-access pack, real JWKS, recording upstream); tokens
carrying a ``purpose`` claim are signed here with the same demo key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from gatekeeper.demo import AUDIENCE, ISSUER, KID
from tests.security.harness import SUBMIT, US_IP, SecGate, request_bytes, slurm_job


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecGate]:
    g = SecGate(tmp_path_factory.mktemp("purpose"))
    try:
        yield g
    finally:
        g.stop()


def _token(gate: SecGate, purpose: str | None) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user@frontier-labs",
        "org_id": "frontier-labs",
        "entity_id": "frontier-labs",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    if purpose is not None:
        claims["purpose"] = purpose
    return jwt.encode(claims, gate.keys.rsa, algorithm="RS256", headers={"kid": KID})


def _submit(
    gate: SecGate, claim: str | None, headers: list[tuple[str, str]]
) -> tuple[int, dict[str, Any]]:
    job = json.dumps(slurm_job()).encode()
    sent = request_bytes(
        "POST",
        SUBMIT,
        headers=[
            ("Authorization", f"Bearer {_token(gate, claim)}"),
            ("X-Forwarded-For", US_IP),
            ("Content-Type", "application/json"),
            *headers,
        ],
        body=job,
    )
    ex = gate.exchange(sent, expect=1)
    resp = ex.responses[0]
    did = resp.header("X-Gatekeeper-Decision-Id") or ""
    deadline = time.monotonic() + 10
    while did not in gate.records() and time.monotonic() < deadline:
        time.sleep(0.05)
    return ex.statuses[0], gate.records()[did]


@pytest.mark.parametrize(
    "header",
    [[], [("X-Gatekeeper-Purpose", "research")], [("X-Gatekeeper-Purpose", "")]],
    ids=["no-header", "research-header", "empty-header"],
)
def test_prohibited_claim_is_refused_whatever_the_header_says(
    gate: SecGate, header: list[tuple[str, str]]
) -> None:
    before = len(gate.seen())
    status, rec = _submit(gate, "nuclear-weapons", header)
    assert status == 451
    assert rec["decision"]["rule"] == "wmd-end-use"
    assert gate.seen()[before:] == []


def test_header_adds_a_prohibited_purpose_to_an_ordinary_claim(gate: SecGate) -> None:
    status, rec = _submit(gate, "research", [("X-Gatekeeper-Purpose", "research, Offensive-Cyber")])
    assert (status, rec["decision"]["rule"]) == (451, "wmd-end-use")


@pytest.mark.parametrize("name", ["X_Gatekeeper_Purpose", "x-gatekeeper_purpose"])
def test_an_underscore_spelling_is_read_as_the_purpose_header(gate: SecGate, name: str) -> None:
    # The edge strips every spelling of a gate header; one it stripped unread would be a
    # declared prohibited purpose the decision never saw.
    before = len(gate.seen())
    status, rec = _submit(gate, "research", [(name, "offensive-cyber")])
    assert (status, rec["decision"]["rule"]) == (451, "wmd-end-use")
    assert gate.seen()[before:] == []


def test_two_spellings_of_the_purpose_header_are_a_repeat(gate: SecGate) -> None:
    status, rec = _submit(
        gate,
        "research",
        [("X-Gatekeeper-Purpose", "research"), ("X_Gatekeeper_Purpose", "offensive-cyber")],
    )
    assert (status, rec["decision"]["reasons"]) == (400, ["purpose-repeated"])


def test_repeated_purpose_headers_are_refused_and_audited(gate: SecGate) -> None:
    before = len(gate.seen())
    status, rec = _submit(
        gate,
        "research",
        [("X-Gatekeeper-Purpose", "research"), ("X-Gatekeeper-Purpose", "protein-folding")],
    )
    assert status == 400
    assert rec["http"]["status"] == 400
    assert rec["decision"]["reasons"] == ["purpose-repeated"]
    assert gate.seen()[before:] == []


def test_ordinary_claim_and_header_are_forwarded_without_the_header(gate: SecGate) -> None:
    before = len(gate.seen())
    status, rec = _submit(gate, "research", [("X-Gatekeeper-Purpose", "protein-folding")])
    assert status == 200, rec
    assert rec["decision"]["action"] == "allow"
    forwarded = gate.seen()[before:]
    assert len(forwarded) == 1
    names = {str(k).lower() for k, _ in forwarded[0]["headers"]}
    assert "x-gatekeeper-purpose" not in names
    gate.check_invariant()
