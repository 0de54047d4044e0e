"""Everything one gate process runs with, built from a ``Config``, and its hot reload.

Two lifetimes:

- *long-lived* parts keep connections and state across reloads: the authenticator (JWKS caches),
  the quota store (Redis pool) and the audit log (its hash chain);
- the *snapshot* — entity registry, GeoIP readers, GPU catalog, compiled policy and the pipelines
  built from them — is rebuilt as a whole on reload (in a worker thread, off the event loop) and
  swapped in with one assignment. In-flight requests finish on the snapshot they started with; a
  failed rebuild keeps the last good one and counts
  ``gatekeeper_policy_reloads_total{result=error}``.

The stage order is the literal tuple in ``_pipelines`` below.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import metrics
from .audit.chain import utc_ts
from .audit.log import AuditLog
from .config import Config, RouteConfig
from .errors import ConfigError
from .geo import GeoResolver
from .gpus import GpuCatalog, load_gpu_catalog
from .identity import Authenticator
from .inventory import Inventory, build_inventory
from .ownership import Registry, load_registry
from .ownership.rescreen import Rescreener
from .pipeline import Pipeline, Stage
from .policy import PolicySet, load_policy_set
from .policy.sources import unprovided_reads
from .stages.authn import AuthnStage
from .stages.compute import ComputeStage
from .stages.enforce import EnforceStage
from .stages.geo import GeoStage
from .stages.kubernetes import KubernetesComputeStage
from .stages.ownership import OwnershipStage
from .stages.policy import PolicyStage
from .stages.quota import QuotaStage
from .stores.factory import create_store
from .stores.quota import QuotaStore

log = logging.getLogger("gatekeeper")

VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The reloadable half of the runtime; replaced as a whole."""

    registry: Registry
    geo: GeoResolver
    catalog: GpuCatalog
    inventory: Inventory
    policy: PolicySet
    authenticated: Pipeline
    anonymous: Pipeline
    quota_stage: QuotaStage
    # The entity data and GPU inventory decisions are made with (``decision.data_version``).
    data_version: str = ""

    def pipeline_for(self, route: RouteConfig) -> Pipeline:
        return self.authenticated if route.authenticate else self.anonymous


def default_replica(worker: int | None) -> str:
    host = socket.gethostname().split(".")[0] or "gk"
    return host if worker is None else f"{host}-w{worker}"


