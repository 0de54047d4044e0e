"""The gate's HTTP/1.1 edge and lean upstream client, byte for byte, over raw sockets.

The upstream here is scripted: it answers each request with canned bytes chosen by path, so the
tests control exactly what the lean client must parse (chunked bodies with trailers, 1xx interim
answers, ``Connection: close``, a header with a bare LF) and check exactly what the server writes
back (framing for HEAD, 204, chunked and HTTP/1.0 clients, pipelined answers in order,
``100 Continue``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.proxy import lean
from tests.e2e.gate import Gate, base_config
from tests.security.harness import exchange, request_bytes
from tests.support import free_port, wait_until

JSON = b"Content-Type: application/json\r\n"
CANNED: dict[str, bytes] = {
    "/plain": b"HTTP/1.1 200 OK\r\n" + JSON + b'Content-Length: 11\r\n\r\n{"ok":true}',
    "/head": b"HTTP/1.1 200 OK\r\n" + JSON + b"Content-Length: 11\r\n\r\n",
    "/nocontent": b"HTTP/1.1 204 No Content\r\nX-Up: 1\r\n\r\n",
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    "/interim": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    "/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    "/until-close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstreamed-until-close",
    "/bare-lf": b"HTTP/1.1 200 OK\r\nX-A: a\nX-Injected: b\r\nContent-Length: 2\r\n\r\nok",
    "/cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    "/bad-status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
}


class ScriptedUpstream:
    """Answers each request with ``CANNED[path]``; counts connections and requests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self.requests: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                path = lines[0].split(" ")[1]
                self.requests.append(f"{lines[0].split(' ')[0]} {path}")
                conn.sendall(CANNED.get(path, CANNED["/plain"]))
                if path in ("/close", "/until-close"):
                    return

    def close(self) -> None:
        self._stop = True
        self._sock.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream()
    yield up
    up.close()


@pytest.fixture
def sgate(tmp_path: Path, scripted: ScriptedUpstream) -> Iterator[Gate]:
    gate = Gate(tmp_path, base_config(tmp_path, scripted.url))
    yield gate
    gate.stop()


def _get(path: str, **kw: object) -> bytes:
    return request_bytes("GET", path, **kw)  # type: ignore[arg-type]


def test_pipelined_requests_are_answered_in_order(sgate: Gate, scripted: ScriptedUpstream) -> None:
    ex = exchange(sgate.port, _get("/plain") + _get("/chunked") + _get("/interim"), expect=3)
    assert ex.statuses == [200, 200, 201]
    assert [r.body for r in ex.responses] == [b'{"ok":true}', b"hello world", b"ok"]
    ids = {r.header("X-Gatekeeper-Decision-Id") for r in ex.responses}
    assert len(ids) == 3 and None not in ids
    assert scripted.requests == ["GET /plain", "GET /chunked", "GET /interim"]
    assert not ex.closed


def test_chunked_upstream_body_is_rechunked_and_trailers_dropped(sgate: Gate) -> None:
    ex = exchange(sgate.port, _get("/chunked"), expect=1)
    resp = ex.responses[0]
    assert resp.header("Transfer-Encoding") == "chunked"
    assert resp.header("Content-Length") is None
    assert resp.body == b"hello world"
    assert resp.header("X-Trailer") is None


def test_http10_client_gets_a_close_delimited_body(sgate: Gate) -> None:
    ex = exchange(sgate.port, _get("/chunked", version="HTTP/1.0"))
    assert ex.closed
    assert ex.statuses == [200]
    assert ex.responses[0].header("Transfer-Encoding") is None
    assert ex.responses[0].body == b"hello world"


def test_head_keeps_the_upstream_length_and_sends_no_body(sgate: Gate) -> None:
    with socket.create_connection(("127.0.0.1", sgate.port), timeout=5) as s:
        s.sendall(request_bytes("HEAD", "/head") + _get("/plain"))
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b'{"ok":true}'):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nContent-Length: 11" in head
    assert rest.startswith(b"HTTP/1.1 200")  # no body bytes between the two answers


