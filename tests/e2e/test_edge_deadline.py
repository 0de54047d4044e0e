"""The header deadline around a request in hand, on a real ``gatekeeper serve`` over raw sockets.

The edge arms ``limits.header_timeout_s`` (2 s here) when a connection opens and when a further
request's first byte arrives; while a request is handled no deadline runs. Bytes of a next
request that arrive *while* one is handled must still start the deadline once it is answered: a
client pipelining half a request behind a slow one must not get the keep-alive timeout (75 s)
to finish it.
"""

from __future__ import annotations

import socket
import time

from tests.e2e.gate import Gate, Upstream
from tests.support import wait_until

KEEPALIVE_DEFAULT_S = 75


def _read_answer(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_half_a_request_pipelined_behind_a_slow_one_is_cut_at_the_header_deadline(
    gate: Gate, upstream: Upstream
) -> None:
    with socket.create_connection(("127.0.0.1", gate.port), timeout=30) as s:
        s.sendall(b"GET /slow?delay=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        # the slow request is in hand once the upstream has it
        wait_until(lambda: any(r["path"].startswith("/slow") for r in upstream.seen()))
        s.sendall(b"GET /second HTTP/1.1\r\nHost: x\r\n")  # ... and half of the next arrives
        head = _read_answer(s)
        assert head.startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
        waited = time.monotonic() - answered
    assert b"HTTP/1.1" not in rest  # the half request was never answered
    # Closed at the header deadline after the answer, far sooner than the keep-alive timeout.
    assert waited < KEEPALIVE_DEFAULT_S / 3, waited


def test_a_kept_alive_connection_idles_after_a_request_in_hand(gate: Gate) -> None:
    """Without further bytes, the connection stays open past the header deadline."""
    with socket.create_connection(("127.0.0.1", gate.port), timeout=30) as s:
        s.sendall(b"GET /slow?delay=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_answer(s).startswith(b"HTTP/1.1 200")
        time.sleep(3.5)  # past header_timeout_s (2 s)
        s.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_answer(s).startswith(b"HTTP/1.1 200")
