"""Typed, frozen settings for gatekeeper (CONTRACT §2), and the validating loader.

``load_config(path)`` reads ``gatekeeper.yaml``, substitutes ``${ENV}``, resolves relative paths
against the config file's folder and returns a frozen ``Config``. Unknown keys, wrong types, bad
CIDRs and URLs are all collected and raised together as one ``ConfigError`` whose lines read
``file:line: key.path: message``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class TLSConfig:
    cert: str
    key: str


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
    """Where the generic adapter finds GPU count, model and hours (header names or JSON pointers)."""

    gpus_header: str | None = None
    gpus_pointer: str | None = None
    model_header: str | None = None
    model_pointer: str | None = None
    hours_header: str | None = None
    hours_pointer: str | None = None


@dataclass(frozen=True, slots=True)
class RouteConfig:
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
    generic: GenericAdapterConfig | None = None


@dataclass(frozen=True, slots=True)
class Config:
    source: str = "<defaults>"
    base_dir: str = "."
    listen: ListenConfig = field(default_factory=ListenConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    workers: int = 1
    trusted_proxies: tuple[str, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    entities: EntitiesConfig = field(default_factory=EntitiesConfig)
    geoip: GeoConfig = field(default_factory=GeoConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    routes: tuple[RouteConfig, ...] = ()
