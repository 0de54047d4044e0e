"""The facts a request accumulates on its way through the pipeline, and the decision it ends in.

Everything here is plain data: no aiohttp types (the edge converts; the core stays testable).
Reason codes are kebab-case strings shared verbatim by the HTTP problem body, the audit record and
the metric labels.

``RequestContext`` is *loud*: reading a fact that no stage has set raises ``FactNotSet`` instead of
returning ``None``; use ``ctx.has("geo")`` where absence is legitimate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

# Actions, in precedence order (deny beats require_license beats allow).
DENY = "deny"
REQUIRE_LICENSE = "require_license"
ALLOW = "allow"
FLAG = "flag"
ACTIONS = (DENY, REQUIRE_LICENSE, ALLOW, FLAG)

# Reason codes raised by the gate itself (policies add their rule ids as reasons).
R_NO_ROUTE = "no-route"
R_BAD_PATH = "bad-path"
R_BODY_TOO_LARGE = "body-too-large"
R_BAD_BODY = "bad-body"
R_UNKNOWN_ENTITY = "unknown-entity"
R_QUOTA_EXHAUSTED = "quota-exhausted"
R_LICENSE_EXHAUSTED = "license-exhausted"
R_STORE_UNAVAILABLE = "store-unavailable"
R_AUDIT_UNAVAILABLE = "audit-unavailable"
R_UPSTREAM_UNREACHABLE = "upstream-unreachable"
R_UPSTREAM_TIMEOUT = "upstream-timeout"
R_UNKNOWN_GPU_MODEL = "unknown-gpu-model"
R_UNMEASURABLE = "unmeasurable-request"
R_WORKLOAD_CHANGED = "workload-changed"  # a Scale review whose workload changed since its read
R_DEFAULT = "default-action"
R_CONTENT_ENCODING = "content-encoding"
R_INTERNAL_ERROR = "internal-error"
R_BAD_HTTP = "bad-http"
R_HEADER_TOO_LARGE = "header-too-large"
R_BODY_TIMEOUT = "body-timeout"
R_BODY_INCOMPLETE = "body-incomplete"
R_OVERRIDE_HEADER = "override-header"
R_OVERRIDE_PARAM = "override-param"
R_PURPOSE_REPEATED = "purpose-repeated"  # more than one X-Gatekeeper-Purpose header
R_PURPOSE_INVALID = "purpose-invalid"  # an oversized X-Gatekeeper-Purpose header
R_UNKNOWN_PREFIX = "unknown:"  # + attribute: a deny/require_license rule applied on unknown data


class FactNotSet(AttributeError):
    """A stage read a fact that no earlier stage produced (a wiring bug, not a client error)."""


def _pick(fact: Any, *names: str) -> dict[str, Any]:
    """Those fields of ``fact``, tuples as lists."""
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(fact, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _json(fact: Any, *omit: str) -> dict[str, Any]:
    """The fields of the dataclass ``fact`` in their order, but for ``omit``."""
    return _pick(fact, *(f.name for f in fields(fact) if f.name not in omit))


# Fields stand in the order the JSON shows them (``to_json``); callers name them all.
@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """The verified identity behind a request (from a JWT)."""

    subject: str
    tenant: str | None = None
    entity: str | None = None
    issuer: str
    nationality: str | None = None
    purpose: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    expires_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return _json(self, "purpose", "claims", "expires_at")


@dataclass(frozen=True, slots=True)
class License:
    """An export licence held by an entity (docs/entities.md)."""

    id: str
    eccns: tuple[str, ...]
    countries: tuple[str, ...]
    expires: str | None  # ISO date, inclusive
    max_tpp_hours: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "eccns": list(self.eccns),
            "countries": list(self.countries),
            "expires": self.expires,
            "max_tpp_hours": self.max_tpp_hours,
        }


@dataclass(frozen=True, slots=True)
class OwnershipProfile:
    """An entity's resolved ownership facts (docs/entities.md); computed once per registry load."""

    id: str
    known: bool
    name: str | None = None
    kind: str | None = None
    country: str | None = None
    hq_country: str | None = None
    flags: frozenset[str] = frozenset()
    affiliated: bool = False
    listed_share: float = 0.0
    listed_via: tuple[str, ...] = ()
    ultimate_parent: str | None = None
    parent_hq_country: str | None = None
    beneficial_owners: tuple[tuple[str, float], ...] = ()
    parent_path: tuple[str, ...] = ()
    affiliated_paths: tuple[tuple[str, ...], ...] = ()
    licenses: tuple[License, ...] = ()
    # Listing flags whose own 50% rule reaches the entity (one fixpoint per flag, so one
    # jurisdiction's lists never aggregate with another's); ``affiliated`` is the US rule.
    affiliated_flags: frozenset[str] = frozenset()
    # Not affiliated on the stated shares, but would be if the holdings of unknown size (owners
    # in ``unknown_share_edges``) were as large as the known ones leave room for, and those
    # stated as bounds (``bounded_share_edges``) as large as their upper bounds.
    possibly_affiliated: bool = False
    unknown_share_edges: tuple[str, ...] = ()  # owners whose holding has no stated size
    # (owner, lower, upper): holdings stated as bounds ("< 40", "25-50%"), in percent
    bounded_share_edges: tuple[tuple[str, float, float], ...] = ()
    datasets: tuple[str, ...] = ()  # provenance: the publisher's datasets naming the entity
    alt_names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The shape printed by ``gatekeeper entities show`` and embedded in decisions."""
        return {
            **_pick(self, "id", "known", "name", "kind", "country", "hq_country"),
            "flags": sorted(self.flags),
            "affiliated": self.affiliated,
            "listed_share": self.listed_share,
            "listed_via": list(self.listed_via),
            "affiliated_flags": sorted(self.affiliated_flags),
            "possibly_affiliated": self.possibly_affiliated,
            "unknown_share_edges": [{"owner": o} for o in self.unknown_share_edges],
            "bounded_share_edges": [
                {"owner": o, "min": lo, "max": hi} for o, lo, hi in self.bounded_share_edges
            ],
            "ultimate_parent": self.ultimate_parent,
            "parent_hq_country": self.parent_hq_country,
            "beneficial_owners": [{"id": i, "share": s} for i, s in self.beneficial_owners],
            "paths": {
                "ultimate_parent": list(self.parent_path),
                "affiliated": [list(p) for p in self.affiliated_paths],
            },
            "licenses": [lic.to_json() for lic in self.licenses],
            "alt_names": list(self.alt_names),
            "datasets": list(self.datasets),
        }


@dataclass(frozen=True, slots=True)
class GeoInfo:
    """Where the client address is (GeoIP), and what kind of network it belongs to."""

    ip: str
    known: bool = False
    country: str | None = None
    registered_country: str | None = None
    asn: int | None = None
    asn_org: str | None = None
    anonymous: bool = False
    vpn: bool = False
    tor: bool = False
    hosting: bool = False
    proxy: bool = False
    internal: bool = False

    def to_json(self) -> dict[str, Any]:
        # where the address is first, then the other fields in their order
        where = {"country": self.country, "registered_country": self.registered_country}
        return where | _json(self, "ip", *where)


@dataclass(frozen=True, slots=True)
class ComputeRequest:
    """How much compute a submission asks for (docs/gpus.md), measured by a scheduler adapter."""

    gpu_model: str | None
    gpus: float
    hours: float
    gpu_hours: float
    tpp: float
    tpp_hours: float
    eccn: str | None
    controlled: bool
    # False when a model the request may land on is outside the catalog (priced as its top part)
    model_known: bool = True
    # what the bound rests on (e.g. ``unknown-gpu-model``, ``gpus-per-node-from-inventory``,
    # ``hours-from-route-max``): kebab-case, sorted; shown in ``check`` and the audit record
    assumptions: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Also the record's ``compute``: written out, as it is built for every request."""
        return {
            "gpu_model": self.gpu_model,
            "gpus": self.gpus,
            "hours": self.hours,
            "gpu_hours": self.gpu_hours,
            "tpp": self.tpp,
            "tpp_hours": self.tpp_hours,
            "eccn": self.eccn,
            "controlled": self.controlled,
            "model_known": self.model_known,
            "assumptions": list(self.assumptions),
        }


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The request attributes a policy may read (``request.*``) plus what the audit needs."""

    route: str
    method: str
    path: str
    client_ip: str
    purpose: str | None = None
    mode: str = "enforce"
    # A Kubernetes write the API server decides on but does not store (``?dryRun=All``, a
    # review's ``dryRun``): decided and audited like the real write, charged nothing.
    dry_run: bool = False
    # An offline decision (``gatekeeper check`` without ``--consume``, admin ``/v1/explain``):
    # quota is read like a dry run and taken from no bucket, and the live counters (refusals,
    # store errors, fail-open) do not count it, since it is a question, not a request.
    explain: bool = False


@dataclass(frozen=True, slots=True)
class QuotaDef:
    """A compute budget declared in a policy file (``quotas:``, docs/policy.md)."""

    name: str
    unit: str  # tpp_hours | gpu_hours | requests
    limit: float
    window_s: int  # rolling window length in seconds
    per: str  # tenant | entity | ultimate_parent


@dataclass(slots=True)
class QuotaState:
    """What the quota stage did: consumed amount, remaining budget, and how to refund it."""

    name: str | None = None
    consumed: float = 0.0
    remaining: float | None = None
    limit: float | None = None
    window_s: int | None = None
    retry_after_s: int | None = None
    fail_open: bool = False
    reservation: Any = None  # opaque, store-specific; used to refund exactly once
    refunded: bool = False
    error: str | None = None  # an explanation's store failure, named for whoever asked

    def to_json(self) -> dict[str, Any]:
        out = _json(self, "retry_after_s", "reservation", "error")
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class Decision:
    """The gate's verdict on one request: the decision JSON and the audit record's ``decision``
    (docs/reference.md)."""

    action: str
    rule: str | None
    reasons: list[str]
    status: int | None = None  # what the gate answers when it blocks; None when it forwards
    enforced: bool = True
    policy_version: str | None = None
    license: str | None = None
    quotas: tuple[str, ...] = ()
    data_version: str | None = None  # the entity data and inventory the decision used
    trace: list[dict[str, Any]] = field(default_factory=list)
    shadow: list[dict[str, Any]] = field(default_factory=list)


_FACTS = ("principal", "ownership", "geo", "compute", "decision", "quota")
T = TypeVar("T")

if TYPE_CHECKING:

    class _Fact(Generic[T]):
        """How the type checker sees a fact of ``RequestContext``: read as ``T``, set with a
        ``T``. At run time a fact is the ``property`` that ``_fact`` builds."""

        @overload
        def __get__(self, ctx: None, owner: type) -> _Fact[T]: ...

        @overload
        def __get__(self, ctx: RequestContext, owner: type) -> T: ...

        def __get__(self, ctx: RequestContext | None, owner: type) -> T | _Fact[T]: ...

        def __set__(self, ctx: RequestContext, value: T) -> None: ...


def _fact(name: str) -> Any:
    """The fact kept in the slot ``_<name>``; reading it before a stage set it raises
    ``FactNotSet``. A plain property rather than a descriptor class: facts are read many times
    per request, and a property's getter is the cheaper call. Its setter is the slot's own,
    bound once the class exists (``_bind_setters``)."""
    read = attrgetter("_" + name)

    def get(ctx: RequestContext) -> Any:
        value = read(ctx)
        if value is None:
            raise FactNotSet(f"fact {name!r} read before any stage set it")
        return value

    return property(get)


class RequestContext:
    """One request's facts. Stages set exactly one fact each; reading an unset fact raises."""

    __slots__ = (
        "_compute",
        "_decision",
        "_geo",
        "_ownership",
        "_principal",
        "_quota",
        "body",
        "decision_id",
        "headers",
        "prior",
        "request",
        "route_config",
        "stage_times",
        "started",
    )

    def __init__(
        self,
        *,
        decision_id: str,
        request: RequestInfo,
        headers: Any,
        body: bytes = b"",
        route_config: Any = None,
        started: float = 0.0,
    ) -> None:
        self.decision_id = decision_id
        self.request = request
        self.headers = headers  # case-insensitive multimap (multidict), read-only
        self.body = body
        self.route_config = route_config
        self.started = started
        self.stage_times: dict[str, float] = {}
        self._principal: Principal | None = None
        self._ownership: OwnershipProfile | None = None
        self._geo: GeoInfo | None = None
        self._compute: ComputeRequest | None = None
        self._decision: Decision | None = None
        self._quota: QuotaState | None = None
        # What the stored object a write replaces was measured at (a webhook UPDATE's oldObject,
        # the proxy's read for PUT/PATCH/scale): quota charges only the increase over it. None:
        # the whole of ``compute`` is charged.
        self.prior: ComputeRequest | None = None

    def with_body(self, body: bytes) -> RequestContext:
        """The same request with another body and no facts (to measure the object a write
        replaces on its own)."""
        return RequestContext(
            decision_id=self.decision_id,
            request=self.request,
            headers=self.headers,
            body=body,
            route_config=self.route_config,
            started=self.started,
        )

    # Facts are read many times per request: each fact and ``has``/``maybe`` read the slot
    # through one precomputed getter (no attribute-name building).

    def has(self, fact: str) -> bool:
        return _SLOT_OF[fact](self) is not None  # KeyError for an unknown fact

    def maybe(self, fact: str) -> Any:
        """The fact or ``None``; for the audit and explain paths, which report whatever exists."""
        try:
            return _SLOT_OF[fact](self)
        except KeyError:
            raise AttributeError(f"no fact {fact!r}") from None

    principal: _Fact[Principal] = _fact("principal")
    ownership: _Fact[OwnershipProfile] = _fact("ownership")
    geo: _Fact[GeoInfo] = _fact("geo")
    compute: _Fact[ComputeRequest] = _fact("compute")
    decision: _Fact[Decision] = _fact("decision")
    quota: _Fact[QuotaState] = _fact("quota")


_SLOT_OF = {fact: attrgetter("_" + fact) for fact in _FACTS}


def _bind_setters(cls: type) -> None:
    """Each fact's setter: the ``__set__`` of its slot's descriptor, a C call (a Python setter
    calling ``setattr`` costs a frame and a name lookup more, on every stage)."""
    members = vars(cls)
    for fact in _FACTS:
        setattr(cls, fact, members[fact].setter(members["_" + fact].__set__))


_bind_setters(RequestContext)

# (principal, ownership, geo, compute), each ``None`` when unset: what the policy and the quota
# stage read, in one call rather than four ``maybe``.
policy_facts: Callable[
    [RequestContext],
    tuple[Principal | None, OwnershipProfile | None, GeoInfo | None, ComputeRequest | None],
] = attrgetter("_principal", "_ownership", "_geo", "_compute")
