"""The shipped Dockerfile, docker-compose.yml and deploy/k8s agree with the code (no problems)."""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper.config import Config
from gatekeeper.errors import ConfigError
from tests.deploy.manifests import (
    DEPLOY_CONFIG,
    K8s,
    admin_routes,
    check_compose,
    check_dockerfile,
    check_k8s,
    config_env_vars,
    load_deploy_config,
)


def test_admin_routes_are_read_from_admin_py(admin: set[tuple[str, str]]) -> None:
    assert {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")} <= admin
    assert ("POST", "/v1/reload") in admin


def test_admin_route_parser_reads_only_router_calls() -> None:
    src = (
        'app.router.add_get("/a", h)\n'
        'app.router.add_post("/b", h)\n'
        'other.add_get("/not-a-route", h)\n'
        "app.router.add_get(PATH, h)\n"
    )
    assert admin_routes(src) == {("GET", "/a"), ("POST", "/b")}


def test_deploy_config_loads_for_containers(cfg: Config) -> None:
    # Containers: both listeners on every interface (probes and scraping reach the admin port).
    assert (cfg.listen.host, cfg.admin.host) == ("0.0.0.0", "0.0.0.0")
    assert cfg.quota.store.startswith("redis://")
    assert {s.type for s in cfg.audit.sinks} == {"file", "redis_stream"}
    assert cfg.audit.signing_key == "/etc/gatekeeper/keys/audit-seal.pem"
    assert all(p.startswith("/etc/gatekeeper/policies/") for p in cfg.policy.files)
    assert all(
        i.jwks_file and i.jwks_file.startswith("/etc/gatekeeper/keys/")
        for i in cfg.identity.issuers
    )
    adapters = {r.name: r.adapter for r in cfg.routes}
    assert adapters["slurm-submit"] == "slurm" and adapters["slurm-read"] == "none"
    assert {"kubernetes", "ray"} <= set(adapters.values())


def test_deploy_config_needs_its_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    names = config_env_vars(DEPLOY_CONFIG.read_text())
    assert names == {"GATEKEEPER_REDIS_URL", "GATEKEEPER_AUDIT_REDIS_URL"}
    for var in names:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError) as err:
        load_deploy_config()
    assert "GATEKEEPER_REDIS_URL is not set" in str(err.value)


def test_env_var_scan_ignores_comments() -> None:
    text = 'a: "${ONE}" # ${TWO}\n# ${THREE}\nb: x${FOUR}y\n'
    assert config_env_vars(text) == {"ONE", "FOUR"}


def test_dockerfile_agrees(dockerfile: list[Any], cfg: Config, admin: set[tuple[str, str]]) -> None:
    assert check_dockerfile(dockerfile, cfg, admin) == []


def test_compose_agrees(
    compose: dict[str, Any],
    cfg: Config,
    admin: set[tuple[str, str]],
    config_text: str,
    copies: dict[str, str],
    version: str,
) -> None:
    problems = check_compose(
        compose, cfg, admin, config_text=config_text, copies=copies, version=version
    )
    assert problems == []


def test_k8s_agrees(
    k8s: K8s,
    cfg: Config,
    admin: set[tuple[str, str]],
    config_text: str,
    copies: dict[str, str],
    version: str,
) -> None:
    assert check_k8s(k8s, cfg, admin, config_text=config_text, copies=copies, version=version) == []


def test_k8s_every_document_has_kind_and_name(k8s: K8s) -> None:
    kinds = {kind for kind, _ in k8s.docs}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    } <= kinds
    assert len(k8s.of_kind("Service")) == 2  # proxy, and a separate one for metrics
