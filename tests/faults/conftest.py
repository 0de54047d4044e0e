"""Fault and load suite: registers the ``slow`` marker (the 60 s load test, still run in CI)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a long-running test (the 60 s load test); runs in CI")
