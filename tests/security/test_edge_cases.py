"""Two HTTP edge cases tried as an attacker would, on a real ``gatekeeper serve`` over raw sockets.

* A request pipelined behind a non-WebSocket ``Upgrade`` (``h2c``) request: the upgrade request is
  answered (forwarded without its hop-by-hop upgrade headers) and audited, and its answer closes
  the connection, so the request behind it is refused, never forwarded unseen or left hanging.
* Method and path overrides in the spellings a framework may read as the dash form: header names
  with underscores (CGI/WSGI map ``-`` and ``_`` to one variable) and ``_method`` query names with
  an array suffix: refused like the dash forms, audited, nothing forwarded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.security.harness import US_IP, SecGate, request_bytes, slurm_job


@pytest.fixture(autouse=True)
def invariant(secgate: SecGate) -> Iterator[None]:
    yield
    time.sleep(0.05)
    secgate.check_invariant()


H2C = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
       ("HTTP2-Settings", "AAMAAABkAAQAAP__"), ("X-Forwarded-For", US_IP)]  # fmt: skip


@pytest.mark.parametrize("writes", [1, 2], ids=["one-write", "two-writes"])
def test_a_request_pipelined_behind_h2c_is_refused_not_lost(secgate: SecGate, writes: int) -> None:
    before = len(secgate.seen())
    first = request_bytes("GET", "/open/h2c", headers=H2C)
    second = request_bytes(
        "GET", "/open/behind", headers=[("X-Forwarded-For", US_IP), ("X-Gatekeeper-Tenant", "evil")]
    )
    data: bytes | list[bytes] = first + second if writes == 1 else [first, second]
    ex = secgate.exchange(data, timeout=8, pause=0.3)
    # The h2c request is answered, with "Connection: close": the connection ends with it.
    assert ex.statuses == [200], (ex.statuses, ex.rest[:200])
    resp = ex.responses[0]
    assert resp.header("Connection") == "close"
    assert ex.closed
    decision_id = resp.header("X-Gatekeeper-Decision-Id")
    assert decision_id
    # ... and audited, as the request the gate forwarded.
    record = secgate.records()[decision_id]
    assert record["http"]["path"] == "/open/h2c"
    time.sleep(0.05)
    seen = secgate.seen()[before:]
    assert [r["path"] for r in seen] == ["/open/h2c"]  # the one behind never reached the upstream
    headers = {k.lower() for k, _ in seen[0]["headers"]}
    assert not headers & {"upgrade", "http2-settings", "connection"}


UNDERSCORE = ["X_HTTP_Method_Override", "X_HTTP_Method", "X_Method_Override", "X_Original_URL",
              "X_Rewrite_URL", "x-http_method-override", "X_HTTP-Method-Override"]  # fmt: skip


@pytest.mark.parametrize("name", UNDERSCORE)
def test_underscore_override_headers_are_refused(secgate: SecGate, name: str) -> None:
    job = json.dumps(slurm_job(gpus=64)).encode()
    value = "/slurm/v0.0.41/job/submit" if "url" in name.lower() else "POST"
    before = len(secgate.seen())
    raw = request_bytes(
        "GET", "/slurm/v0.0.41/jobs", headers=[*secgate.auth(), (name, value)], body=job
    )
    ex = secgate.exchange(raw, expect=1)
    assert ex.statuses == [400]
    problem = ex.responses[0].json()
    assert problem["type"] == "urn:gatekeeper:problem:override-header"
    record = secgate.records()[problem["decision_id"]]
    assert record["http"]["method"] == "GET"
    assert "override-header" in record["decision"]["reasons"]
    time.sleep(0.05)
    assert secgate.seen()[before:] == []


@pytest.mark.parametrize(
    "query",
    ["?_method[]=POST", "?_method[0]=POST", "?_METHOD[]=POST", "?%5Fmethod%5B%5D=POST",
     "?_method%5B%5D=POST", "?a=1&_method[x]=POST", "?+_method=POST"],
)  # fmt: skip
def test_method_override_param_variants_are_refused(secgate: SecGate, query: str) -> None:
    job = json.dumps(slurm_job(gpus=64)).encode()
    before = len(secgate.seen())
    raw = request_bytes("GET", "/slurm/v0.0.41/jobs" + query, headers=secgate.auth(), body=job)
    ex = secgate.exchange(raw, expect=1)
    assert ex.statuses == [400]
    problem = ex.responses[0].json()
    assert problem["type"] == "urn:gatekeeper:problem:override-param"
    assert problem["decision_id"] in secgate.records()
    time.sleep(0.05)
    assert secgate.seen()[before:] == []
