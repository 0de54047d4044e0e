"""The ``compute`` stage for Kubernetes routes whose write changes a stored object.

A ``PATCH`` of an object and any write to its ``/scale`` subresource are measured on the object
as it will be stored: this stage reads the current object from the route's upstream (the API
server) and hands it to the adapter (``measure_change``), which applies the patch and measures
the result. The proxy also reads the object a ``PUT`` replaces; the object as read is measured
too (``ctx.prior``) and quota draws only the increase over it, while the policy still decides on
the whole new object. An object that is not there (404) credits nothing; for a ``PUT`` a read
that fails credits nothing either (the whole object is charged), and a stored object the adapter
cannot measure credits nothing. A write whose pods name DRA claims (``resourceClaimName``,
``resourceClaimTemplateName``) has the claims read too (the newest ``resource.k8s.io`` version the
API server serves; cached briefly: a claim's spec is immutable). Every other request goes to the
plain compute stage.

# SECURITY: the read carries the client's own ``Authorization`` header, so the gate reads exactly
what the client may read -- it holds no cluster credentials of its own, and a client cannot use
the gate to learn an object it could not read itself. A client without ``get`` permission on the
object gets 400 ``unmeasurable-request`` (the gate cannot bound the change); a missing object is
patched as empty (server-side apply creates it; other patches fail at the API server). The
webhook, whose caller is the API server, reads claims and the workload of a ``Scale`` as its own
service account (``admission.token_file``), once per review: the workload as read is both what the
new replica count is applied to and the old state the increase is charged over, and it must be the
state the API server is changing (the Scale's ``resourceVersion``, which the API server copies from
the workload). A workload read at another version is refused (409 ``workload-changed``): the API
server's write is then bound to fail its own version check, and an admission that charged it
would be charged again when the API server or the client retries.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..adapters.body import MAX_BODY_BYTES, load_body, load_json, sanitize
from ..adapters.common import header
from ..adapters.kubernetes import ApiPath, ClaimResolver, measure_change, measure_object, parse_path
from ..adapters.kubernetes.patch import metadata_only
from ..adapters.kubernetes.pods import unmeasurable
from ..adapters.submission import Submission
from ..config import RouteConfig
from ..context import R_UPSTREAM_UNREACHABLE, R_WORKLOAD_CHANGED, ComputeRequest, RequestContext
from ..errors import BadRequest, Deny, DependencyError
from .compute import ComputeStage

_WRITES = frozenset({"POST", "PUT", "PATCH"})
_CLAIM_MARK = b"resourceClaim"  # in resourceClaimName and resourceClaimTemplateName
_CLAIM_KEYS = {
    "resourceClaimName": "ResourceClaim",
    "resourceClaimTemplateName": "ResourceClaimTemplate",
}
DRA_VERSIONS = ("v1", "v1beta2", "v1beta1")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a DNS-1123 subdomain
CLAIM_CACHE_S = 30.0
CLAIM_CACHE_SIZE = 1024


def stored_path(method: str, path: str) -> str | None:
    """The object's own path when this write is measured on the stored object, else ``None``."""
    if method not in _WRITES:
        return None
    api = parse_path(path)
    if api is None or api.name is None:
        return None
    base = path.split("?", 1)[0]
    if api.subresource == "scale":
        return base[: -len("/scale")] if base.endswith("/scale") else None
    if api.subresource is None and method == "PATCH":
        return base
    return None


def replaced_path(method: str, path: str) -> str | None:
    """The object a ``PUT`` replaces (read only to charge the increase over it), else ``None``."""
    if method != "PUT":
        return None
    api = parse_path(path)
    if api is None or api.name is None or api.subresource is not None:
        return None
    return path.split("?", 1)[0]


@dataclass(frozen=True)
class ClaimAccess:
    """How the webhook reads claims: as its own service account (``admission.token_file``)."""

    token_file: str | None
    ssl_context: ssl.SSLContext | None

    def bearer(self) -> str | None:
        if self.token_file is None:
            return None
        try:
            with open(self.token_file) as fh:  # re-read: service-account tokens rotate
                token = fh.read().strip()
        except OSError as exc:
            raise DependencyError(
                "token-unavailable", f"admission.token_file: {exc.strerror}"
            ) from None
        return f"Bearer {token}" if token else None


