"""Checkers that hold the deployment files to the code.

Each ``check_*`` function takes already-parsed documents (so a test can mutate a copy) plus the
facts from the code -- the validated ``deploy/config/gatekeeper.yaml``, the admin routes read from
``gatekeeper/proxy/admin.py`` with ``ast``, the package version -- and returns a list of problems,
each a sentence naming the file and the field. An empty list means the files agree with the code.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from gatekeeper.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
DEPLOY_CONFIG = REPO / "deploy" / "config" / "gatekeeper.yaml"
K8S = REPO / "deploy" / "k8s"
ADMIN_PY = REPO / "gatekeeper" / "proxy" / "admin.py"
IMAGE_NAME = "gatekeeper"
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# ------------------------------------------------------------------------------ facts from code


def package_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def console_scripts() -> dict[str, str]:
    return dict(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def admin_routes(source: str | None = None) -> set[tuple[str, str]]:
    """``{(METHOD, path)}`` from the ``app.router.add_<method>("path", ...)`` calls in admin.py."""
    tree = ast.parse(ADMIN_PY.read_text() if source is None else source)
    routes: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner, attr = node.func.value, node.func.attr
        if not (isinstance(owner, ast.Attribute) and owner.attr == "router"):
            continue
        if not attr.startswith("add_") or not node.args:
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            routes.add((attr.removeprefix("add_").upper(), first.value))
    return routes


def config_env_vars(config_text: str) -> set[str]:
    """Every ``${VAR}`` the config needs, comments excluded."""
    names: set[str] = set()
    for line in config_text.splitlines():
        code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        names.update(ENV_RE.findall(code))
    return names


def load_deploy_config() -> Config:
    """``deploy/config/gatekeeper.yaml`` through the real loader (its ``${VAR}`` must be set)."""
    return load_config(str(DEPLOY_CONFIG))


def config_files(cfg: Config) -> dict[str, str]:
    """Files the gate reads at start, as ``{config key: absolute path}``."""
    out: dict[str, str] = {}
    for i, iss in enumerate(cfg.identity.issuers):
        if iss.jwks_file:
            out[f"identity.issuers[{i}].jwks_file"] = iss.jwks_file
    for i, src in enumerate(cfg.entities.sources):
        out[f"entities.sources[{i}].path"] = src.path
    if cfg.geoip.country_db != "builtin":
        out["geoip.country_db"] = cfg.geoip.country_db
    for key in ("asn_db", "anonymous_db"):
        value = getattr(cfg.geoip, key)
        if value:
            out[f"geoip.{key}"] = value
    for i, path in enumerate(cfg.policy.files):
        out[f"policy.files[{i}]"] = path
    for i, path in enumerate(cfg.policy.shadow):
        out[f"policy.shadow[{i}]"] = path
    if cfg.policy.gpus:
        out["policy.gpus"] = cfg.policy.gpus
    if cfg.audit.signing_key:
        out["audit.signing_key"] = cfg.audit.signing_key
    if cfg.listen.tls is not None:
        out["listen.tls.cert"] = cfg.listen.tls.cert
        out["listen.tls.key"] = cfg.listen.tls.key
    return out


def audit_dirs(cfg: Config) -> dict[str, str]:
    """Folders the gate writes to: ``{config key: folder}`` of every file sink."""
    return {
        f"audit.sinks[{i}].path": os.path.dirname(s.path)
        for i, s in enumerate(cfg.audit.sinks)
        if s.type == "file" and s.path
    }


def get_routes(admin: set[tuple[str, str]]) -> set[str]:
    return {path for method, path in admin if method == "GET"}


def under(path: str, folder: str) -> bool:
    p, f = PurePosixPath(path), PurePosixPath(folder)
    return p == f or f in p.parents


def rel(path: str, folder: str) -> str:
    return str(PurePosixPath(path).relative_to(PurePosixPath(folder)))


# ----------------------------------------------------------------------------------- Dockerfile


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        text = self.args.strip()
        if text.startswith("["):
            value = json.loads(text)
            return [str(v) for v in value]
        return None

    def words(self) -> list[str]:
        form = self.exec_form()
        return form if form is not None else shlex.split(self.args)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = n
        if line.endswith("\\"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        joined = " ".join(part.strip() for part in buf)
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = []
    return out


def dockerignore_patterns(text: str) -> list[str]:
    return [
        line.strip().rstrip("/")
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def ignored(path: str, patterns: Iterable[str]) -> bool:
    parts = PurePosixPath(path.rstrip("/")).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pat) for pat in patterns for p in prefixes)


def image_copies(instructions: list[Instruction]) -> dict[str, str]:
    """``{container path: repo-relative source}`` of the final stage's ``COPY`` from the context."""
    final_stage_at = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    out: dict[str, str] = {}
    for ins in instructions[final_stage_at:]:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        words = ins.words()
        if any(w.startswith("--from") for w in words):
            continue
        args = [w for w in words if not w.startswith("--")]
        *sources, dest = args
        for src in sources:
            target = dest.rstrip("/") if len(sources) == 1 and not dest.endswith("/") else dest
            if dest.endswith("/") and not src.endswith("/"):
                target = dest + PurePosixPath(src).name
            out[target.rstrip("/") or "/"] = src.rstrip("/")
    return out