def test_204_has_no_framing_and_the_connection_is_reused(
    sgate: Gate, scripted: ScriptedUpstream
) -> None:
    ex = exchange(sgate.port, _get("/nocontent") + _get("/plain"), expect=2)
    assert ex.statuses == [204, 200]
    first = ex.responses[0]
    assert first.header("Content-Length") is None
    assert first.header("Transfer-Encoding") is None
    assert first.header("X-Up") == "1"
    assert ex.responses[1].body == b'{"ok":true}'


def test_upstream_connection_close_is_not_pooled(sgate: Gate, scripted: ScriptedUpstream) -> None:
    for _ in range(3):
        assert exchange(sgate.port, _get("/close"), expect=1).statuses == [200]
    assert scripted.connections == 3
    before = scripted.connections
    for _ in range(3):
        assert exchange(sgate.port, _get("/plain"), expect=1).statuses == [200]
    assert scripted.connections == before + 1  # keep-alive: one connection for all three


def test_read_until_close_body(sgate: Gate) -> None:
    ex = exchange(sgate.port, _get("/until-close"), expect=1)
    assert ex.responses[0].body == b"streamed-until-close"


@pytest.mark.parametrize("path", ["/bare-lf", "/cl-te", "/bad-status"])
def test_malformed_upstream_answer_is_502(sgate: Gate, path: str) -> None:
    ex = exchange(sgate.port, _get(path), expect=1)
    assert ex.statuses == [502]
    resp = ex.responses[0]
    assert resp.header("Content-Type") == "application/problem+json"
    assert resp.json()["decision_id"] == resp.header("X-Gatekeeper-Decision-Id")
    assert b"X-Injected" not in b"".join(k.encode() for k, _ in resp.headers)


