"""One real gate for the whole security folder, and a registry of every upstream log it wrote.

``test_zz_spoofing.py`` runs last (the collection hook below moves it there) and scans every
request any upstream in this folder saw for client-supplied ``X-Gatekeeper-*`` headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.harness import SecGate

LAST = "test_zz_spoofing.py"


class ForwardedLogs:
    """Every ``SecGate`` started in this session (their upstream logs and audit files)."""

    def __init__(self) -> None:
        self.gates: list[SecGate] = []


_LOGS = ForwardedLogs()


@pytest.fixture(scope="session")
def forwarded_logs() -> ForwardedLogs:
    return _LOGS


@pytest.fixture(scope="session")
def secgate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecGate]:
    tmp: Path = tmp_path_factory.mktemp("security")
    gate = SecGate(tmp)
    _LOGS.gates.append(gate)
    try:
        yield gate
    finally:
        gate.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last = [i for i in items if i.nodeid.split("::")[0].endswith(f"security/{LAST}")]
    if last:
        rest = [i for i in items if i not in last]
        items[:] = rest + last
