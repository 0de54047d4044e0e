"""``gatekeeper.ports.free_port``: free, and never the same port twice in one process."""

from __future__ import annotations

import socket

from gatekeeper.ports import free_port


def test_ports_handed_out_are_distinct_and_free() -> None:
    # Plain bind(0)-and-close repeats ports (8 in 100,000 back-to-back pairs here; thousands of
    # repeats among 3,000 calls): the demo's gate and scheduler could get the same one.
    ports = [free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)
    for port in ports[-20:]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing holds it


def test_a_port_someone_listens_on_is_not_handed_out() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        assert all(free_port() != taken for _ in range(500))
