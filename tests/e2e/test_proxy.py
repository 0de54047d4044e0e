"""End-to-end proxy behaviour with real processes."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from pathlib import Path

import aiohttp

from tests.e2e.gate import Gate, Upstream, base_config, raw_request
from tests.support import free_port, wait_until

MB = 1024 * 1024


async def test_forwards_method_path_query_headers_and_body(gate: Gate, upstream: Upstream) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.put(
            gate.url + "/things/42?x=1&y=%20z",
            data=b"hello body",
            headers={"X-Custom": "v1", "Content-Type": "text/plain"},
        ) as r:
            assert r.status == 200
            assert len(r.headers["X-Gatekeeper-Decision-Id"]) == 26
            echo = await r.json()
    assert echo["method"] == "PUT"
    assert echo["path"] == "/things/42"
    assert echo["raw_path"] == "/things/42?x=1&y=%20z"
    assert echo["headers"]["X-Custom"] == "v1"
    assert echo["body"] == "hello body"
    assert echo["headers"]["X-Gatekeeper-Decision-Id"] == r.headers["X-Gatekeeper-Decision-Id"]
    assert echo["headers"]["X-Forwarded-For"] == "127.0.0.1"


async def test_client_gatekeeper_headers_never_reach_upstream(
    gate: Gate, upstream: Upstream
) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(
            gate.url + "/spoof",
            headers={"X-Gatekeeper-Tenant": "evil", "x-gatekeeper-entity": "acme",
                     "X-Gatekeeper-Decision-Id": "forged"},
        ) as r:  # fmt: skip
            echo = await r.json()
    names = [k.lower() for k, _ in echo["header_list"]]
    assert "x-gatekeeper-tenant" not in names
    assert "x-gatekeeper-entity" not in names
    assert names.count("x-gatekeeper-decision-id") == 1
    assert echo["headers"]["X-Gatekeeper-Decision-Id"] != "forged"


async def test_untrusted_x_forwarded_for_is_not_believed(gate: Gate, upstream: Upstream) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(gate.url + "/xff", headers={"X-Forwarded-For": "8.8.8.8"}) as r:
            echo = await r.json()
    assert echo["headers"]["X-Forwarded-For"] == "127.0.0.1"
    records = [
        json.loads(x)
        for x in Path(gate.config["audit"]["sinks"][0]["path"]).read_text().splitlines()
    ]
    decisions = [x for x in records if x.get("type") is None and x["http"]["path"] == "/xff"]
    assert decisions and decisions[0]["http"]["client_ip"] == "127.0.0.1"


async def test_trusted_proxy_forwarded_for_is_believed(tmp_path: Path, upstream: Upstream) -> None:
    gate = Gate(tmp_path, base_config(tmp_path, upstream.url, trusted_proxies=["127.0.0.0/8"]))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(gate.url + "/xff", headers={"X-Forwarded-For": "8.8.8.8"}) as r:
                echo = await r.json()
        assert echo["headers"]["X-Forwarded-For"] == "8.8.8.8"
    finally:
        gate.stop()


async def test_hop_by_hop_headers_are_not_forwarded(gate: Gate, upstream: Upstream) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(
            gate.url + "/hop",
            headers={"Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1",
                     "Proxy-Authorization": "Basic Zm9vOmJhcg==", "TE": "trailers"},
        ) as r:  # fmt: skip
            echo = await r.json()
    names = {k.lower() for k, _ in echo["header_list"]}
    assert not names & {"x-secret-hop", "proxy-authorization", "te"}


async def test_streams_200mb_download_with_flat_memory(gate: Gate) -> None:
    rss_before = gate.rss_kb()
    size = 200 * MB
    h = hashlib.sha256()
    got = 0
    peak = rss_before
    async with aiohttp.ClientSession() as s:
        async with s.get(gate.url + f"/download?size={size}") as r:
            assert r.status == 200
            async for chunk in r.content.iter_chunked(1 << 20):
                h.update(chunk)
                got += len(chunk)
                peak = max(peak, gate.rss_kb())
    assert got == size
    assert (peak - rss_before) < 50 * 1024, f"RSS grew by {(peak - rss_before) // 1024} MB"


async def test_streams_200mb_upload_with_flat_memory(gate: Gate) -> None:
    size = 200 * MB
    block = bytes(range(256)) * 4096  # 1 MiB
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)
    rss_before = gate.rss_kb()
    peak = [rss_before]

    async def body():  # type: ignore[no-untyped-def]
        for _ in range(size // len(block)):
            peak[0] = max(peak[0], gate.rss_kb())
            yield block

    async with aiohttp.ClientSession() as s:
        async with s.post(gate.url + "/upload", data=body()) as r:
            assert r.status == 200
            result = await r.json()
    assert result == {"length": size, "sha256": expected.hexdigest()}
    assert (peak[0] - rss_before) < 50 * 1024, f"RSS grew by {(peak[0] - rss_before) // 1024} MB"


async def test_websocket_echo(gate: Gate) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(gate.url.replace("http", "ws") + "/ws") as ws:
            await ws.send_str("ping")
            msg = await ws.receive(timeout=5)
            assert msg.data == "echo:ping"
            await ws.send_bytes(b"\x00\x01")
            msg = await ws.receive(timeout=5)
            assert msg.data == b"\x00\x01"


async def test_upstream_down_is_502(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gate = Gate(tmp_path, base_config(tmp_path, dead))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(gate.url + "/anything") as r:
                assert r.status == 502
                assert r.headers["Content-Type"].startswith("application/problem+json")
                problem = await r.json(content_type=None)
        assert problem["type"] == "urn:gatekeeper:problem:upstream-unreachable"
        assert problem["decision_id"] == r.headers["X-Gatekeeper-Decision-Id"]
    finally:
        gate.stop()


async def test_upstream_slow_is_504(gate: Gate) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(gate.url + "/slow?delay=5") as r:
            assert r.status == 504
            problem = await r.json(content_type=None)
    assert problem["type"] == "urn:gatekeeper:problem:upstream-timeout"


async def test_oversized_body_is_413(gate: Gate, upstream: Upstream) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(gate.url + "/api/submit", data=b"x" * 70000) as r:
            assert r.status == 413
            problem = await r.json(content_type=None)
        assert problem["type"] == "urn:gatekeeper:problem:body-too-large"

        async def chunked():  # type: ignore[no-untyped-def]
            for _ in range(20):
                yield b"y" * 8192

        async with s.post(gate.url + "/api/submit", data=chunked()) as r:
            assert r.status == 413
    assert not [x for x in upstream.seen() if x["path"].startswith("/api/submit")]


async def test_every_response_has_a_decision_id_and_audit_record(gate: Gate) -> None:
    ids = []
    async with aiohttp.ClientSession() as s:
        for path in ("/a", "/status/500", "/b%2fc", "/download?size=10"):
            async with s.get(gate.url + path) as r:
                ids.append(r.headers["X-Gatekeeper-Decision-Id"])
    time.sleep(0.3)
    lines = Path(gate.config["audit"]["sinks"][0]["path"]).read_text().splitlines()
    recorded = {
        json.loads(x)["decision_id"] for x in lines if '"type"' not in x or '"outcome"' not in x
    }
    assert set(ids) <= recorded


def _in_flight_at_sigterm(gate: Gate, upstream: Upstream, request: bytes) -> tuple[bytes, float]:
    """Send ``request`` (a slow one), SIGTERM the gate while it is in flight, check the gate
    exits 0; the raw answer and the seconds until the connection closed."""
    result: dict[str, tuple[bytes, float]] = {}
    before = len(upstream.seen())

    def slow_request() -> None:
        started = time.monotonic()
        data = raw_request(gate.port, request, timeout=10)
        result["answer"] = (data, time.monotonic() - started)

    t = threading.Thread(target=slow_request)
    t.start()
    # In flight once the upstream has it (however long that takes on a busy machine).
    wait_until(lambda: len(upstream.seen()) > before, what="the request at the upstream")
    gate.signal(signal.SIGTERM)
    t.join(15)
    assert gate.proc.wait(15) == 0
    return result["answer"]


def test_sigterm_drains_in_flight_requests(gate: Gate, upstream: Upstream) -> None:
    response, _ = _in_flight_at_sigterm(
        gate, upstream, b"GET /slow?delay=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert response.startswith(b"HTTP/1.1 200")


def test_a_request_in_hand_at_sigterm_is_answered_with_connection_close(
    gate: Gate, upstream: Upstream
) -> None:
    """A keep-alive client learns from the answer itself that the connection ends with it."""
    response, took = _in_flight_at_sigterm(
        gate, upstream, b"GET /slow?delay=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    head = response.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nConnection: close" in head
    assert took < 5  # closed after the answer, not at the read timeout


def test_forwarded_response_carries_one_date_header(gate: Gate, upstream: Upstream) -> None:
    # The upstream (aiohttp) sends its own Date; the gate writes one on every response.
    raw = raw_request(gate.port, b"GET /date HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 200")
    dates = [line for line in head.split("\r\n")[1:] if line.lower().startswith("date:")]
    assert len(dates) == 1, head
    assert dates[0].endswith(" GMT")
