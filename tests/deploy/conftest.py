"""Parsed deployment files and facts from the code, for tests/deploy."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gatekeeper.config import Config
from tests.deploy.manifests import (
    COMPOSE,
    DEPLOY_CONFIG,
    DOCKERFILE,
    K8s,
    admin_routes,
    config_env_vars,
    image_copies,
    load_deploy_config,
    load_k8s,
    package_version,
    parse_dockerfile,
)


@pytest.fixture
def cfg(monkeypatch: pytest.MonkeyPatch) -> Config:
    for var in config_env_vars(DEPLOY_CONFIG.read_text()):
        monkeypatch.setenv(var, "redis://redis:6379/0")
    return load_deploy_config()


@pytest.fixture(scope="session")
def config_text() -> str:
    return DEPLOY_CONFIG.read_text()


@pytest.fixture(scope="session")
def admin() -> set[tuple[str, str]]:
    return admin_routes()


@pytest.fixture(scope="session")
def version() -> str:
    return package_version()


@pytest.fixture
def dockerfile() -> list[Any]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture
def copies(dockerfile: list[Any]) -> dict[str, str]:
    return image_copies(dockerfile)


@pytest.fixture
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture
def k8s() -> K8s:
    return load_k8s()