class Runtime:
    """Owns the long-lived parts and the current snapshot."""

    def __init__(self, cfg: Config, *, replica: str | None = None) -> None:
        self.cfg = cfg
        self.replica = replica or cfg.audit.replica or default_replica(None)
        self.authenticator = Authenticator(cfg.identity)
        self.store: QuotaStore = create_store(cfg.quota)
        self.audit = AuditLog(cfg.audit, replica=self.replica)
        self._snapshot: Snapshot | None = None
        self._reload_lock = asyncio.Lock()
        # Called after a successful swap (``serve`` re-settles the heap, see heap.py).
        self.after_reload: Callable[[], None] | None = None
        self._audit_started = False
        # Re-screening on every reload of entity data; ``serve`` lets only worker 0 write.
        self.rescreener = Rescreener()

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            raise RuntimeError("runtime not started")
        return self._snapshot

    async def start(self, *, with_audit: bool = True) -> None:
        await self.authenticator.start()
        self._snapshot = await asyncio.to_thread(self._build_snapshot)
        for line in unprovided_reads(self._snapshot.policy, self.cfg.geoip):
            log.warning("policy: %s", line)
        self._audit_started = with_audit
        if with_audit:
            await self.audit.start()
        metrics.set_info(VERSION, self._snapshot.policy.version)

    def _build_snapshot(self) -> Snapshot:
        cfg = self.cfg
        problems: list[str] = []
        parts: dict[str, Any] = {}
        loaders = (
            ("registry", lambda: load_registry(cfg.entities)),
            ("geo", lambda: GeoResolver(cfg.geoip)),
            ("catalog", lambda: load_gpu_catalog(cfg.policy.gpus)),
            (
                "policy",
                lambda: load_policy_set(
                    cfg.policy.files,
                    shadow=cfg.policy.shadow,
                    default_action=cfg.policy.default_action,
                ),
            ),
        )
        for name, load in loaders:
            try:
                parts[name] = load()
            except ConfigError as exc:  # collect every component's problems, then fail once
                problems.extend(exc.problems)
        if "catalog" in parts:
            try:
                parts["inventory"] = build_inventory(cfg.inventory, parts["catalog"], cfg.source)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            if "geo" in parts:
                parts["geo"].close()
            raise ConfigError(problems)
        quota_stage = QuotaStage(
            self.store,
            parts["policy"].quotas,
            on_store_error=cfg.quota.on_store_error,
            timeout_s=cfg.quota.timeout_s,
        )
        data_version = data_version_of(parts["registry"], parts["catalog"], parts["inventory"])
        authenticated, anonymous = self._pipelines(parts, quota_stage, data_version)
        return Snapshot(
            registry=parts["registry"],
            geo=parts["geo"],
            catalog=parts["catalog"],
            inventory=parts["inventory"],
            policy=parts["policy"],
            authenticated=authenticated,
            anonymous=anonymous,
            quota_stage=quota_stage,
            data_version=data_version,
        )

    def _pipelines(
        self, parts: dict[str, Any], quota: QuotaStage, data_version: str = ""
    ) -> tuple[Pipeline, Pipeline]:
        """The stage order, literally. Routes with ``authenticate: false`` have no principal,
        hence no ownership either; the policy sees those facts as absent."""
        geo = GeoStage(parts["geo"])
        # Kubernetes patches and /scale are measured on the stored object (stages/kubernetes.py).
        compute = KubernetesComputeStage(
            ComputeStage(parts["catalog"], parts["inventory"]),
            timeout_s=self.cfg.limits.upstream_timeout_s,
        )
        policy = PolicyStage(parts["policy"], data_version=data_version or None)
        enforce = EnforceStage()
        authenticated: tuple[Stage, ...] = (
            AuthnStage(self.authenticator),
            OwnershipStage(parts["registry"]),
            geo,
            compute,
            policy,
            enforce,
            quota,
        )
        anonymous: tuple[Stage, ...] = (geo, compute, policy, enforce, quota)
        return Pipeline(authenticated), Pipeline(anonymous)

    async def reload(self) -> bool:
        """Rebuild the snapshot and re-read keys; keep the last good on failure."""
        async with self._reload_lock:
            try:
                await self.authenticator.reload()
                new = await asyncio.to_thread(self._build_snapshot)
            except ConfigError as exc:
                metrics.POLICY_RELOADS.labels("error").inc()
                log.error("reload failed, keeping the running configuration:\n%s", exc)
                return False
            old, self._snapshot = self._snapshot, new
            metrics.POLICY_RELOADS.labels("success").inc()
            if old is not None:
                # Readers are closed later: in-flight requests may still use the old snapshot.
                asyncio.get_running_loop().call_later(60, old.geo.close)
            metrics.set_info(VERSION, new.policy.version)
            log.info("reloaded: policy %s", new.policy.version)
            if old is not None:
                # Before the heap is re-settled: the comparison still holds the old registry.
                audit = self.audit if self._audit_started else None
                try:
                    await self.rescreener.run(
                        old.registry,
                        new.registry,
                        audit,
                        at=utc_ts(),
                        data_versions=(old.data_version, new.data_version),
                    )
                except Exception:  # the new data is in use either way; say what was not screened
                    log.exception("re-screening failed for data %s", new.registry.version)
                old = None
            if self.after_reload is not None:
                self.after_reload()
            return True

    async def readiness(self) -> dict[str, Any]:
        """Each dependency's state, for ``/readyz``."""
        checks: dict[str, Any] = {"policy": self._snapshot is not None}
        try:
            await asyncio.wait_for(self.store.ping(), self.cfg.quota.timeout_s)
            checks["quota_store"] = True
        except Exception as exc:
            checks["quota_store"] = f"error: {type(exc).__name__}"
        checks["audit"] = self.audit.healthy()
        checks["identity"] = self.authenticator.healthy()
        return checks

    async def close(self) -> None:
        if self._audit_started:
            await self.audit.close()
        await self.store.close()
        await self.authenticator.close()
        if self._snapshot is not None:
            self._snapshot.geo.close()


def data_version_of(
    registry: Registry, catalog: GpuCatalog, inventory: Inventory | None = None
) -> str:
    """One digest naming the entity data, the GPU catalog and the inventory a decision used."""
    h = hashlib.sha256(registry.version.encode())
    h.update(b"\0")
    h.update((catalog.digest or catalog.version).encode())
    if inventory is not None:
        h.update(b"\0")
        h.update(inventory.digest.encode())
    return "sha256:" + h.hexdigest()
