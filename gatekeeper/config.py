"""Typed, frozen settings for gatekeeper (docs/configuration.md), and the validating loader.

``load_config(path)`` reads ``gatekeeper.yaml``, substitutes ``${ENV}``, resolves relative paths
against the config file's folder and returns a frozen ``Config``. Unknown keys, wrong types, bad
CIDRs and URLs are all collected and raised together as one ``ConfigError`` whose lines read
``file:line: key.path: message``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """A listener's certificate chain and private key (PEM files)."""

    cert: str
    key: str

    def server_context(self) -> ssl.SSLContext:
        """The server side of TLS with this certificate, TLS 1.2 at the least."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


@dataclass(frozen=True, slots=True)
class ListenConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    tls: TLSConfig | None = None


@dataclass(frozen=True, slots=True)
class AdminConfig:
    host: str = "127.0.0.1"
    port: int = 9090


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 1_048_576
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 75.0  # idle time between requests on a kept-alive connection
    body_timeout_s: float = 30.0  # reading a body the gate must measure (408 when exceeded)
    upstream_timeout_s: float = 60.0
    upstream_connect_timeout_s: float = 5.0
    max_header_bytes: int = 16_384
    drain_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ClaimMap:
    """Which JWT claim fills which principal attribute."""

    subject: str = "sub"
    tenant: str = "org_id"
    entity: str = "entity_id"
    nationality: str = "nationality"
    purpose: str = "purpose"


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwks_file: str | None = None
    jwks_url: str | None = None
    claims: ClaimMap = field(default_factory=ClaimMap)
    required_claims: tuple[str, ...] = ("exp", "iat", "sub")
    jwks_refresh_s: float = 300.0  # scheduled refresh period for jwks_url
    jwks_max_stale_s: float = 86_400.0  # serve cached keys this long when the IdP is down
    jwks_min_fetch_interval_s: float = 30.0  # rate limit for unknown-kid refetches
    jwks_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    leeway_s: float = 30.0
    issuers: tuple[IssuerConfig, ...] = ()
    cache_size: int = 10_000
    max_token_bytes: int = 16_384


@dataclass(frozen=True, slots=True)
class EntitySource:
    path: str
    format: str = "native"  # native | ftm | csl


@dataclass(frozen=True, slots=True)
class EntitiesConfig:
    sources: tuple[EntitySource, ...] = ()
    beneficial_owner_threshold: float = 25.0
    max_bad_rows: int = 0  # a source with more bad rows than this fails the load
    # flags that count as a listing for the US/OFAC 50% rule (ownership.affiliated);
    # None = ownership.LISTING_FLAGS
    listing_flags: tuple[str, ...] | None = None
    # flags that each get their own 50% rule (ownership.affiliated_flags);
    # None = ownership.AFFILIATION_FLAGS
    affiliation_flags: tuple[str, ...] | None = None
    # poll the source files every this many seconds and reload when they changed (0 = only on
    # SIGHUP or POST /v1/reload); a reload of entity data is re-screened (docs/entities.md)
    watch_interval_s: float = 0.0


@dataclass(frozen=True, slots=True)
class GeoConfig:
    country_db: str = "builtin"
    asn_db: str | None = None
    anonymous_db: str | None = None
    internal_networks: tuple[str, ...] = ("10.0.0.0/8", "127.0.0.0/8", "::1/128")
    cache_size: int = 65_536


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    files: tuple[str, ...] = ()
    shadow: tuple[str, ...] = ()
    gpus: str | None = None
    default_action: str = "deny"


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    store: str = "memory"  # memory | redis://... | rediss://... | redis+cluster://host:port
    on_store_error: str = "deny"  # deny | allow
    timeout_s: float = 0.5
    key_prefix: str = "gk"
    batch: bool = True  # coalesce concurrent quota calls into one Redis pipeline
    # Redis only (stores/lease.py): lease budget for this many requests at a time, far from the
    # limit; 0 sends every request to Redis. Leases used up fast grow, up to lease_requests_max.
    lease_requests: int = 16
    lease_requests_max: int = 256
    lease_ttl_s: float = 1.0


@dataclass(frozen=True, slots=True)
class AuditSinkConfig:
    type: str  # file | redis_stream | stdout
    path: str | None = None
    rotate_bytes: int = 104_857_600
    url: str | None = None
    stream: str = "gatekeeper:audit"
    maxlen: int = 1_000_000
    required: bool = True  # a failing required sink blocks requests (503)


@dataclass(frozen=True, slots=True)
class AuditConfig:
    durability: str = "fsync"  # fsync | buffered
    signing_key: str | None = None
    sinks: tuple[AuditSinkConfig, ...] = ()
    replica: str | None = None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    path_prefix: str = "/"
    path_regex: str | None = None
    methods: tuple[str, ...] = ()  # empty: any method


@dataclass(frozen=True, slots=True)
class GenericAdapterConfig:
    """Where the generic adapter finds GPU count, model and hours (headers or JSON pointers)."""

    gpus_header: str | None = None
    gpus_pointer: str | None = None
    model_header: str | None = None
    model_pointer: str | None = None
    hours_header: str | None = None
    hours_pointer: str | None = None


@dataclass(frozen=True, slots=True)
class KubernetesTemplate:
    """Where one kind keeps a pod template, and how many pods of it may run at once.

    Paths are dotted field names (``spec.template``) relative to the object, or to each element of
    ``each`` (a list or a map of the object). ``count`` factors are multiplied: ``a|b=1`` is the
    largest of the fields present (1 when none is), ``size-1=1`` one less than the field, a factor
    without a default is unbounded when absent, ``$.`` starts at the object, ``@nodes`` is the
    node count of the pool the pods may land on (DaemonSet).
    """

    template: str
    each: str | None = None
    count: tuple[str, ...] = ()
    when: str | None = None  # only when this path is present (``path=value``: and equals value)
    unless: str | None = None  # only when that does not hold


@dataclass(frozen=True, slots=True)
class KubernetesWorkload:
    """A kind the gate measures; without ``templates`` it never carries pods (measures zero)."""

    kind: str
    api_version: str  # group/version, e.g. kubeflow.org/v1 (core kinds: v1)
    resource: str | None = None  # the URL's plural; default: the kind in lower case plus "s"
    templates: tuple[KubernetesTemplate, ...] = ()
    hours: tuple[str, ...] = ()  # fields in seconds that bound the run (the smallest counts)
    scale: str | None = None  # the field the /scale subresource sets


@dataclass(frozen=True, slots=True)
class KubernetesAccelerator:
    """An extended resource or DRA device class and the physical accelerators one unit touches
    (0: not an accelerator at all, e.g. an RDMA device)."""

    name: str  # a trailing * matches every name with that prefix
    devices: float = 1.0
    model: str | None = None  # the catalog model it always is, when known


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    """Operator additions to the Kubernetes measurement tables (``kubernetes:``)."""

    workloads: tuple[KubernetesWorkload, ...] = ()
    accelerator_resources: tuple[KubernetesAccelerator, ...] = ()
    device_classes: tuple[KubernetesAccelerator, ...] = ()
    # Kueue's kueue.x-k8s.io/max-exec-time-seconds bounds hours only where Kueue enforces it
    kueue_enforces_max_exec_time: bool = False


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One route: which requests it matches, where it forwards them and how it measures them."""

    name: str
    upstream: str
    match: RouteMatch = field(default_factory=RouteMatch)
    adapter: str = "none"  # slurm | kubernetes | ray | generic | none
    mode: str = "enforce"  # enforce | monitor
    gpu_model: str | None = None
    max_hours: float = 168.0
    token_headers: tuple[str, ...] = ()  # extra token sources, e.g. X-SLURM-USER-TOKEN
    unknown_gpu: str = "controlled"  # controlled (highest TPP in catalog) | deny
    authenticate: bool = True
    # removed from the path before forwarding (Envoy prefix_rewrite)
    strip_prefix: str | None = None
    generic: GenericAdapterConfig | None = None
    # kubernetes: GPUs per pod assumed when a PATCH/scale changes a count without a pod template
    assume_gpus_per_pod: float = 8.0
    # the inventory entry (``inventory[].name``) that bounds this route's requests when the request
    # itself names no partition / node pool the inventory knows
    inventory: str | None = None
    # kubernetes: this route's own tables (default: the top-level ``kubernetes:`` section)
    kubernetes: KubernetesConfig | None = None
    # ray: count only the GPUs a request declares, without a Ray pool (unsafe: a job's code can
    # reserve any GPU of the cluster)
    unsafe_ray_without_inventory: bool = False