def _healthcheck_url(ins: Instruction) -> tuple[int, str] | None:
    m = re.search(r"https?://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\" )]*)", ins.args)
    return (int(m.group(1)), m.group(2)) if m else None


def check_dockerfile(
    instructions: list[Instruction],
    cfg: Config,
    admin: set[tuple[str, str]],
    *,
    repo: Path = REPO,
    ignore: list[str] | None = None,
    scripts: dict[str, str] | None = None,
) -> list[str]:
    problems: list[str] = []
    ignore = dockerignore_patterns(DOCKERIGNORE.read_text()) if ignore is None else ignore
    scripts = console_scripts() if scripts is None else scripts
    by_kw: dict[str, list[Instruction]] = {}
    for ins in instructions:
        by_kw.setdefault(ins.keyword, []).append(ins)
    froms = by_kw.get("FROM", [])
    if len(froms) < 2:
        problems.append("Dockerfile: expected a multi-stage build (two FROM lines)")
    for ins in froms:
        if not ins.args.split()[0].startswith("python:3.11-slim"):
            problems.append(f"Dockerfile:{ins.line}: base image is not python:3.11-slim")
    users = by_kw.get("USER", [])
    if not users or users[-1].args.split(":")[0] in ("root", "0"):
        problems.append("Dockerfile: the image must end with a non-root USER")
    exposed = {int(p.split("/")[0]) for ins in by_kw.get("EXPOSE", []) for p in ins.args.split()}
    for what, port in (("listen.port", cfg.listen.port), ("admin.port", cfg.admin.port)):
        if port not in exposed:
            problems.append(f"Dockerfile: EXPOSE lacks {port} ({what} in the config)")
    checks = by_kw.get("HEALTHCHECK", [])
    url = _healthcheck_url(checks[-1]) if checks else None
    if url is None:
        problems.append("Dockerfile: no HEALTHCHECK with an http://127.0.0.1:PORT/PATH URL")
    else:
        port, path = url
        if port != cfg.admin.port:
            problems.append(
                f"Dockerfile: HEALTHCHECK port {port} is not admin.port {cfg.admin.port}"
            )
        if path != "/healthz" or path not in get_routes(admin):
            problems.append(f"Dockerfile: HEALTHCHECK path {path} is not the admin GET /healthz")
        if "curl" in checks[-1].args or "wget" in checks[-1].args:
            problems.append("Dockerfile: HEALTHCHECK uses a tool python:3.11-slim does not have")
    # Sources copied from the build context exist and are not excluded by .dockerignore.
    for ins in by_kw.get("COPY", []) + by_kw.get("ADD", []):
        words = ins.words()
        if any(w.startswith("--from") for w in words):
            continue
        for src in [w for w in words if not w.startswith("--")][:-1]:
            if not (repo / src).exists():
                problems.append(f"Dockerfile:{ins.line}: COPY source {src} does not exist")
            elif ignored(src, ignore):
                problems.append(f"Dockerfile:{ins.line}: COPY source {src} is in .dockerignore")
    copies = image_copies(instructions)
    entry = by_kw.get("ENTRYPOINT", [])
    entry_words = entry[-1].words() if entry else []
    if entry_words[:1] != ["gatekeeper"] or "gatekeeper" not in scripts:
        problems.append("Dockerfile: ENTRYPOINT is not the `gatekeeper` console script")
    cmd = by_kw.get("CMD", [])
    cmd_words = cmd[-1].words() if cmd else []
    config_path = _flag(cmd_words, "--config")
    if cmd_words[:1] != ["serve"] or config_path is None:
        problems.append("Dockerfile: CMD is not `serve --config PATH`")
    else:
        if copies.get(config_path) != "deploy/config/gatekeeper.yaml":
            problems.append(
                f"Dockerfile: --config {config_path} is not where deploy/config/gatekeeper.yaml "
                "is copied"
            )
        env = " ".join(ins.args for ins in by_kw.get("ENV", []))
        if f"GATEKEEPER_CONFIG={config_path}" not in env:
            problems.append(f"Dockerfile: ENV GATEKEEPER_CONFIG is not {config_path}")
    for key, path in config_files(cfg).items():
        src = resolve_in_image(path, copies)
        if src is None and key.startswith("policy."):
            # Policies ship in the image; keys and entities are the deployer's, mounted at run time.
            problems.append(f"Dockerfile: {key} {path} is not in the image")
        elif src is not None and not (repo / src).is_file():
            problems.append(f"Dockerfile: {key} {path} comes from {src}, which does not exist")
    return problems


