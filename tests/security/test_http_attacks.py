"""HTTP-level attacks on a real ``gatekeeper serve`` over raw sockets.

Every case either gets one clean 4xx (problem+json, with a decision id, connection closed when the
framing is broken) or is processed as exactly the request(s) the gate decided on. After each test
the forwarding invariant (tests/security/harness.py) is checked over everything the upstream saw.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from gatekeeper.config import load_config
from gatekeeper.demo import DemoKeys, write_config
from gatekeeper.proxy.routing import Router
from tests.security.harness import (
    HEADER_TIMEOUT_S,
    K8S_JOBS,
    KEEPALIVE_TIMEOUT_S,
    NO_IP,
    SUBMIT,
    US_IP,
    Exchange,
    SecGate,
    request_bytes,
    slurm_job,
)

HOST = b"Host: gate.test\r\nX-Forwarded-For: 8.8.8.8\r\n"
# A complete request hidden where a desynchronised parser would see a second request.
SMUGGLED = b"GET /open/smuggled HTTP/1.1\r\nHost: x\r\nX-Gatekeeper-Tenant: evil\r\n\r\n"


@pytest.fixture(autouse=True)
def invariant(secgate: SecGate) -> Iterator[None]:
    yield
    time.sleep(0.05)  # the upstream's log line is written before it answers; the audit too
    secgate.check_invariant()


def _post(
    headers: bytes, body: bytes, target: bytes = b"/open/a", version: bytes = b"1.1"
) -> bytes:
    return b"POST " + target + b" HTTP/" + version + b"\r\n" + HOST + headers + b"\r\n" + body


def _assert_problem(ex: Exchange, status: int, reason: str | None = None) -> None:
    assert ex.statuses == [status], (ex.statuses, ex.rest[:200])
    resp = ex.responses[0]
    assert resp.header("Content-Type") == "application/problem+json"
    assert resp.header("X-Gatekeeper-Decision-Id")
    problem = resp.json()
    assert problem["status"] == status
    assert problem["decision_id"] == resp.header("X-Gatekeeper-Decision-Id")
    if reason is not None:
        assert problem["type"] == f"urn:gatekeeper:problem:{reason}", problem


# (name, raw request, status, reason): the parser refuses the framing; nothing is forwarded.
REFUSED: list[tuple[str, bytes, int, str]] = [
    ("CL.TE", _post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
     400, "bad-http"),
    ("TE.CL", _post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                    b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"), 400, "bad-http"),
    ("TE xchunked + CL", _post(b"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n",
                               b"0\r\n\r\n" + SMUGGLED), 400, "bad-http"),
    ("TE xchunked", _post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + SMUGGLED),
     400, "bad-http"),
    ("TE chunked, identity", _post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
     400, "bad-http"),
    ("TE twice", _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                       b"0\r\n\r\n"), 400, "bad-http"),
    ("TE chunked + identity headers",
     _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", b"0\r\n\r\n"),
     400, "bad-http"),
    ("TE name+space", _post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), 400, "bad-http"),
    ("TE name+tab", _post(b"Transfer-Encoding\t: chunked\r\n", b"0\r\n\r\n"), 400, "bad-http"),
    ("TE leading space (fold)", _post(b"X-A: 1\r\n Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
     400, "bad-http"),
    ("CL twice same", _post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"),
     400, "bad-http"),
    ("CL twice different", _post(b"Content-Length: 3\r\nContent-Length: 70\r\n",
                                 b"abc" + SMUGGLED), 400, "bad-http"),
    ("CL list", _post(b"Content-Length: 3, 3\r\n", b"abc"), 400, "bad-http"),
    ("CL +3", _post(b"Content-Length: +3\r\n", b"abc"), 400, "bad-http"),
    ("CL -1", _post(b"Content-Length: -1\r\n", b"abc"), 400, "bad-http"),
    ("CL hex", _post(b"Content-Length: 0x3\r\n", b"abc"), 400, "bad-http"),
    ("obs-fold", b"GET /open/a HTTP/1.1\r\n" + HOST + b"X-Foo: a\r\n bar\r\n\r\n", 400, "bad-http"),
    ("obs-fold tab", b"GET /open/a HTTP/1.1\r\n" + HOST + b"X-Foo: a\r\n\tX-Gatekeeper-Tenant: e\r\n\r\n",
     400, "bad-http"),
    ("CR injection", b"GET /open/a HTTP/1.1\r\n" + HOST + b"X-Foo: a\rX-Gatekeeper-Tenant: evil\r\n\r\n",
     400, "bad-http"),
    ("LF injection", b"GET /open/a HTTP/1.1\r\n" + HOST + b"X-Foo: a\nX-Gatekeeper-Tenant: evil\r\n\r\n",
     400, "bad-http"),
    ("bare LF request", b"GET /open/a HTTP/1.1\nHost: gate.test\nX-Forwarded-For: 8.8.8.8\n\n",
     400, "bad-http"),
    ("NUL in value", b"GET /open/a HTTP/1.1\r\n" + HOST + b"X-Foo: a\x00b\r\n\r\n", 400, "bad-http"),
    ("space before colon", b"GET /open/a HTTP/1.1\r\n" + HOST + b"X-Gatekeeper-Tenant : evil\r\n\r\n",
     400, "bad-http"),
    ("two Host", b"GET /open/a HTTP/1.1\r\n" + HOST + b"Host: other\r\n\r\n", 400, "bad-http"),
    ("no Host (1.1)", b"GET /open/a HTTP/1.1\r\nX-Forwarded-For: 8.8.8.8\r\n\r\n", 400, "bad-http"),
    ("HTTP/1.2", b"GET /open/a HTTP/1.2\r\n" + HOST + b"\r\n", 400, "bad-http"),
    ("lower-case method", b"get /open/a HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad-http"),
    ("control in method", b"G\x01T /open/a HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad-http"),
    ("bad chunk size", _post(b"Transfer-Encoding: chunked\r\n", b"3x\r\nabc\r\n0\r\n\r\n"),
     400, "bad-http"),
    ("chunk LF only", _post(b"Transfer-Encoding: chunked\r\n", b"3\nabc\n0\n\n"), 400, "bad-http"),
    ("request line > limit", b"GET /open/" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
     431, "header-too-large"),
    ("header field > limit", b"GET /open/a HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n",
     431, "header-too-large"),
    ("too many headers", b"GET /open/a HTTP/1.1\r\n" + HOST
     + b"".join(b"X-H%d: 1\r\n" % i for i in range(300)) + b"\r\n", 431, "header-too-large"),
    ("absolute-form", b"GET http://evil.test/open/a HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad-path"),
    ("authority-form", b"CONNECT evil.test:443 HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad-path"),
    ("asterisk-form", b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad-path"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "raw", "status", "reason"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_framing(secgate: SecGate, name: str, raw: bytes, status: int, reason: str) -> None:
    before = len(secgate.seen())
    ex = secgate.exchange(raw, timeout=10, expect=1 if reason == "bad-path" else None)
    _assert_problem(ex, status, reason)
    if reason != "bad-path":
        # SECURITY: after a framing error the stream is not trusted: closed, nothing follows.
        assert ex.closed
        assert ex.rest == b""
    time.sleep(0.05)
    assert secgate.seen()[before:] == [], f"{name} reached the upstream"


def test_absolute_form_submit_is_refused_and_audited(secgate: SecGate) -> None:
    job = json.dumps(slurm_job()).encode()
    raw = request_bytes("POST", "http://gate.test" + SUBMIT, headers=secgate.auth(), body=job)
    ex = secgate.exchange(raw, expect=1)
    _assert_problem(ex, 400, "bad-path")
    rec = secgate.records()[ex.responses[0].header("X-Gatekeeper-Decision-Id") or ""]
    assert rec["http"]["status"] == 400


def _echo(ex: Exchange, i: int = 0) -> dict[str, object]:
    resp = ex.responses[i]
    assert resp.status == 200, resp.body[:300]
    body: dict[str, object] = resp.json()
    return body


def test_tolerated_transfer_encodings_are_one_request(secgate: SecGate) -> None:
    """Spellings the parser accepts are decoded once, measured, and re-framed upstream."""
    job = json.dumps(slurm_job()).encode()
    chunked = b"%x\r\n" % len(job) + job + b"\r\n0\r\nX-Gatekeeper-Tenant: evil\r\n\r\n"
    auth = b"".join(f"{k}: {v}\r\n".encode() for k, v in secgate.auth())
    for te in (b"chunked", b"CHUNKED", b"\tchunked", b"identity, chunked"):
        before = len(secgate.seen())
        raw = _post(
            auth + b"Content-Type: application/json\r\nTransfer-Encoding: " + te + b"\r\n",
            chunked,
            target=SUBMIT.encode(),
        )
        ex = secgate.exchange(raw + SMUGGLED, expect=2)
        echo = _echo(ex)
        # the upstream got exactly the decoded body, with a length, no TE and no trailer
        assert echo["body"] == job.decode()
        headers = {str(k).lower(): v for k, v in echo["header_list"]}  # type: ignore[union-attr]
        assert headers["content-length"] == str(len(job))
        assert "transfer-encoding" not in headers
        assert headers["x-gatekeeper-tenant"] == "frontier-labs"
        # what followed is a request of its own, decided on its own (anonymous, no tenant)
        second = _echo(ex, 1)
        assert second["path"] == "/open/smuggled"
        assert ex.responses[1].header("X-Gatekeeper-Decision-Id") != ex.responses[0].header(
            "X-Gatekeeper-Decision-Id"
        )
        assert [r["path"] for r in secgate.seen()[before:]] == [SUBMIT, "/open/smuggled"]


def test_http10_and_version_less_requests(secgate: SecGate) -> None:
    ex = secgate.exchange(b"GET /open/v10 HTTP/1.0\r\nX-Forwarded-For: 8.8.8.8\r\n\r\n")
    assert ex.statuses == [200] and ex.closed
    assert ex.responses[0].header("X-Gatekeeper-Decision-Id")
    # HTTP/1.0 keep-alive: two requests, two decisions
    ex = secgate.exchange(
        b"GET /open/k1 HTTP/1.0\r\n" + HOST + b"Connection: keep-alive\r\n\r\n"
        b"GET /open/k2 HTTP/1.0\r\n" + HOST + b"\r\n",
        timeout=10,
    )
    assert ex.statuses == [200, 200]
    assert [_echo(ex, i)["path"] for i in (0, 1)] == ["/open/k1", "/open/k2"]
    # an HTTP/1.0 compute submission is measured like any other
    job = json.dumps(slurm_job(gpus=8)).encode()
    ex = secgate.exchange(
        request_bytes(
            "POST", SUBMIT, headers=[*secgate.auth(), ("Content-Type", "application/json")],
            body=job, version="HTTP/1.0",
        )
    )  # fmt: skip
    assert ex.statuses == [200]
    rec = secgate.records()[ex.responses[0].header("X-Gatekeeper-Decision-Id") or ""]
    assert rec["compute"]["gpus"] == 8.0


def test_pipelined_mixed_identities_each_get_their_own_decision(secgate: SecGate) -> None:
    job = json.dumps(slurm_job(gpus=8)).encode()
    ct = [("Content-Type", "application/json")]

    def submit(entity: str | None, ip: str) -> bytes:
        headers = [*secgate.auth(entity, ip)] if entity else [("X-Forwarded-For", ip)]
        return request_bytes("POST", SUBMIT, headers=headers + ct, body=job)

    # (bytes, status, tenant forwarded or None when blocked)
    plan: list[tuple[bytes, int, str | None]] = [
        (submit("frontier-labs", US_IP), 200, "frontier-labs"),
        (submit("fjord-research", NO_IP), 200, "fjord-research"),
        (submit("acme-sg", "165.21.83.88"), 451, None),  # D:5 parent: licence required
        (submit("ghost-co", US_IP), 403, None),  # unknown to the registry
        (submit(None, US_IP), 401, None),  # no token
        (request_bytes("POST", "/slurm/%2e%2e%2fx", headers=secgate.auth() + ct, body=job),
         400, None),
        (request_bytes("GET", "/open/anon", headers=[("X-Forwarded-For", US_IP)]), 200, None),
        (submit("frontier-labs", "5.62.60.1"), 451, None),  # the same lab over a VPN
        (submit("frontier-labs", US_IP), 200, "frontier-labs"),
    ]  # fmt: skip
    before = len(secgate.seen())
    ex = secgate.exchange(b"".join(p[0] for p in plan), expect=len(plan), timeout=10)
    assert ex.statuses == [p[1] for p in plan]
    ids = [r.header("X-Gatekeeper-Decision-Id") for r in ex.responses]
    assert len(set(ids)) == len(plan) and all(ids)
    records = secgate.records()
    for (_, status, tenant), did in zip(plan, ids, strict=True):
        rec = records[did or ""]
        # a forwarded request's record is written before the upstream answers (no status yet)
        assert rec["http"]["status"] in (0, None, status)
        if tenant:
            assert rec["principal"]["tenant"] == tenant
    forwarded = secgate.seen()[before:]
    got = [
        ({k.lower(): v for k, v in r["headers"]}.get("x-gatekeeper-tenant"), r["path"])
        for r in forwarded
    ]
    assert got == [
        ("frontier-labs", SUBMIT),
        ("fjord-research", SUBMIT),
        (None, "/open/anon"),
        ("frontier-labs", SUBMIT),
    ]


@pytest.mark.parametrize(
    "name",
    ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X-Original-URL",
     "X-Rewrite-URL", "x-http-method-override"],
)  # fmt: skip
def test_method_and_path_override_headers_are_refused(secgate: SecGate, name: str) -> None:
    """A GET to the read route with an override and a job body must not become an unmeasured
    submission at an upstream that honours the override."""
    job = json.dumps(slurm_job(gpus=64)).encode()
    value = SUBMIT if "url" in name.lower() else "POST"
    before = len(secgate.seen())
    raw = request_bytes(
        "GET", "/slurm/v0.0.41/jobs", headers=[*secgate.auth(), (name, value)], body=job
    )
    ex = secgate.exchange(raw, expect=1)
    _assert_problem(ex, 400, "override-header")
    rec = secgate.records()[ex.responses[0].header("X-Gatekeeper-Decision-Id") or ""]
    assert rec["http"]["method"] == "GET"  # the decision is about the real method
    time.sleep(0.05)
    assert secgate.seen()[before:] == []


@pytest.mark.parametrize(
    "query", ["?_method=POST", "?a=1&_method=POST", "?%5Fmethod=POST", "?_Method=POST",
              "?_%6Dethod=POST", "?_method"],
)  # fmt: skip
def test_method_override_query_parameter_is_refused(secgate: SecGate, query: str) -> None:
    """The same override as a query parameter (Symfony reads it there; Express can be set to):
    refused however it is spelled, and nothing reaches the upstream."""
    job = json.dumps(slurm_job(gpus=64)).encode()
    before = len(secgate.seen())
    raw = request_bytes("GET", "/slurm/v0.0.41/jobs" + query, headers=secgate.auth(), body=job)
    ex = secgate.exchange(raw, expect=1)
    _assert_problem(ex, 400, "override-param")
    time.sleep(0.05)
    assert secgate.seen()[before:] == []


def test_a_query_that_only_looks_like_an_override_is_forwarded(secgate: SecGate) -> None:
    before = len(secgate.seen())
    path = "/slurm/v0.0.41/jobs?methods=all&x_method=1&update_time=5%25"
    ex = secgate.exchange(request_bytes("GET", path, headers=secgate.auth()), expect=1)
    assert ex.statuses == [200]
    time.sleep(0.05)
    assert len(secgate.seen()) == before + 1


def test_every_write_method_on_slurm_is_measured(secgate: SecGate) -> None:
    """The decision is about the real method and path: PUT, a trailing slash or a job update path
    reach the measuring route; other methods have no route at all."""
    big = json.dumps(slurm_job(gpus=64)).encode()
    for method, path in (("PUT", SUBMIT + "/"), ("PATCH", "/slurm/v0.0.41/job/submit")):
        ex = secgate.exchange(
            request_bytes(method, path, headers=secgate.auth("acme-sg", "165.21.83.88"), body=big),
            expect=1,
        )
        _assert_problem(ex, 451)
        rec = secgate.records()[ex.responses[0].header("X-Gatekeeper-Decision-Id") or ""]
        assert rec["http"]["route"] == "slurm-submit" and rec["compute"]["gpus"] == 64.0
    # A job update is measured as the job it produces: a submission's body is no job
    # description, and the current job is not known without an inventory, so it is refused.
    ex = secgate.exchange(
        request_bytes(
            "POST",
            "/slurm/v0.0.41/job/12345",
            headers=secgate.auth("acme-sg", "165.21.83.88"),
            body=big,
        ),
        expect=1,
    )
    _assert_problem(ex, 400, "unmeasurable-request")
    rec = secgate.records()[ex.responses[0].header("X-Gatekeeper-Decision-Id") or ""]
    assert rec["http"]["route"] == "slurm-submit"
    ex = secgate.exchange(
        request_bytes("DELETE", "/slurm/v0.0.41/job/1", headers=secgate.auth()), expect=1
    )
    _assert_problem(ex, 404, "no-route")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_demo_config_sends_every_slurm_write_to_the_adapter(tmp_path: object, method: str) -> None:
    """The shipped demo config must not let a write fall through to the unmeasured read route."""
    from pathlib import Path

    out = Path(str(tmp_path))
    cfg = load_config(
        str(write_config(out, DemoKeys(out), port=1, admin=2, scheduler="http://127.0.0.1:9"))
    )
    router = Router(cfg.routes)
    for path in (SUBMIT, SUBMIT + "/", "/slurm/v0.0.41/job/7", "/slurm/v0.0.41/job/allocate"):
        route = router.match(method, path)
        assert route is None or route.adapter != "none", (method, path, route and route.name)


def test_upgrade_refused_upstream_does_not_open_a_tunnel(secgate: SecGate) -> None:
    """WebSocket smuggling: the upstream answers 200, not 101. No raw tunnel opens; the bytes
    that follow are parsed and decided as a request of their own."""
    ws = (
        b"GET /open/not-a-socket HTTP/1.1\r\n" + HOST + b"Connection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    ex = secgate.exchange(ws + SMUGGLED, expect=2, timeout=5)
    assert ex.statuses == [502, 200]
    assert _echo(ex, 1)["path"] == "/open/smuggled"
    # h2c: Upgrade and HTTP2-Settings are hop-by-hop and never reach the upstream
    ex = secgate.exchange(
        b"GET /open/h2c HTTP/1.1\r\n" + HOST + b"Connection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        expect=1,
    )
    headers = {k.lower() for k, _ in _echo(ex)["header_list"]}  # type: ignore[union-attr]
    assert not headers & {"upgrade", "http2-settings", "connection"}


# ------------------------------------------------------------------------------ slowloris


def _closed_after(
    sock: socket.socket, start: float, drip: bytes, every: float, limit: float
) -> float:
    """Drip ``drip`` every ``every`` seconds until the server closes; seconds until then."""
    sock.settimeout(every)
    while time.monotonic() - start < limit:
        try:
            sock.sendall(drip)
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
        if data == b"":
            return time.monotonic() - start
        raise AssertionError(f"server answered a request it never got in full: {data[:80]!r}")
    raise AssertionError(f"connection still open after {limit} s")


def test_slowloris_headers_are_cut_at_the_header_timeout(secgate: SecGate) -> None:
    before = len(secgate.seen())
    with socket.create_connection(("127.0.0.1", secgate.port)) as s:
        start = time.monotonic()
        s.sendall(b"GET /open/slow HTTP/1.1\r\n")
        took = _closed_after(s, start, b"X-A: b\r\n", 0.2, HEADER_TIMEOUT_S + 3)
    assert took < HEADER_TIMEOUT_S + 1.0
    assert secgate.seen()[before:] == []


def test_slowloris_on_a_kept_alive_connection(secgate: SecGate) -> None:
    """After one good request the deadline re-arms: a dribbled second request is cut too."""
    with socket.create_connection(("127.0.0.1", secgate.port)) as s:
        s.sendall(request_bytes("GET", "/open/first", headers=[("X-Forwarded-For", US_IP)]))
        s.settimeout(5)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        s.sendall(b"GET /open/second HTTP/1.1\r\n")
        took = _closed_after(s, start, b"X", 0.2, HEADER_TIMEOUT_S + 3)
    assert took < HEADER_TIMEOUT_S + 1.0


def test_kept_alive_connection_idles_past_the_header_timeout(secgate: SecGate) -> None:
    """Between requests the keep-alive timeout applies, not the header deadline."""
    with socket.create_connection(("127.0.0.1", secgate.port)) as s:
        s.settimeout(5)
        s.sendall(request_bytes("GET", "/open/first", headers=[("X-Forwarded-For", US_IP)]))
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(HEADER_TIMEOUT_S + 0.7)
        s.sendall(request_bytes("GET", "/open/again", headers=[("X-Forwarded-For", US_IP)]))
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        # ... and is closed once idle for the keep-alive timeout
        start = time.monotonic()
        s.settimeout(KEEPALIVE_TIMEOUT_S + 3)
        assert s.recv(10) == b""
        idle = time.monotonic() - start
    assert KEEPALIVE_TIMEOUT_S - 0.5 < idle < KEEPALIVE_TIMEOUT_S + 1.0


def test_idle_connection_is_closed(secgate: SecGate) -> None:
    with socket.create_connection(("127.0.0.1", secgate.port)) as s:
        s.settimeout(HEADER_TIMEOUT_S + 3)
        start = time.monotonic()
        assert s.recv(10) == b""
        assert time.monotonic() - start < HEADER_TIMEOUT_S + 1.0


def test_slow_body_on_a_measured_route_is_408(secgate: SecGate) -> None:
    """A compute body dribbled a byte at a time is cut at the deadline, audited, not forwarded."""
    job = json.dumps(slurm_job()).encode()
    head = secgate.submit_bytes(job)[: -len(job)]
    before = len(secgate.seen())
    with socket.create_connection(("127.0.0.1", secgate.port)) as s:
        start = time.monotonic()
        s.sendall(head + job[:10])
        s.settimeout(0.2)
        data = b""
        for byte in job[10:]:
            try:
                s.sendall(bytes([byte]))
                data = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if data:
                break
        took = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 408"), data[:100]
    assert took < HEADER_TIMEOUT_S + 1.0
    assert b"urn:gatekeeper:problem:body-timeout" in data
    assert secgate.seen()[before:] == []


def test_k8s_route_refuses_override_too(secgate: SecGate) -> None:
    ex = secgate.exchange(
        request_bytes(
            "POST", K8S_JOBS, headers=[*secgate.auth(), ("X-HTTP-Method-Override", "GET")],
            body=b"{}",
        ),
        expect=1,
    )  # fmt: skip
    _assert_problem(ex, 400, "override-header")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_client_hanging_up_mid_body_is_a_client_error(secgate: SecGate, framing: str) -> None:
    """A body cut short by the client is audited as a 400 ``body-incomplete``, never as the gate's
    own ``internal-error`` 500 (which would page operators and log a traceback per request)."""
    job = json.dumps(slurm_job()).encode()
    raw = secgate.submit_bytes(job)
    if framing == "chunked":
        head = raw[: raw.index(b"\r\n\r\n")].replace(
            b"Content-Length: %d" % len(job), b"Transfer-Encoding: chunked"
        )
        raw = head + b"\r\n\r\n" + b"%x\r\n" % len(job) + job
    before = set(secgate.records())
    with socket.create_connection(("127.0.0.1", secgate.port)) as s:
        s.sendall(raw[:-40])
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        while s.recv(65536):
            pass
    deadline = time.monotonic() + 30
    new: list[dict[str, object]] = []
    while not new and time.monotonic() < deadline:
        time.sleep(0.05)
        new = [r for k, r in secgate.records().items() if k not in before]
    assert len(new) == 1, new
    rec = new[0]
    assert rec["http"]["status"] == 400, rec["http"]  # type: ignore[index]
    assert "body-incomplete" in rec["decision"]["reasons"]  # type: ignore[index]