@dataclass(frozen=True, slots=True)
class InventoryAccelerators:
    """The accelerators of one node: ``count`` devices of catalog model ``model``."""

    model: str
    count: int


@dataclass(frozen=True, slots=True)
class InventoryNode:
    """One node of a pool; shares (Slurm shards, MPS, time-slicing) are slices of its devices."""

    accelerators: InventoryAccelerators
    shards_per_gpu: int = 0
    mps_per_gpu: int = 0


@dataclass(frozen=True, slots=True)
class InventoryEntry:
    """What one partition / node pool / Ray cluster behind the gate can physically grant."""

    name: str
    scheduler: str  # slurm | kubernetes | ray
    nodes: int
    node: InventoryNode
    partitions: tuple[str, ...] = ()  # slurm partitions this entry covers
    node_selector: dict[str, str] = field(default_factory=dict)  # kubernetes node labels
    max_hours: float | None = None
    # slurm: the partitions give every job whole nodes (OverSubscribe=EXCLUSIVE)
    exclusive: bool = False


@dataclass(frozen=True, slots=True)
class AdmissionTenants:
    """Who is behind an admission request: userInfo.username or the namespace -> entity id."""

    users: dict[str, str] = field(default_factory=dict)
    namespaces: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """The validating admission webhook listener (``POST /v1/admission``, TLS)."""

    host: str = "0.0.0.0"
    port: int = 8443
    tls: TLSConfig | None = None
    tenants: AdmissionTenants = field(default_factory=AdmissionTenants)
    inventory: str | None = None  # default inventory entry for measured objects
    gpu_model: str | None = None
    max_hours: float = 168.0
    mode: str = "enforce"  # enforce | monitor
    unknown_gpu: str = "controlled"
    # where the webhook reads the DRA claims a pod names, as its own service account
    api_server: str | None = None
    token_file: str | None = None
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    source: str = "<defaults>"
    base_dir: str = "."
    listen: ListenConfig = field(default_factory=ListenConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    workers: int = 1
    worker_cpu_affinity: str = "none"  # or "auto": worker i on CPU i (gatekeeper/affinity.py)
    trusted_proxies: tuple[str, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    entities: EntitiesConfig = field(default_factory=EntitiesConfig)
    geoip: GeoConfig = field(default_factory=GeoConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    routes: tuple[RouteConfig, ...] = ()
    inventory: tuple[InventoryEntry, ...] = ()
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    admission: AdmissionConfig | None = None


# -------------------------------------------------------------------------------------- loader
#
# The loader is driven by the dataclasses above (the walker is in ``configload.py``): every field is
# a key, its annotation is the type to check, its default makes it optional. Extra checks (ranges,
# choices, URLs, CIDRs, paths) are declared per (class, field) in _CHECKS below, so a new setting
# needs one line, not a new parser.

import os  # noqa: E402
from typing import Any  # noqa: E402

# The walker's names under the aliases the table below was written with.
from .configcheck import cross_checks, inherit_kubernetes  # noqa: E402
from .configload import Check  # noqa: E402
from .configload import Ctx as _Ctx  # noqa: E402
from .configload import build as _build  # noqa: E402
from .configload import choice as _choice  # noqa: E402
from .configload import cidr as _cidr  # noqa: E402
from .configload import db_path as _db_path  # noqa: E402
from .configload import each as _each  # noqa: E402
from .configload import file_path as _path  # noqa: E402
from .configload import header_names as _header_names  # noqa: E402
from .configload import http_methods as _methods  # noqa: E402
from .configload import nonempty as _nonempty  # noqa: E402
from .configload import path_prefix as _prefix  # noqa: E402
from .configload import regex as _regex  # noqa: E402
from .configload import store_url as _store_url  # noqa: E402
from .configload import url_of as _url  # noqa: E402
from .configload import value_range as _range  # noqa: E402
from .errors import ConfigError, Problem  # noqa: E402
from .yamlsrc import LocDict, load_located, parse_located  # noqa: E402

_CHECKS: dict[tuple[type, str], Check] = {
    (ListenConfig, "port"): _range(0, 65535),
    (AdminConfig, "port"): _range(0, 65535),
    (TLSConfig, "cert"): _path,
    (TLSConfig, "key"): _path,
    (Config, "workers"): _range(1, 64),
    (Config, "worker_cpu_affinity"): _choice("none", "auto"),
    (Config, "trusted_proxies"): _each(_cidr),
    (LimitsConfig, "max_body_bytes"): _range(0),
    (LimitsConfig, "header_timeout_s"): _range(0.001),
    (LimitsConfig, "keepalive_timeout_s"): _range(0.001, 3600),
    (LimitsConfig, "body_timeout_s"): _range(0.001),
    (LimitsConfig, "upstream_timeout_s"): _range(0.001),
    (LimitsConfig, "upstream_connect_timeout_s"): _range(0.001),
    (LimitsConfig, "max_header_bytes"): _range(1024),
    (LimitsConfig, "drain_timeout_s"): _range(0),
    (IdentityConfig, "leeway_s"): _range(0, 3600),
    (IdentityConfig, "cache_size"): _range(0),
    (IssuerConfig, "issuer"): _nonempty,
    (IssuerConfig, "audiences"): _nonempty,
    (IssuerConfig, "jwks_file"): _path,
    (IssuerConfig, "jwks_url"): _url("http", "https"),
    (IssuerConfig, "algorithms"): _each(
        _choice(
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
        )
    ),
    (EntitySource, "path"): _path,
    (EntitySource, "format"): _choice("native", "ftm", "csl"),
    (EntitiesConfig, "beneficial_owner_threshold"): _range(0, 100),
    (EntitiesConfig, "watch_interval_s"): _range(0, 86_400),
    (GeoConfig, "country_db"): _db_path,
    (GeoConfig, "asn_db"): _path,
    (GeoConfig, "anonymous_db"): _path,
    (GeoConfig, "internal_networks"): _each(_cidr),
    (PolicyConfig, "files"): _each(_path),
    (PolicyConfig, "shadow"): _each(_path),
    (PolicyConfig, "gpus"): _path,
    (PolicyConfig, "default_action"): _choice("deny", "allow"),
    (QuotaConfig, "store"): _store_url,
    (QuotaConfig, "on_store_error"): _choice("deny", "allow"),
    (QuotaConfig, "timeout_s"): _range(0.001, 60),
    (QuotaConfig, "lease_requests"): _range(0, 10_000),
    (QuotaConfig, "lease_requests_max"): _range(0, 100_000),
    (QuotaConfig, "lease_ttl_s"): _range(0.01, 60),
    (AuditConfig, "durability"): _choice("fsync", "buffered"),
    (AuditConfig, "signing_key"): _path,
    (AuditSinkConfig, "type"): _choice("file", "redis_stream", "stdout"),
    (AuditSinkConfig, "path"): _path,
    (AuditSinkConfig, "url"): _url("redis", "rediss"),
    (AuditSinkConfig, "rotate_bytes"): _range(4096),
    (AuditSinkConfig, "maxlen"): _range(1),
    (RouteConfig, "name"): _nonempty,
    (RouteConfig, "upstream"): _url("http", "https"),
    (RouteConfig, "adapter"): _choice("slurm", "kubernetes", "ray", "generic", "none"),
    (RouteConfig, "mode"): _choice("enforce", "monitor"),
    (RouteConfig, "max_hours"): _range(0.001),
    (RouteConfig, "unknown_gpu"): _choice("controlled", "deny"),
    (RouteConfig, "token_headers"): _header_names,
    (RouteConfig, "strip_prefix"): _prefix,
    (RouteConfig, "assume_gpus_per_pod"): _range(0),
    (RouteConfig, "inventory"): _nonempty,
    (InventoryEntry, "name"): _nonempty,
    (InventoryEntry, "scheduler"): _choice("slurm", "kubernetes", "ray"),
    (InventoryEntry, "nodes"): _range(1, 10_000_000),
    (InventoryEntry, "max_hours"): _range(0.001),
    (InventoryAccelerators, "model"): _nonempty,
    (InventoryAccelerators, "count"): _range(0, 1024),
    (InventoryNode, "shards_per_gpu"): _range(0, 1_000_000),
    (InventoryNode, "mps_per_gpu"): _range(0, 1_000_000),
    (KubernetesWorkload, "kind"): _nonempty,
    (KubernetesWorkload, "api_version"): _nonempty,
    (KubernetesAccelerator, "name"): _nonempty,
    (KubernetesAccelerator, "devices"): _range(0, 1024),
    (AdmissionConfig, "port"): _range(0, 65535),
    (AdmissionConfig, "mode"): _choice("enforce", "monitor"),
    (AdmissionConfig, "max_hours"): _range(0.001),
    (AdmissionConfig, "unknown_gpu"): _choice("controlled", "deny"),
    (AdmissionConfig, "inventory"): _nonempty,
    (AdmissionConfig, "api_server"): _url("http", "https"),
    (AdmissionConfig, "token_file"): _path,
    (AdmissionConfig, "ca_file"): _path,
    (RouteMatch, "path_prefix"): _prefix,
    (RouteMatch, "path_regex"): _regex,
    (RouteMatch, "methods"): _methods,
}


def config_from_yaml(data: Any, filename: str, base_dir: str) -> Config:
    """Validate already-parsed YAML; raises ``ConfigError`` with every problem."""
    ctx = _Ctx(filename, base_dir, _CHECKS)
    if data is None:
        data = LocDict()
        data.line, data.key_lines = 1, {}
    if not isinstance(data, LocDict):
        raise ConfigError([Problem(filename, 1, "", "the config must be a mapping")])
    cfg = _build(Config, data, ctx, "")
    if cfg is not None:
        cross_checks(cfg, data, ctx)
    if ctx.problems or cfg is None:
        ordered: list[Problem] = sorted(ctx.problems, key=lambda p: p.line or 0)
        raise ConfigError(ordered)
    return _replace_source(inherit_kubernetes(cfg), filename, base_dir)


def _replace_source(cfg: Config, filename: str, base_dir: str) -> Config:
    from dataclasses import replace

    return replace(cfg, source=filename, base_dir=base_dir)


def load_config(path: str) -> Config:
    """Load and validate ``gatekeeper.yaml`` at ``path``."""
    path = os.path.abspath(path)
    data = load_located(path)
    return config_from_yaml(data, path, os.path.dirname(path))


def parse_config_text(text: str, filename: str = "<string>", base_dir: str = ".") -> Config:
    """Validate config given as text (tests, ``--config -``)."""
    return config_from_yaml(parse_located(text, filename), filename, os.path.abspath(base_dir))