class KubernetesComputeStage:
    """Wraps ``ComputeStage``: reads the stored object first where the measurement needs it."""

    name = "compute"

    def __init__(
        self,
        inner: ComputeStage,
        *,
        timeout_s: float = 5.0,
        access: ClaimAccess | None = None,
        version: str | None = None,
    ) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        # the webhook's face: its object is final; claims and the workload of a Scale are read,
        # with its own token
        self.access = access
        # the webhook's Scale: the workload's resourceVersion the API server is changing
        self.version = version
        self._claims: dict[tuple[str, ...], tuple[float, dict[str, Any]]] = {}

    def for_admission(
        self, access: ClaimAccess, version: str | None = None
    ) -> KubernetesComputeStage:
        """This stage as the webhook runs it for one review (the same claim cache); ``version``:
        the ``resourceVersion`` of a Scale review's ``oldObject``."""
        stage = KubernetesComputeStage(
            self.inner, timeout_s=self.timeout_s, access=access, version=version
        )
        stage._claims = self._claims
        return stage

    def run(self, ctx: RequestContext) -> Awaitable[None] | None:
        route = ctx.route_config
        req = ctx.request
        if route is None or route.adapter != "kubernetes" or req.method not in _WRITES:
            self.inner.run(ctx)
            return None
        # The webhook's object is as stored (it sends no PATCH): of its writes, only a Scale
        # (replicas alone) is measured on the stored workload.
        target = stored_path(req.method, req.path)
        if target is not None and self._metadata_patch(ctx):
            target = None
        # the proxy's PUT: the object it replaces is read for the charge, not the measurement
        replaced = replaced_path(req.method, req.path) if self.access is None else None
        if target is None and replaced is None and _CLAIM_MARK not in ctx.body:
            self.inner.run(ctx)
            return None
        return self._measure(ctx, target, replaced)

    def _metadata_patch(self, ctx: RequestContext) -> bool:
        if ctx.request.method != "PATCH" or ctx.request.path.endswith("/scale"):
            return False
        try:
            doc = load_json(ctx.body) if ctx.body.strip() else {}
        except BadRequest:
            return False  # the adapter reports the body's own problem
        return metadata_only(doc, _ctype(ctx.headers)) and _CLAIM_MARK not in ctx.body

    async def _measure(self, ctx: RequestContext, target: str | None, replaced: str | None) -> None:
        route = ctx.route_config
        current = None
        if target is not None:
            current = await self.read(route.upstream, target, route.strip_prefix, ctx.headers)
            if not current and self.access is not None:
                # SECURITY: the API server scales a workload it holds; one the webhook does not
                # find (another cluster, a stale read) is not a workload of zero pods
                raise unmeasurable(target, "the workload this Scale belongs to was not found")
            self._same_version(target, current)
        elif replaced is not None:
            try:
                current = await self.read(route.upstream, replaced, route.strip_prefix, ctx.headers)
            except (Deny, DependencyError):
                # SECURITY: a PUT is measured as sent; an object it replaces that cannot be read
                # credits nothing (the whole object is charged), and the API server still decides
                # whether the client may write it
                current = None
        claims: dict[tuple[str, str], dict[str, Any]] = {}
        if _CLAIM_MARK in ctx.body or (current is not None and claim_refs(current)):
            refs = claim_refs(current) | claim_refs(_body(ctx))
            api = parse_path(ctx.request.path)
            namespace = api.namespace if api is not None else None
            for kind, name in sorted(refs):
                found = await self.read_claim(route, namespace, kind, name, ctx.headers)
                if found is not None:
                    claims[(kind, name)] = found
        resolver = lambda kind, _ns, name: claims.get((kind, name))  # noqa: E731
        ctx.compute = measure_change(
            Submission(route, ctx.request.method, ctx.request.path, ctx.headers, ctx.body),
            self.inner.catalog,
            self.inner.inventory,
            current=current,
            resolver=resolver,
        )
        # the webhook credits the workload as read only when it is the state the API server is
        # changing (a Scale review without a version is charged whole)
        if current and (self.access is None or self.version is not None):
            ctx.prior = self._stored(route, ctx.request.path, current, resolver)

    def _same_version(self, target: str, current: dict[str, Any]) -> None:
        if self.access is None or self.version is None:
            return
        meta = current.get("metadata")
        held = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if held != self.version:
            raise Deny(
                R_WORKLOAD_CHANGED,
                409,
                f"{sanitize(target, 160)}: the workload is at resourceVersion "
                f"{sanitize(str(held), 32)}, the Scale at {sanitize(self.version, 32)}; "
                "it changed during the write: retry",
            )

    def _stored(
        self, route: RouteConfig, path: str, current: dict[str, Any], resolver: ClaimResolver
    ) -> ComputeRequest | None:
        """The object as read, measured as the new one is (``None``: it cannot be bounded, so it
        credits nothing)."""
        api = parse_path(path)
        if api is None:
            return None
        whole = ApiPath(api.api_version, api.resource, api.namespace, api.name, None)
        try:
            return measure_object(
                route, current, self.inner.catalog, self.inner.inventory, api=whole,
                resolver=resolver,
            )  # fmt: skip
        except (Deny, DependencyError):
            return None

    async def read_claim(
        self, route: RouteConfig, namespace: str | None, kind: str, name: str, headers: Any
    ) -> dict[str, Any] | None:
        """A pod's ResourceClaim or ResourceClaimTemplate (``None``: not found in any version)."""
        if namespace is None or not _NAME.match(name) or not _NAME.match(namespace):
            return None  # SECURITY: only a real object name goes into the URL read
        plural = "resourceclaimtemplates" if kind == "ResourceClaimTemplate" else "resourceclaims"
        key = (route.upstream, namespace, plural, name, _who(headers))
        hit = self._claims.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        for version in DRA_VERSIONS:  # the newest version the API server serves answers
            path = f"/apis/resource.k8s.io/{version}/namespaces/{namespace}/{plural}/{name}"
            doc = await self.read(route.upstream, path, None, headers)
            if doc:
                if len(self._claims) >= CLAIM_CACHE_SIZE:
                    self._claims.clear()
                # a claim's spec is immutable: a short cache saves a read per pod of a workload
                self._claims[key] = (time.monotonic() + CLAIM_CACHE_S, doc)
                return doc
        return None

    async def read(
        self, upstream: str, path: str, strip_prefix: str | None, headers: Any
    ) -> dict[str, Any]:
        """GET an object with the client's credentials (see the module docstring); ``{}`` when
        the API server has none there."""
        if strip_prefix and path.startswith(strip_prefix):
            path = path[len(strip_prefix) :] or "/"
        send = {"Accept": "application/json"}
        auth = header(headers, "Authorization") if self.access is None else self.access.bearer()
        if auth is not None:
            send["Authorization"] = auth
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        tls = self.access.ssl_context if self.access is not None else None
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(upstream.rstrip("/") + path, headers=send, ssl=tls or True) as r,
            ):
                status = r.status
                body = await r.content.read(MAX_BODY_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DependencyError(
                R_UPSTREAM_UNREACHABLE,
                f"reading the stored object failed: {type(exc).__name__}",
                status=502,
            ) from None
        if status == 404:
            return {}
        if status != 200:
            raise unmeasurable(path, f"the stored object could not be read (HTTP {status})")
        doc = load_json(body)
        if not isinstance(doc, dict):
            raise unmeasurable(path, "the stored object is not an object")
        return doc


def claim_refs(doc: Any) -> set[tuple[str, str]]:
    """Every (kind, name) a document's ``resourceClaimName``/``resourceClaimTemplateName`` name
    (anywhere: more reads than needed cost time, never a wrong measurement)."""
    out: set[tuple[str, str]] = set()
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                kind = _CLAIM_KEYS.get(key) if isinstance(key, str) else None
                if kind is not None and isinstance(value, str) and value:
                    out.add((kind, value))
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return out


def _body(ctx: RequestContext) -> Any:
    try:
        return load_body(ctx.body, _ctype(ctx.headers)) if ctx.body.strip() else None
    except BadRequest:
        return None  # the adapter reports the body's own problem


def _ctype(headers: Any) -> str:
    return (header(headers, "Content-Type") or "").split(";", 1)[0].strip().lower()


def _who(headers: Any) -> str:
    auth = header(headers, "Authorization") or ""
    return hashlib.sha256(auth.encode()).hexdigest()


__all__ = [
    "ClaimAccess",
    "KubernetesComputeStage",
    "claim_refs",
    "replaced_path",
    "stored_path",
]
