"""Build the configured quota store: embedded memory, Redis or Redis Cluster, leased or not.

A module of its own so that the store contract (``stores/quota.py``) imports no implementation
and no implementation imports the factory.
"""

from __future__ import annotations

from ..config import QuotaConfig
from ..errors import ConfigError
from .lease import LeasedQuotaStore
from .memory import MemoryQuotaStore
from .quota import QuotaStore
from .redis import RedisQuotaStore

REDIS_SCHEMES = ("redis://", "rediss://", "redis+cluster://", "unix://")


def create_store(cfg: QuotaConfig) -> QuotaStore:
    """``memory`` or a Redis URL (``redis://``, ``rediss://``, ``redis+cluster://h:p[,h:p]``)."""
    if "{" in cfg.key_prefix or "}" in cfg.key_prefix or not cfg.key_prefix:
        raise ConfigError([f"quota.key_prefix: {cfg.key_prefix!r} must be non-empty, no braces"])
    if cfg.store == "memory":
        return MemoryQuotaStore()
    if cfg.store.startswith(REDIS_SCHEMES):
        redis = RedisQuotaStore.from_url(
            cfg.store,
            timeout_s=cfg.timeout_s,
            prefix=cfg.key_prefix,
            batch=cfg.batch,
        )
        if cfg.lease_requests <= 0:
            return redis
        return LeasedQuotaStore(
            redis,
            requests=cfg.lease_requests,
            ttl_s=cfg.lease_ttl_s,
            max_requests=cfg.lease_requests_max,
        )
    raise ConfigError([f"quota.store: unsupported store {cfg.store!r}"])
