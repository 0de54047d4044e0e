"""docs/operations.md names only things that exist: alerts, admin routes, repository paths."""

from __future__ import annotations

import re

import yaml

from tests.deploy.manifests import REPO

DOC = REPO / "docs" / "operations.md"


def _alerts() -> set[str]:
    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    return {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_every_alert_is_documented_and_every_documented_alert_exists() -> None:
    text = DOC.read_text()
    named = set(re.findall(r"`(Gatekeeper[A-Za-z]+)`", text))
    assert named == _alerts()


def test_documented_admin_routes_exist(admin: set[tuple[str, str]]) -> None:
    text = DOC.read_text()
    documented = set(re.findall(r"`(GET|POST) (/[^`\s]*)`", text))
    assert documented and documented <= admin
    assert {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")} <= documented


def test_documented_repository_paths_exist() -> None:
    text = DOC.read_text()
    paths = set(re.findall(r"`((?:deploy|docs|policies|gatekeeper|tests)/[^`\s*]*)`", text))
    paths |= set(re.findall(r"`((?:Dockerfile|docker-compose\.yml))`", text))
    assert paths
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert missing == []