def test_expect_100_continue_on_a_measured_route(sgate: Gate) -> None:
    body = b'{"job": 1}'
    head = request_bytes(
        "POST",
        "/api/submit",
        headers=[("X-Test-Gpus", "1"), ("Expect", "100-continue"),
                 ("Content-Length", str(len(body)))],
        length=False,
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", sgate.port), timeout=5) as s:
        s.sendall(head)
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")


def test_encoded_body_on_a_measured_route_is_400(sgate: Gate, scripted: ScriptedUpstream) -> None:
    ex = exchange(
        sgate.port,
        request_bytes(
            "POST", "/api/submit", headers=[("X-Test-Gpus", "1"), ("Content-Encoding", "gzip")],
            body=b"\x1f\x8b\x08\x00",
        ),
        expect=1,
    )  # fmt: skip
    assert ex.statuses == [400]
    assert ex.responses[0].json()["type"] == "urn:gatekeeper:problem:content-encoding"
    assert scripted.requests == []


def test_malformed_request_after_a_good_one_is_answered_in_turn(
    sgate: Gate, scripted: ScriptedUpstream
) -> None:
    # The bad request goes in a read of its own: sent once the good one reached the upstream (a
    # fixed pause was not enough on a busy machine, and both landed in one read, as below).
    ex = exchange(
        sgate.port,
        [_get("/plain"), b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n"],
        between=lambda: wait_until(lambda: scripted.requests == ["GET /plain"]),
    )
    assert ex.statuses == [200, 400]
    assert ex.closed
    # In one write the parser refuses the whole buffer: nothing of it is forwarded.
    ex = exchange(sgate.port, _get("/plain") + b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n")
    assert ex.statuses == [400]
    assert ex.closed
    assert scripted.requests == ["GET /plain"]


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "gate.crt", tmp / "gate.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_listener_forwards_with_https_proto(tmp_path: Path) -> None:
    import ssl

    import aiohttp

    from tests.e2e.gate import Upstream

    upstream = Upstream(tmp_path)
    cert, key = _self_signed(tmp_path)
    cfg = base_config(tmp_path, upstream.url)
    cfg["listen"]["tls"] = {"cert": str(cert), "key": str(key)}
    gate = Gate(tmp_path, cfg)
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as s:
            for _ in range(2):  # the second request reuses the TLS connection
                async with s.get(f"https://127.0.0.1:{gate.port}/tls-echo", ssl=ctx) as r:
                    assert r.status == 200
                    echo = await r.json()
                    assert echo["headers"]["X-Forwarded-Proto"] == "https"
                    assert r.headers["X-Gatekeeper-Decision-Id"]
    finally:
        gate.stop()
        upstream.stop()


def test_a_pipelined_flood_is_answered_in_order(sgate: Gate, scripted: ScriptedUpstream) -> None:
    """More requests in one write than the queue holds: reading pauses and resumes, none lost."""
    paths = [f"/plain?n={i}" for i in range(100)]
    ex = exchange(sgate.port, b"".join(_get(p) for p in paths), expect=100, timeout=20)
    assert ex.statuses == [200] * 100
    assert scripted.requests == [f"GET {p}" for p in paths]
    assert len({r.header("X-Gatekeeper-Decision-Id") for r in ex.responses}) == 100


_NAME = st.binary(min_size=1, max_size=12).filter(
    lambda b: (
        not set(b) & set(b":\r\n")
        and b[:1] not in (b" ", b"\t")
        and b[-1:] not in (b" ", b"\t")
        and b.lower() not in (b"content-length", b"transfer-encoding", b"connection")
    )
)
_VALUE = st.binary(max_size=24).filter(lambda b: not set(b) & set(b"\r\n"))


@given(pairs=st.lists(st.tuples(_NAME, _VALUE), max_size=8))
@settings(max_examples=300, deadline=None)
def test_lean_head_parse_keeps_every_header_byte(pairs: list[tuple[bytes, bytes]]) -> None:
    """Names and values come back as each line's bytes decoded on their own (undecodable
    bytes kept by surrogateescape), in order: one decode of the block changes nothing."""
    raw = b"HTTP/1.1 200 OK\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in pairs) + b"\r\n"
    resp = lean._parse_head(raw, lean.Conn(("h", 1), None), "GET")  # type: ignore[arg-type]
    assert resp is not None
    assert resp.headers == [
        (n.decode("utf-8", "surrogateescape"), v.strip(b" \t").decode("utf-8", "surrogateescape"))
        for n, v in pairs
    ]


def test_websocket_switch_head_has_no_framing(tmp_path: Path) -> None:
    """The 101 goes back with the upstream's handshake headers and the decision id, and with no
    Content-Length or Transfer-Encoding (a 1xx has no body); then bytes flow through."""
    from tests.e2e.gate import Upstream

    upstream = Upstream(tmp_path)
    gate = Gate(tmp_path, base_config(tmp_path, upstream.url))
    try:
        with socket.create_connection(("127.0.0.1", gate.port), timeout=5) as s:
            s.sendall(
                b"GET /ws HTTP/1.1\r\nHost: gate.test\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                assert chunk, head
                head += chunk
            lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
            names = {line.split(":")[0].lower() for line in lines[1:]}
            assert lines[0].startswith("HTTP/1.1 101")
            assert {"upgrade", "sec-websocket-accept", "x-gatekeeper-decision-id"} <= names
            assert not names & {"content-length", "transfer-encoding"}
            s.sendall(
                bytes([0x81, 0x84, 1, 2, 3, 4])
                + bytes(b ^ m for b, m in zip(b"ping", b"\x01\x02\x03\x04", strict=True))
            )
            frame = s.recv(4096)
            assert frame[2:] == b"echo:ping"  # an unmasked text frame from the upstream
    finally:
        gate.stop()
        upstream.stop()
