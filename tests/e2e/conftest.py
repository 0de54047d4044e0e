"""Fixtures starting a real upstream and a real ``gatekeeper serve``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.gate import Gate, Upstream, base_config


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    up = Upstream(tmp_path)
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture
def gate(tmp_path: Path, upstream: Upstream) -> Iterator[Gate]:
    g = Gate(tmp_path, base_config(tmp_path, upstream.url))
    try:
        yield g
    finally:
        g.stop()
