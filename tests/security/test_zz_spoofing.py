"""The last test of the folder (conftest moves it there): every request any upstream of this
folder saw carries only the gate's ``X-Gatekeeper-*`` headers, with the audit record's values."""

from __future__ import annotations

import time

from tests.security.conftest import ForwardedLogs
from tests.security.harness import check_forwarded


def test_no_forwarded_request_carries_a_client_supplied_gate_header(
    forwarded_logs: ForwardedLogs,
) -> None:
    time.sleep(0.1)
    assert forwarded_logs.gates, "no gate ran in this session"
    total = 0
    for gate in forwarded_logs.gates:
        total += check_forwarded(gate.seen(), gate.records())
    # the suite forwards dozens of requests; a scan of nothing would prove nothing
    assert total >= 20, total
