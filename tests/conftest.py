"""Shared fixtures: private redis-server instances on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support import RedisServer

# A loaded machine runs an example many times slower than a quiet one: no per-example deadline
# and no "too slow" health check, so only wrong answers fail a property test, never timing.
# Loaded here, before any test module builds its own settings on top of this profile.
settings.register_profile("gatekeeper", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gatekeeper")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
