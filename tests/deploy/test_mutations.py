"""A wrong port, path, name or mount in a manifest is reported: each case breaks one thing in a
parsed copy of the shipped files and expects the checker to name it (and the pristine copy to be
clean, so the problem comes from the mutation)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from gatekeeper.config import Config
from tests.deploy.manifests import (
    DOCKERFILE,
    K8s,
    check_compose,
    check_dockerfile,
    check_k8s,
    image_copies,
    parse_dockerfile,
)

# ----------------------------------------------------------------------------------- Dockerfile

DOCKER_CASES: list[tuple[str, str, str, str]] = [
    # (id, text to replace, replacement, expected problem)
    (
        "healthcheck-port",
        "127.0.0.1:9090/healthz",
        "127.0.0.1:9091/healthz",
        "HEALTHCHECK port 9091",
    ),
    ("healthcheck-path", "9090/healthz'", "9090/health'", "HEALTHCHECK path /health"),
    ("expose", "EXPOSE 8080 9090", "EXPOSE 8080", "EXPOSE lacks 9090"),
    ("root", "USER 10001:10001", "USER root", "non-root USER"),
    (
        "copy-missing",
        "COPY policies/ /etc",
        "COPY policy/ /etc",
        "COPY source policy/ does not exist",
    ),
    ("copy-ignored", "COPY gatekeeper ./gatekeeper", "COPY tests ./gatekeeper", "in .dockerignore"),
    (
        "config-path",
        'CMD ["serve", "--config", "/etc/gatekeeper/gatekeeper.yaml"]',
        'CMD ["serve", "--config", "/etc/gatekeeper/config.yaml"]',
        "--config /etc/gatekeeper/config.yaml is not where",
    ),
    ("policies-dest", "/etc/gatekeeper/policies/", "/etc/gatekeeper/policy/", "policy.files[0]"),
    ("base", "FROM python:3.11-slim AS build", "FROM python:3.12 AS build", "not python:3.11-slim"),
    ("curl", 'CMD ["python", "-c"', 'CMD ["curl", "-c"', "a tool python:3.11-slim"),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"), [c[1:] for c in DOCKER_CASES], ids=[c[0] for c in DOCKER_CASES]
)
def test_dockerfile_mutation_is_reported(
    old: str, new: str, expected: str, cfg: Config, admin: set[tuple[str, str]]
) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    assert check_dockerfile(parse_dockerfile(text), cfg, admin) == []
    problems = check_dockerfile(parse_dockerfile(text.replace(old, new, 1)), cfg, admin)
    assert any(expected in p for p in problems), problems


def test_dockerfile_problem_when_config_moves_admin_port(
    dockerfile: list[Any], cfg: Config, admin: set[tuple[str, str]]
) -> None:
    moved = dataclasses.replace(cfg, admin=dataclasses.replace(cfg.admin, port=9191))
    problems = check_dockerfile(dockerfile, moved, admin)
    assert any("EXPOSE lacks 9191" in p for p in problems)
    assert any("HEALTHCHECK port 9090 is not admin.port 9191" in p for p in problems)


# --------------------------------------------------------------------------------------- compose


def _svc(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda c: c["services"][name]


def _replace_volume(service: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        vols = c["services"][service]["volumes"]
        hits = [i for i, v in enumerate(vols) if old in v]
        assert hits, f"{old} not in {service}.volumes"
        vols[hits[0]] = vols[hits[0]].replace(old, new)

    return mutate


def _set(service: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        c["services"][service][key] = value

    return mutate


def _del_env(var: str) -> Callable[[dict[str, Any]], None]:
    return lambda c: c["services"]["gatekeeper"]["environment"].pop(var)


COMPOSE_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "proxy-port",
        _set("gatekeeper", "ports", ["8080:8081", "127.0.0.1:9091:9090"]),
        "listen.port 8080",
    ),
    ("admin-port", _set("gatekeeper", "ports", ["8080:8080"]), "admin.port 9090"),
    (
        "config-mount",
        _replace_volume("gatekeeper", "./deploy/config/gatekeeper.yaml:", "./policies/gpus.yaml:"),
        "--config /etc/gatekeeper/gatekeeper.yaml is not deploy/config/gatekeeper.yaml",
    ),
    (
        "config-source",
        _replace_volume(
            "gatekeeper", "./deploy/config/gatekeeper.yaml", "./deploy/config/other.yaml"
        ),
        "mounts deploy/config/other.yaml, which does not exist",
    ),
    (
        "config-flag",
        _set("gatekeeper", "command", ["serve", "--config", "/etc/gatekeeper/x.yaml"]),
        "--config /etc/gatekeeper/x.yaml",
    ),
    (
        "keys-mount",
        _replace_volume("gatekeeper", ":/etc/gatekeeper/keys", ":/etc/keys"),
        "identity.issuers[0].jwks_file",
    ),
    (
        "entities-mount",
        _replace_volume("gatekeeper", "/demo/data/entities.yaml", "/demo/data/entity.yaml"),
        "entities.sources[0].path",
    ),
    (
        "audit-ro",
        _replace_volume(
            "gatekeeper", "audit:/var/lib/gatekeeper/audit", "audit:/var/lib/gatekeeper/audit:ro"
        ),
        "not on a writable volume",
    ),
    (
        "audit-volume",
        _replace_volume(
            "gatekeeper", "audit:/var/lib/gatekeeper/audit", "audit:/var/lib/gatekeeper/data"
        ),
        "not on a writable volume",
    ),
    ("env-missing", _del_env("GATEKEEPER_REDIS_URL"), "lacks GATEKEEPER_REDIS_URL"),
    (
        "redis-host",
        lambda c: c["services"]["gatekeeper"]["environment"].update(
            GATEKEEPER_REDIS_URL="redis://cache:6379/0"
        ),
        "names host 'cache'",
    ),
    (
        "redis-port",
        lambda c: c["services"]["gatekeeper"]["environment"].update(
            GATEKEEPER_AUDIT_REDIS_URL="redis://redis:6380/1"
        ),
        "port 6380",
    ),
    (
        "scheduler-port",
        _set("scheduler", "command", ["--host", "0.0.0.0", "--port", "6821"]),
        "route slurm-submit goes to scheduler:6820",
    ),
    (
        "scheduler-loopback",
        _set("scheduler", "command", ["--port", "6820"]),
        "listens on loopback only",
    ),
    (
        "scheduler-module",
        _set("scheduler", "entrypoint", ["python", "-m", "gatekeeper.demo.sched"]),
        "module gatekeeper.demo.sched",
    ),
    (
        "image-tag",
        _set("gatekeeper", "image", "gatekeeper:latest"),
        "gatekeeper.image 'gatekeeper:latest'",
    ),
    (
        "build-context",
        _set("scheduler", "build", {"context": "./deploy"}),
        "scheduler.build.context",
    ),
    (
        "dockerfile",
        _set("gatekeeper", "build", {"context": ".", "dockerfile": "Containerfile"}),
        "Containerfile does not exist",
    ),
    ("grace", _set("gatekeeper", "stop_grace_period", "30s"), "stop_grace_period 30s"),
    ("undeclared-volume", lambda c: c["volumes"].pop("audit"), "undeclared volume 'audit'"),
    (
        "prom-rules",
        _replace_volume(
            "prometheus",
            "alerts.yml:/etc/prometheus/alerts.yml",
            "alerts.yml:/etc/prometheus/rules.yml",
        ),
        "rule file alerts.yml is not mounted",
    ),
    (
        "prom-config",
        _replace_volume(
            "prometheus", "./deploy/prometheus/prometheus.yml", "./deploy/prometheus/alerts.yml"
        ),
        "is not deploy/prometheus/prometheus.yml",
    ),
    (
        "grafana-dash",
        _replace_volume("grafana", ":/etc/grafana/dashboards/", ":/var/dashboards/"),
        "no provider reads /var/dashboards",
    ),
    (
        "grafana-prov",
        _replace_volume(
            "grafana", ":/etc/grafana/provisioning/datasources", ":/etc/grafana/datasources"
        ),
        "provisioning/datasources",
    ),
    ("missing-service", lambda c: c["services"].pop("scheduler"), "no service 'scheduler'"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [c[1:] for c in COMPOSE_CASES], ids=[c[0] for c in COMPOSE_CASES]
)
def test_compose_mutation_is_reported(
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
    compose: dict[str, Any],
    cfg: Config,
    admin: set[tuple[str, str]],
    config_text: str,
    copies: dict[str, str],
    version: str,
) -> None:
    kw = {"config_text": config_text, "copies": copies, "version": version}
    assert check_compose(compose, cfg, admin, **kw) == []
    broken = copy.deepcopy(compose)
    mutate(broken)
    problems = check_compose(broken, cfg, admin, **kw)
    assert any(expected in p for p in problems), problems


def test_compose_problem_when_config_moves_scheduler(
    compose: dict[str, Any],
    cfg: Config,
    admin: set[tuple[str, str]],
    config_text: str,
    copies: dict[str, str],
    version: str,
) -> None:
    routes = tuple(
        dataclasses.replace(r, upstream=r.upstream.replace(":6820", ":7000")) for r in cfg.routes
    )
    problems = check_compose(
        compose,
        dataclasses.replace(cfg, routes=routes),
        admin,
        config_text=config_text,
        copies=copies,
        version=version,
    )
    assert any("scheduler:7000" in p for p in problems)


# -------------------------------------------------------------------------------------- k8s


def _container(k: K8s) -> dict[str, Any]:
    dep = k.of_kind("Deployment")[0]
    return next(
        c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "gatekeeper"
    )


def _pod(k: K8s) -> dict[str, Any]:
    return k.of_kind("Deployment")[0]["spec"]["template"]["spec"]


def _annotations(k: K8s) -> dict[str, Any]:
    meta: dict[str, Any] = k.of_kind("Deployment")[0]["spec"]["template"]["metadata"]
    annotations: dict[str, Any] = meta["annotations"]
    return annotations


def _port(name: str, value: int) -> Callable[[K8s], None]:
    def mutate(k: K8s) -> None:
        next(p for p in _container(k)["ports"] if p["name"] == name)["containerPort"] = value

    return mutate


def _probe(probe: str, key: str, value: Any) -> Callable[[K8s], None]:
    return lambda k: _container(k)[probe]["httpGet"].__setitem__(key, value)


def _mount(name: str, key: str, value: Any) -> Callable[[K8s], None]:
    def mutate(k: K8s) -> None:
        next(m for m in _container(k)["volumeMounts"] if m["name"] == name)[key] = value

    return mutate


def _doc(kind: str, name: str, fn: Callable[[dict[str, Any]], None]) -> Callable[[K8s], None]:
    return lambda k: fn(k.docs[(kind, name)])


def _labels(d: dict[str, Any], key: str) -> None:
    d["spec"][key]["matchLabels"]["app.kubernetes.io/name"] = "gate-keeper"


def _svc_target(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["spec"]["ports"][0].__setitem__("targetPort", value)


def _cm_text(d: dict[str, Any]) -> None:
    d["data"]["gatekeeper.yaml"] = d["data"]["gatekeeper.yaml"].replace(
        "drain_timeout_s: 30", "drain_timeout_s: 25"
    )


def _admin_open(d: dict[str, Any]) -> None:
    d["spec"]["ingress"][1].pop("from")


def _args(k: K8s) -> None:
    _container(k)["args"] = ["serve", "--config", "/etc/gatekeeper/config.yaml"]


def _env_key(k: K8s) -> None:
    _container(k)["env"][0]["valueFrom"]["secretKeyRef"]["key"] = "REDIS_URL"


def _image(k: K8s) -> None:
    _container(k)["image"] = "gatekeeper:0.0.9"


K8S_CASES: list[tuple[str, Callable[[K8s], None], str]] = [
    ("http-port", _port("http", 8000), "container port 'http' is 8000"),
    ("admin-port", _port("admin", 9000), "container port 'admin' is 9000"),
    ("liveness-path", _probe("livenessProbe", "path", "/health"), "livenessProbe path /health"),
    (
        "readiness-path",
        _probe("readinessProbe", "path", "/healthz"),
        "readinessProbe path /healthz is not /readyz",
    ),
    ("readiness-port", _probe("readinessProbe", "port", "http"), "readinessProbe port http"),
    ("probe-port-name", _probe("livenessProbe", "port", "admn"), "livenessProbe port admn"),
    (
        "config-mount-path",
        _mount("config", "mountPath", "/etc/gatekeeper/config.yaml"),
        "--config /etc/gatekeeper/gatekeeper.yaml is not a mounted ConfigMap key",
    ),
    ("config-subpath", _mount("config", "subPath", "config.yaml"), "has no key config.yaml"),
    ("config-args", _args, "--config /etc/gatekeeper/config.yaml"),
    (
        "configmap-text",
        _doc("ConfigMap", "gatekeeper-config", _cm_text),
        "differs from deploy/config/gatekeeper.yaml",
    ),
    ("keys-mount", _mount("keys", "mountPath", "/etc/keys"), "identity.issuers[0].jwks_file"),
    (
        "entities-mount",
        _mount("entities", "mountPath", "/etc/gatekeeper/entity"),
        "entities.sources[0].path",
    ),
    ("audit-readonly", _mount("audit", "readOnly", True), "not on a writable volume"),
    (
        "scrape-port",
        lambda k: _annotations(k).__setitem__("prometheus.io/port", "8080"),
        "prometheus.io/port 8080",
    ),
    (
        "scrape-path",
        lambda k: _annotations(k).__setitem__("prometheus.io/path", "/stats"),
        "prometheus.io/path /stats",
    ),
    (
        "grace",
        lambda k: _pod(k).__setitem__("terminationGracePeriodSeconds", 30),
        "terminationGracePeriodSeconds 30",
    ),
    (
        "replicas",
        lambda k: k.of_kind("Deployment")[0]["spec"].__setitem__("replicas", 1),
        "replicas 1 < 2",
    ),
    (
        "root",
        lambda k: _pod(k)["securityContext"].__setitem__("runAsUser", 0),
        "non-zero runAsUser",
    ),
    ("no-limits", lambda k: _container(k)["resources"].pop("limits"), "requests and limits"),
    (
        "svc-target",
        _doc("Service", "gatekeeper", _svc_target("gatekeeper", "proxy")),
        "targetPort proxy is no container port",
    ),
    (
        "svc-metrics-port",
        _doc("Service", "gatekeeper-metrics", _svc_target("gatekeeper-metrics", "http")),
        "none targets admin.port 9090",
    ),
    (
        "svc-selector",
        _doc(
            "Service",
            "gatekeeper",
            lambda d: d["spec"]["selector"].__setitem__("app.kubernetes.io/name", "gk"),
        ),
        "Service gatekeeper: selector",
    ),
    (
        "pdb-selector",
        _doc("PodDisruptionBudget", "gatekeeper", lambda d: _labels(d, "selector")),
        "PodDisruptionBudget gatekeeper: selector",
    ),
    (
        "pdb-min",
        _doc(
            "PodDisruptionBudget",
            "gatekeeper",
            lambda d: (d["spec"].pop("maxUnavailable"), d["spec"].__setitem__("minAvailable", 2)),
        ),
        "minAvailable >= replicas",
    ),
    (
        "hpa-target",
        _doc(
            "HorizontalPodAutoscaler",
            "gatekeeper",
            lambda d: d["spec"]["scaleTargetRef"].__setitem__("name", "gk"),
        ),
        "scaleTargetRef",
    ),
    (
        "hpa-api",
        _doc(
            "HorizontalPodAutoscaler",
            "gatekeeper",
            lambda d: d.__setitem__("apiVersion", "autoscaling/v1"),
        ),
        "autoscaling/v2",
    ),
    (
        "hpa-min",
        _doc(
            "HorizontalPodAutoscaler",
            "gatekeeper",
            lambda d: d["spec"].__setitem__("minReplicas", 1),
        ),
        "minReplicas 1",
    ),
    (
        "netpol-selector",
        _doc("NetworkPolicy", "gatekeeper", lambda d: _labels(d, "podSelector")),
        "podSelector does not select",
    ),
    (
        "netpol-admin-open",
        _doc("NetworkPolicy", "gatekeeper", _admin_open),
        "open beyond the monitoring namespace",
    ),
    (
        "netpol-port-name",
        _doc(
            "NetworkPolicy",
            "gatekeeper",
            lambda d: d["spec"]["ingress"][0]["ports"][0].__setitem__("port", "proxy"),
        ),
        "names no container port",
    ),
    ("env-secret-key", _env_key, "Secret gatekeeper-redis has no key REDIS_URL"),
    ("env-missing", lambda k: _container(k)["env"].pop(1), "env GATEKEEPER_AUDIT_REDIS_URL"),
    (
        "secret-key-missing",
        _doc("Secret", "gatekeeper-keys", lambda d: d["stringData"].pop("audit-seal.pem")),
        "needs key 'audit-seal.pem'",
    ),
    ("image", _image, "image 'gatekeeper:0.0.9'"),
    (
        "kustomize-tag",
        lambda k: k.kustomization["images"][0].__setitem__("newTag", "latest"),
        "newTag is not",
    ),
    (
        "kustomize-missing",
        lambda k: k.kustomization["resources"].remove("hpa.yaml"),
        "does not list hpa.yaml",
    ),
    (
        "kustomize-example",
        lambda k: k.kustomization["resources"].append("secret.example.yaml"),
        "examples must never overwrite",
    ),
    (
        "kustomize-typo",
        lambda k: k.kustomization["resources"].append("pdb.yml"),
        "resource pdb.yml does not exist",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [c[1:] for c in K8S_CASES], ids=[c[0] for c in K8S_CASES]
)
def test_k8s_mutation_is_reported(
    mutate: Callable[[K8s], None],
    expected: str,
    k8s: K8s,
    cfg: Config,
    admin: set[tuple[str, str]],
    config_text: str,
    copies: dict[str, str],
    version: str,
) -> None:
    kw = {"config_text": config_text, "copies": copies, "version": version}
    assert check_k8s(k8s, cfg, admin, **kw) == []
    broken = copy.deepcopy(k8s)
    mutate(broken)
    problems = check_k8s(broken, cfg, admin, **kw)
    assert any(expected in p for p in problems), problems


def test_k8s_problem_when_config_changes_drain_or_ports(
    k8s: K8s,
    cfg: Config,
    admin: set[tuple[str, str]],
    config_text: str,
    copies: dict[str, str],
    version: str,
) -> None:
    kw = {"config_text": config_text, "copies": copies, "version": version}
    slow = dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, drain_timeout_s=60.0))
    assert any("terminationGracePeriodSeconds 45" in p for p in check_k8s(k8s, slow, admin, **kw))
    moved = dataclasses.replace(cfg, listen=dataclasses.replace(cfg.listen, port=8443))
    problems = check_k8s(k8s, moved, admin, **kw)
    assert any("listen.port is 8443" in p for p in problems)
    assert any("none targets listen.port 8443" in p for p in problems)


def test_k8s_problem_when_admin_routes_change(
    k8s: K8s, cfg: Config, config_text: str, copies: dict[str, str], version: str
) -> None:
    # The code renames /readyz: the readiness probe must be reported, not silently pass.
    routes = {("GET", "/healthz"), ("GET", "/ready"), ("GET", "/metrics")}
    problems = check_k8s(k8s, cfg, routes, config_text=config_text, copies=copies, version=version)
    assert any("readinessProbe path /readyz is not an admin GET route" in p for p in problems)


def test_image_copies_resolves_destinations() -> None:
    ins = parse_dockerfile(
        "FROM a AS b\nCOPY x /nope\nFROM c\nCOPY --from=b /w /w\nCOPY policies/ /etc/p/\n"
        "COPY d/f.yaml /etc/f.yaml\nCOPY g.txt \\\n  /opt/\n"
    )
    assert image_copies(ins) == {
        "/etc/p": "policies",
        "/etc/f.yaml": "d/f.yaml",
        "/opt/g.txt": "g.txt",
    }