def resolve_in_image(path: str, copies: dict[str, str]) -> str | None:
    """The repo file the image holds at ``path`` (longest ``COPY`` destination prefix), or None."""
    best = max((dest for dest in copies if under(path, dest)), key=len, default=None)
    if best is None:
        return None
    src = copies[best]
    return src if path == best else str(PurePosixPath(src) / rel(path, best))


def _flag(words: list[str], name: str) -> str | None:
    for i, w in enumerate(words):
        if w == name and i + 1 < len(words):
            return words[i + 1]
        if w.startswith(name + "="):
            return w.split("=", 1)[1]
    return None


# ------------------------------------------------------------------------------ docker-compose


@dataclass
class Mount:
    source: str  # a repo-relative path for binds, a volume name otherwise
    target: str
    bind: bool
    read_only: bool


def compose_mounts(service: dict[str, Any]) -> list[Mount]:
    out: list[Mount] = []
    for vol in service.get("volumes", []) or []:
        if isinstance(vol, dict):
            source, target = str(vol.get("source", "")), str(vol["target"])
            bind = vol.get("type") == "bind"
            ro = bool(vol.get("read_only", False))
        else:
            parts = str(vol).split(":")
            source, target = parts[0], parts[1]
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
            bind = source.startswith((".", "/"))
        out.append(Mount(os.path.normpath(source) if bind else source, target, bind, ro))
    return out


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports of ``ports:`` (published) and ``expose:``."""
    out: set[int] = set()
    for entry in (service.get("ports") or []) + (service.get("expose") or []):
        if isinstance(entry, dict):
            out.add(int(entry["target"]))
        else:
            out.add(int(str(entry).split("/")[0].split(":")[-1]))
    return out


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _duration_s(value: Any) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(value))
    if not m or not any(m.groups()):
        raise ValueError(f"not a duration: {value!r}")
    return int(m.group(1) or 0) * 60 + float(m.group(2) or 0)


def resolve_in_compose(
    path: str, mounts: list[Mount], copies: dict[str, str]
) -> tuple[str, str] | None:
    """Where ``path`` comes from: ("bind", repo path), ("volume", name), ("image", repo path)."""
    best = max(
        (m for m in mounts if under(path, m.target)), key=lambda m: len(m.target), default=None
    )
    if best is not None:
        if not best.bind:
            return ("volume", best.source)
        inner = "" if path == best.target else rel(path, best.target)
        return ("bind", str(PurePosixPath(best.source) / inner) if inner else best.source)
    src = resolve_in_image(path, copies)
    return ("image", src) if src is not None else None


def check_compose(
    compose: dict[str, Any],
    cfg: Config,
    admin: set[tuple[str, str]],
    *,
    config_text: str,
    copies: dict[str, str],
    version: str,
    repo: Path = REPO,
) -> list[str]:
    problems: list[str] = []
    services: dict[str, dict[str, Any]] = compose.get("services", {})
    for name in ("gatekeeper", "redis", "prometheus", "grafana", "scheduler"):
        if name not in services:
            problems.append(f"docker-compose.yml: no service {name!r}")
    if problems:
        return problems
    # Images built from this repo: one tag, the package version, built from the Dockerfile.
    for name, svc in services.items():
        image = str(svc.get("image", ""))
        if not image.startswith(IMAGE_NAME + ":") and name not in ("gatekeeper", "scheduler"):
            continue
        if image != f"{IMAGE_NAME}:{version}":
            problems.append(
                f"docker-compose.yml: {name}.image {image!r} is not {IMAGE_NAME}:{version}"
            )
        build = svc.get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        dockerfile = (
            "Dockerfile"
            if isinstance(build, str)
            else (build or {}).get("dockerfile", "Dockerfile")
        )
        if context is None or (repo / context).resolve() != repo.resolve():
            problems.append(f"docker-compose.yml: {name}.build.context is not the repo root")
        elif not (repo / context / dockerfile).is_file():
            problems.append(
                f"docker-compose.yml: {name}.build.dockerfile {dockerfile} does not exist"
            )
    # Every bind mount's source exists.
    for name, svc in services.items():
        for m in compose_mounts(svc):
            if m.bind and not (repo / m.source).exists():
                problems.append(
                    f"docker-compose.yml: {name} mounts {m.source}, which does not exist"
                )
            if not m.bind and m.source not in (compose.get("volumes") or {}):
                problems.append(f"docker-compose.yml: {name} uses undeclared volume {m.source!r}")
    gk = services["gatekeeper"]
    mounts = compose_mounts(gk)
    # The config the gate runs with is deploy/config/gatekeeper.yaml.
    cmd = _command(gk)
    config_path = _flag(cmd, "--config") or gk.get("environment", {}).get("GATEKEEPER_CONFIG")
    if config_path is None:
        problems.append("docker-compose.yml: gatekeeper runs without --config")
    else:
        where = resolve_in_compose(config_path, mounts, copies)
        if where is None or where[1] != "deploy/config/gatekeeper.yaml":
            problems.append(
                f"docker-compose.yml: --config {config_path} is not deploy/config/gatekeeper.yaml "
                f"(it is {where})"
            )
    ports = container_ports(gk)
    for what, port in (("listen.port", cfg.listen.port), ("admin.port", cfg.admin.port)):
        if port not in ports:
            problems.append(f"docker-compose.yml: gatekeeper does not publish {what} {port}")
    # Every file the config names is there, from a bind mount or from the image.
    for key, path in config_files(cfg).items():
        where = resolve_in_compose(path, mounts, copies)
        if where is None or where[0] == "volume":
            problems.append(
                f"docker-compose.yml: {key} {path} is not provided by a mount or the image"
            )
        elif not (repo / where[1]).is_file():
            problems.append(
                f"docker-compose.yml: {key} {path} maps to {where[1]}, which does not exist"
            )
    for key, folder in audit_dirs(cfg).items():
        where = resolve_in_compose(folder, mounts, copies)
        if (
            where is None
            or where[0] == "image"
            or any(m.read_only for m in mounts if under(folder, m.target))
        ):
            problems.append(
                f"docker-compose.yml: {key} folder {folder} is not on a writable volume"
            )
    env = gk.get("environment") or {}
    if isinstance(env, list):
        env = dict(str(e).split("=", 1) for e in env)
    for var in sorted(config_env_vars(config_text)):
        if var not in env:
            problems.append(
                f"docker-compose.yml: gatekeeper.environment lacks {var} (the config needs it)"
            )
            continue
        parts = urlsplit(str(env[var]))
        if parts.scheme.startswith("redis"):
            if parts.hostname not in services:
                problems.append(
                    f"docker-compose.yml: {var} names host {parts.hostname!r}, not a service"
                )
            elif (parts.port or 6379) not in _redis_ports(services[parts.hostname]):
                problems.append(
                    f"docker-compose.yml: {var} port {parts.port} is not {parts.hostname}'s"
                )
    # Upstreams that are compose services listen where the route says.
    for route in cfg.routes:
        parts = urlsplit(route.upstream)
        if parts.hostname in services:
            svc = services[parts.hostname]
            port = parts.port or (443 if parts.scheme == "https" else 80)
            listen = _flag(_command(svc), "--port")
            if listen is None or int(listen) != port or port not in container_ports(svc):
                problems.append(
                    f"docker-compose.yml: route {route.name} goes to {parts.hostname}:{port}, "
                    f"but {parts.hostname} listens on {listen}"
                )
            if _flag(_command(svc), "--host") not in ("0.0.0.0", "::"):
                problems.append(f"docker-compose.yml: {parts.hostname} listens on loopback only")
    sched = services["scheduler"]
    entry = [str(w) for w in (sched.get("entrypoint") or [])]
    module = entry[entry.index("-m") + 1] if "-m" in entry else None
    if module is None or not (repo / (module.replace(".", "/") + ".py")).is_file():
        problems.append(f"docker-compose.yml: scheduler runs module {module}, which does not exist")
    try:
        grace = _duration_s(gk.get("stop_grace_period", "10s"))
    except ValueError as exc:
        problems.append(f"docker-compose.yml: gatekeeper.stop_grace_period: {exc}")
    else:
        if grace <= cfg.limits.drain_timeout_s:
            problems.append(
                f"docker-compose.yml: stop_grace_period {grace:g}s does not exceed "
                f"limits.drain_timeout_s {cfg.limits.drain_timeout_s:g}s"
            )
    problems += _check_prometheus(services, cfg, admin, repo)
    problems += _check_grafana(services, repo)
    return problems


def _redis_ports(svc: dict[str, Any]) -> set[int]:
    port = _flag(_command(svc), "--port")
    return {int(port) if port else 6379}


def _check_prometheus(
    services: dict[str, dict[str, Any]], cfg: Config, admin: set[tuple[str, str]], repo: Path
) -> list[str]:
    problems: list[str] = []
    prom = services["prometheus"]
    mounts = {m.target: m for m in compose_mounts(prom)}
    config_file = _flag(_command(prom), "--config.file") or "/etc/prometheus/prometheus.yml"
    cfg_mount = mounts.get(config_file)
    if cfg_mount is None or cfg_mount.source != "deploy/prometheus/prometheus.yml":
        return [
            f"docker-compose.yml: prometheus --config.file {config_file} is not deploy/prometheus/prometheus.yml"
        ]
    if "deploy/prometheus/alerts.yml" not in {m.source for m in mounts.values()}:
        problems.append(
            "docker-compose.yml: prometheus does not mount deploy/prometheus/alerts.yml"
        )
    path = repo / cfg_mount.source
    if not path.is_file():
        return problems  # reported as a missing mount source already
    prom_cfg = yaml.safe_load(path.read_text()) or {}
    # rule_files are relative to the config file's folder inside the container.
    base = PurePosixPath(config_file).parent
    for pattern in prom_cfg.get("rule_files") or []:
        target = str(base / pattern) if not str(pattern).startswith("/") else str(pattern)
        hits = [m for t, m in mounts.items() if fnmatch.fnmatch(t, target)]
        if not hits:
            problems.append(f"deploy/prometheus/prometheus.yml: rule file {pattern} is not mounted")
    if not prom_cfg.get("rule_files"):
        problems.append("deploy/prometheus/prometheus.yml: no rule_files (the alert rules)")
    wanted = f"gatekeeper:{cfg.admin.port}"
    found = False
    for job in prom_cfg.get("scrape_configs") or []:
        targets = {
            str(t) for sc in job.get("static_configs") or [] for t in sc.get("targets") or []
        }
        if wanted in targets:
            found = True
            path_ = job.get("metrics_path", "/metrics")
            if path_ not in get_routes(admin):
                problems.append(
                    f"deploy/prometheus/prometheus.yml: metrics_path {path_} is not an admin route"
                )
    if not found:
        problems.append(f"deploy/prometheus/prometheus.yml: no scrape target {wanted}")
    return problems


def _check_grafana(services: dict[str, dict[str, Any]], repo: Path) -> list[str]:
    problems: list[str] = []
    mounts = compose_mounts(services["grafana"])
    by_source = {m.source: m for m in mounts}
    dash = by_source.get("deploy/grafana/gatekeeper-dashboard.json")
    if dash is None:
        return [
            "docker-compose.yml: grafana does not mount deploy/grafana/gatekeeper-dashboard.json"
        ]
    prov = repo / "deploy/grafana/provisioning"
    for sub in ("datasources", "dashboards"):
        m = by_source.get(f"deploy/grafana/provisioning/{sub}")
        if m is None or m.target != f"/etc/grafana/provisioning/{sub}":
            problems.append(f"docker-compose.yml: grafana does not mount provisioning/{sub}")
    uids: set[str] = set()
    for f in sorted((prov / "datasources").glob("*.y*ml")):
        for ds in (yaml.safe_load(f.read_text()) or {}).get("datasources") or []:
            uids.add(str(ds.get("uid")))
            host = urlsplit(str(ds.get("url"))).hostname
            if ds.get("type") == "prometheus" and host not in services:
                problems.append(
                    f"{f.relative_to(repo)}: datasource url host {host!r} is not a service"
                )
    paths = {
        str((p.get("options") or {}).get("path"))
        for f in sorted((prov / "dashboards").glob("*.y*ml"))
        for p in (yaml.safe_load(f.read_text()) or {}).get("providers") or []
    }
    if str(PurePosixPath(dash.target).parent) not in paths:
        problems.append(
            f"deploy/grafana/provisioning/dashboards: no provider reads {PurePosixPath(dash.target).parent}"
        )
    path = repo / dash.source
    if path.is_file():
        problems += check_dashboard(json.loads(path.read_text()), uids)
    return problems


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def check_dashboard(dashboard: dict[str, Any], uids: set[str]) -> list[str]:
    """A provisioned dashboard cannot use ``__inputs``; its datasources must exist."""
    problems: list[str] = []
    where = "deploy/grafana/gatekeeper-dashboard.json"
    if "__inputs" in dashboard:
        problems.append(f"{where}: __inputs (export-for-sharing) are not resolved when provisioned")
    variables = {
        str(v.get("name"))
        for v in (dashboard.get("templating") or {}).get("list") or []
        if v.get("type") == "datasource"
    }
    for node in _walk(dashboard.get("panels") or []):
        ds = node.get("datasource")
        if isinstance(ds, dict) and "uid" in ds:
            uid = str(ds["uid"])
            var = re.fullmatch(r"\$\{?([A-Za-z0-9_]+)\}?", uid)
            if uid.startswith("-- "):
                continue  # Grafana's built-ins ("-- Grafana --", "-- Mixed --")
            if (var and var.group(1) not in variables) or (not var and uid not in uids):
                problems.append(f"{where}: datasource uid {uid!r} is not provisioned")
    return problems


# ---------------------------------------------------------------------------------- Kubernetes


@dataclass
class K8s:
    """All documents of deploy/k8s, by (kind, name), and which files kustomization lists."""

    docs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    files: dict[tuple[str, str], str] = field(default_factory=dict)
    kustomization: dict[str, Any] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.docs.get((kind, name))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for (k, _), d in self.docs.items() if k == kind]


def load_k8s(folder: Path = K8S) -> K8s:
    out = K8s()
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc.get("kind") == "Kustomization":
                out.kustomization = doc
                continue
            key = (str(doc["kind"]), str(doc["metadata"]["name"]))
            out.docs[key] = doc
            out.files[key] = path.name
    return out


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """``matchLabels`` (or a plain map) against labels; an empty selector matches nothing here."""
    if not selector:
        return False
    wanted = selector.get("matchLabels", selector) if "matchLabels" in selector else selector
    if "matchExpressions" in selector:
        return False  # not used by these manifests; refuse rather than half-check
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _port_of(container: dict[str, Any], port: Any) -> int | None:
    """A named or numeric port -> the container port number (None when unknown)."""
    for p in container.get("ports") or []:
        if port == p.get("name") or port == p.get("containerPort"):
            return int(p["containerPort"])
    return None


def check_k8s(
    k8s: K8s,
    cfg: Config,
    admin: set[tuple[str, str]],
    *,
    config_text: str,
    copies: dict[str, str],
    version: str,
    folder: Path = K8S,
) -> list[str]:
    problems: list[str] = []
    deployments = k8s.of_kind("Deployment")
    if len(deployments) != 1:
        return [f"deploy/k8s: expected one Deployment, found {len(deployments)}"]
    dep = deployments[0]
    dep_name = dep["metadata"]["name"]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels") or {}
    if not _matches(spec.get("selector"), labels):
        problems.append("Deployment: spec.selector does not match the pod template labels")
    replicas = int(spec.get("replicas", 1))
    if replicas < 2:
        problems.append(f"Deployment: replicas {replicas} < 2")
    containers = {c["name"]: c for c in pod["containers"]}
    c = containers.get("gatekeeper")
    if c is None:
        return [*problems, "Deployment: no container named gatekeeper"]
    # Image: the one compose builds and kustomize rewrites.
    image = str(c.get("image", ""))
    if image != f"{IMAGE_NAME}:{version}":
        problems.append(f"Deployment: image {image!r} is not {IMAGE_NAME}:{version}")
    images = {i.get("name"): i for i in k8s.kustomization.get("images") or []}
    if image.split(":")[0] not in images:
        problems.append("kustomization.yaml: images does not rewrite the Deployment's image")
    elif str(images[image.split(":")[0]].get("newTag")) != version:
        problems.append(f"kustomization.yaml: images newTag is not {version}")
    # Ports: named ports equal the config's listeners.
    for name, want, what in (
        ("http", cfg.listen.port, "listen.port"),
        ("admin", cfg.admin.port, "admin.port"),
    ):
        got = _port_of(c, name)
        if got != want:
            problems.append(
                f"Deployment: container port {name!r} is {got}, config {what} is {want}"
            )
    # Probes: on the admin port, at admin routes that exist.
    gets = get_routes(admin)
    for probe, want_path in (
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", None),
    ):
        spec_p = c.get(probe)
        if spec_p is None:
            if want_path is not None:
                problems.append(f"Deployment: no {probe}")
            continue
        http = spec_p.get("httpGet") or {}
        path, port = http.get("path"), _port_of(c, http.get("port"))
        if want_path is not None and path != want_path:
            problems.append(f"Deployment: {probe} path {path} is not {want_path}")
        if path not in gets:
            problems.append(f"Deployment: {probe} path {path} is not an admin GET route")
        if port != cfg.admin.port:
            problems.append(
                f"Deployment: {probe} port {http.get('port')} is not admin.port {cfg.admin.port}"
            )
    # Scrape annotations, when present, name the admin port and the metrics route.
    ann = spec["template"]["metadata"].get("annotations") or {}
    if "prometheus.io/port" in ann and int(ann["prometheus.io/port"]) != cfg.admin.port:
        problems.append(
            f"Deployment: prometheus.io/port {ann['prometheus.io/port']} is not admin.port"
        )
    if "prometheus.io/path" in ann and ann["prometheus.io/path"] not in gets:
        problems.append(
            f"Deployment: prometheus.io/path {ann['prometheus.io/path']} is not an admin route"
        )
    # Security context.
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    run_as = csc.get("runAsUser", psc.get("runAsUser"))
    if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True and run_as not in (None, 0)):
        problems.append(
            "Deployment: securityContext must set runAsNonRoot and a non-zero runAsUser"
        )
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("Deployment: allowPrivilegeEscalation must be false")
    res = c.get("resources") or {}
    if not (res.get("requests") and res.get("limits")):
        problems.append("Deployment: resources needs requests and limits")
    # Termination: grace > preStop sleep + drain.
    grace = float(pod.get("terminationGracePeriodSeconds", 30))
    pre = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command") or []
    pre_s = float(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0.0
    if grace <= pre_s + cfg.limits.drain_timeout_s:
        problems.append(
            f"Deployment: terminationGracePeriodSeconds {grace:g} does not exceed preStop "
            f"{pre_s:g}s + limits.drain_timeout_s {cfg.limits.drain_timeout_s:g}s"
        )
    # Config: --config names the mounted ConfigMap key, whose text is deploy/config/gatekeeper.yaml.
    args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
    config_path = _flag(args, "--config")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = c.get("volumeMounts") or []
    if config_path is None:
        problems.append("Deployment: container args lack --config")
    else:
        src = _k8s_source(config_path, mounts, volumes)
        if src is None or src[0] != "configMap":
            problems.append(f"Deployment: --config {config_path} is not a mounted ConfigMap key")
        else:
            cm = k8s.get("ConfigMap", src[1])
            text = ((cm or {}).get("data") or {}).get(src[2])
            if text is None:
                problems.append(
                    f"Deployment: --config {config_path}: ConfigMap {src[1]} has no key {src[2]}"
                )
            elif text != config_text:
                problems.append(
                    f"ConfigMap {src[1]}: {src[2]} differs from deploy/config/gatekeeper.yaml"
                )
    # Every file the config reads is mounted (and the key exists) or baked into the image.
    for key, path in config_files(cfg).items():
        src = _k8s_source(path, mounts, volumes)
        if src is None:
            image_src = resolve_in_image(path, copies)
            if image_src is None:
                problems.append(f"Deployment: {key} {path} is neither mounted nor in the image")
            continue
        kind, name, item = src
        if kind in ("configMap", "secret"):
            doc = k8s.get("ConfigMap" if kind == "configMap" else "Secret", name)
            if doc is None:
                problems.append(
                    f"Deployment: {key} {path} needs {kind} {name}, defined nowhere in deploy/k8s"
                )
                continue
            keys = set(doc.get("data") or {}) | set(doc.get("stringData") or {})
            if item not in keys:
                problems.append(f"Deployment: {key} {path} needs key {item!r} in {kind} {name}")
        elif kind == "emptyDir":
            problems.append(f"Deployment: {key} {path} is on an empty volume")
    for key, folder_ in audit_dirs(cfg).items():
        src = _k8s_source(folder_ + "/x", mounts, volumes)
        ro = any(under(folder_, m["mountPath"]) and m.get("readOnly") for m in mounts)
        if src is None or src[0] in ("configMap", "secret") or ro:
            problems.append(f"Deployment: {key} folder {folder_} is not on a writable volume")
    # Environment: every ${VAR} of the config, from a Secret that defines it.
    env = {e["name"]: e for e in c.get("env") or []}
    for var in sorted(config_env_vars(config_text)):
        ref = ((env.get(var) or {}).get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            problems.append(f"Deployment: env {var} (the config needs it) is not from a Secret")
            continue
        secret = k8s.get("Secret", ref["name"])
        if secret is None or ref["key"] not in (secret.get("stringData") or {}) | (
            secret.get("data") or {}
        ):
            problems.append(f"Deployment: env {var}: Secret {ref['name']} has no key {ref['key']}")
    problems += _check_services(k8s, labels, c, cfg)
    problems += _check_pdb_hpa(k8s, dep_name, labels, replicas)
    problems += _check_netpol(k8s, labels, c, cfg)
    problems += _check_kustomization(k8s, folder)
    return problems


def _k8s_source(
    path: str, mounts: list[dict[str, Any]], volumes: dict[str, dict[str, Any]]
) -> tuple[str, str, str] | None:
    """(volume kind, object name, key or sub-path) that provides ``path``, or None."""
    hits = [m for m in mounts if under(path, m["mountPath"])]
    if not hits:
        return None
    m = max(hits, key=lambda m: len(m["mountPath"]))
    vol = volumes.get(m["name"]) or {}
    item = m.get("subPath") or rel(path, m["mountPath"])
    if m.get("subPath") and path != m["mountPath"]:
        item = str(PurePosixPath(m["subPath"]) / rel(path, m["mountPath"]))
    if "configMap" in vol:
        return ("configMap", str(vol["configMap"]["name"]), item)
    if "secret" in vol:
        return ("secret", str(vol["secret"]["secretName"]), item)
    if "emptyDir" in vol:
        return ("emptyDir", m["name"], item)
    if "persistentVolumeClaim" in vol:
        return ("persistentVolumeClaim", m["name"], item)
    return ("unknown", m["name"], item)


def _check_services(k8s: K8s, labels: dict[str, str], c: dict[str, Any], cfg: Config) -> list[str]:
    problems: list[str] = []
    services = k8s.of_kind("Service")
    targets: dict[int, list[str]] = {}
    for svc in services:
        name = svc["metadata"]["name"]
        if not _matches(svc["spec"].get("selector"), labels):
            problems.append(f"Service {name}: selector does not match the gate pods")
        for p in svc["spec"].get("ports") or []:
            port = _port_of(c, p.get("targetPort", p.get("port")))
            if port is None:
                problems.append(
                    f"Service {name}: targetPort {p.get('targetPort')} is no container port"
                )
                continue
            targets.setdefault(port, []).append(name)
    proxy, admin_ = targets.get(cfg.listen.port, []), targets.get(cfg.admin.port, [])
    if not proxy:
        problems.append(f"Service: none targets listen.port {cfg.listen.port}")
    if not admin_:
        problems.append(f"Service: none targets admin.port {cfg.admin.port} (metrics)")
    if set(proxy) & set(admin_):
        problems.append("Service: the proxy Service also exposes the admin port")
    return problems


def _check_pdb_hpa(k8s: K8s, dep_name: str, labels: dict[str, str], replicas: int) -> list[str]:
    problems: list[str] = []
    pdbs = k8s.of_kind("PodDisruptionBudget")
    if not pdbs:
        problems.append("PodDisruptionBudget: missing")
    for pdb in pdbs:
        spec = pdb["spec"]
        if not _matches(spec.get("selector"), labels):
            problems.append(
                f"PodDisruptionBudget {pdb['metadata']['name']}: selector does not match the pods"
            )
        if "minAvailable" in spec and int(spec["minAvailable"]) >= replicas:
            problems.append("PodDisruptionBudget: minAvailable >= replicas blocks every node drain")
        if "maxUnavailable" in spec and int(spec["maxUnavailable"]) < 1:
            problems.append("PodDisruptionBudget: maxUnavailable < 1 blocks every node drain")
    hpas = k8s.of_kind("HorizontalPodAutoscaler")
    if not hpas:
        problems.append("HorizontalPodAutoscaler: missing")
    for hpa in hpas:
        ref = hpa["spec"].get("scaleTargetRef") or {}
        if hpa.get("apiVersion") != "autoscaling/v2":
            problems.append("HorizontalPodAutoscaler: apiVersion is not autoscaling/v2")
        if (ref.get("kind"), ref.get("name"), ref.get("apiVersion")) != (
            "Deployment",
            dep_name,
            "apps/v1",
        ):
            problems.append(
                f"HorizontalPodAutoscaler: scaleTargetRef {ref} is not Deployment {dep_name}"
            )
        lo, hi = int(hpa["spec"].get("minReplicas", 1)), int(hpa["spec"].get("maxReplicas", 0))
        if lo < 2 or hi < lo:
            problems.append(f"HorizontalPodAutoscaler: minReplicas {lo} / maxReplicas {hi}")
    return problems


def _check_netpol(k8s: K8s, labels: dict[str, str], c: dict[str, Any], cfg: Config) -> list[str]:
    problems: list[str] = []
    pols = k8s.of_kind("NetworkPolicy")
    if not pols:
        return ["NetworkPolicy: missing"]
    proxy_open = False
    for pol in pols:
        name = pol["metadata"]["name"]
        spec = pol["spec"]
        if not _matches(spec.get("podSelector"), labels):
            problems.append(f"NetworkPolicy {name}: podSelector does not select the gate pods")
            continue
        for rule in spec.get("ingress") or []:
            ports = {_port_of(c, p.get("port")) for p in rule.get("ports") or []}
            if not rule.get("ports"):
                ports = {cfg.listen.port, cfg.admin.port}  # no ports: every port
            if None in ports:
                problems.append(f"NetworkPolicy {name}: a port names no container port")
            if cfg.listen.port in ports:
                proxy_open = True
            if cfg.admin.port in ports:
                peers = rule.get("from") or []
                only_monitoring = bool(peers) and all(
                    set(p) == {"namespaceSelector"}
                    and (p["namespaceSelector"].get("matchLabels") or {})
                    == {"kubernetes.io/metadata.name": "monitoring"}
                    for p in peers
                )
                if not only_monitoring:
                    problems.append(
                        f"NetworkPolicy {name}: admin port {cfg.admin.port} is open beyond the "
                        "monitoring namespace"
                    )
    if not proxy_open:
        problems.append(f"NetworkPolicy: nothing admits traffic to listen.port {cfg.listen.port}")
    return problems


def _check_kustomization(k8s: K8s, folder: Path) -> list[str]:
    problems: list[str] = []
    resources = [str(r) for r in k8s.kustomization.get("resources") or []]
    if not resources:
        return ["kustomization.yaml: missing or without resources"]
    for r in resources:
        if not (folder / r).is_file():
            problems.append(f"kustomization.yaml: resource {r} does not exist")
        if ".example." in r:
            problems.append(
                f"kustomization.yaml: lists {r}; examples must never overwrite real data"
            )
    for path in sorted(folder.glob("*.yaml")):
        if (
            path.name != "kustomization.yaml"
            and ".example." not in path.name
            and path.name not in resources
        ):
            problems.append(f"kustomization.yaml: does not list {path.name}")
    return problems
