"""The ``stack`` fixture: a real gate in front of the stand-in API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gatekeeper.demo import DemoKeys
from tests.e2e.gate import Gate

from .stack import ApiServer, running_stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Gate, DemoKeys, ApiServer]]:
    yield from running_stack(tmp_path)
