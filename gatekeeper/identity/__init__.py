"""Identity: who is calling, from a JWT verified against the configured issuers' JWKS.

The issuers, audiences, algorithms and claim names are configuration (docs/configuration.md).

``Authenticator`` is the one object the rest of the gate uses:

- ``start()`` loads every ``jwks_file`` (ConfigError naming the file on any problem) and fetches
  every ``jwks_url`` once; an unreachable URL does *not* fail start-up: that issuer starts
  without keys, answers 503 ``jwks-unavailable`` and is retried in the background;
- ``authenticate(headers, token_headers)`` -> ``Principal`` or ``Deny`` (401 + WWW-Authenticate,
  reason codes in ``reasons.py``) or ``DependencyError`` (503 ``jwks-unavailable``);
- ``reload()`` re-reads files (a bad file raises ConfigError and keeps its last good keys) and
  refetches URLs (a failed fetch keeps the cached keys, see ``healthy()``), never pausing requests;
- ``healthy()`` reports per issuer: key count, last load, staleness, last error.

Modules: ``extract`` (which header holds the token), ``keys`` (JWKS sources), ``verify`` (checks,
claim map, cache), ``reasons`` (codes and the 401 challenge).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from ..config import IdentityConfig
from ..context import Principal
from ..errors import ConfigError
from .extract import extract_token
from .keys import SUPPORTED_ALGORITHMS, FileKeySource, KeySource, UrlKeySource
from .verify import TokenVerifier

__all__ = ["Authenticator", "validate_identity"]


def validate_identity(cfg: IdentityConfig) -> list[str]:
    """Semantic checks of the identity section, as ``identity.issuers[i].key: message`` strings."""
    problems: list[str] = []
    if cfg.max_token_bytes <= 0:
        problems.append("identity.max_token_bytes: must be positive")
    if cfg.cache_size < 0:
        problems.append("identity.cache_size: must be >= 0")
    if cfg.leeway_s < 0:
        problems.append("identity.leeway_s: must be >= 0")
    seen: set[str] = set()
    for i, iss in enumerate(cfg.issuers):
        at = f"identity.issuers[{i}]"
        if not iss.issuer:
            problems.append(f"{at}.issuer: must not be empty")
        if iss.issuer in seen:
            problems.append(f"{at}.issuer: duplicate issuer {iss.issuer!r}")
        seen.add(iss.issuer)
        if not iss.audiences:
            # SECURITY: without an audience check, tokens minted for any other service would pass.
            problems.append(f"{at}.audiences: at least one audience is required")
        if (iss.jwks_file is None) == (iss.jwks_url is None):
            problems.append(f"{at}: exactly one of jwks_file and jwks_url is required")
        if iss.jwks_url is not None and not iss.jwks_url.startswith(("https://", "http://")):
            problems.append(f"{at}.jwks_url: must be an http(s) URL")
        if not iss.algorithms:
            problems.append(f"{at}.algorithms: at least one algorithm is required")
        for alg in iss.algorithms:
            if alg not in SUPPORTED_ALGORITHMS:
                # SECURITY: HS* and none are refused here, so key confusion cannot be configured.
                problems.append(
                    f"{at}.algorithms: {alg!r} is not supported "
                    f"(asymmetric only: {', '.join(SUPPORTED_ALGORITHMS)})"
                )
        for name in ("jwks_refresh_s", "jwks_max_stale_s", "jwks_timeout_s"):
            if getattr(iss, name) <= 0:
                problems.append(f"{at}.{name}: must be positive")
        if iss.jwks_min_fetch_interval_s < 0:
            problems.append(f"{at}.jwks_min_fetch_interval_s: must be >= 0")
    return problems


class Authenticator:
    """Turns request headers into a verified ``Principal`` (see the module docstring)."""

    def __init__(self, cfg: IdentityConfig, *, clock: Callable[[], float] = time.time) -> None:
        problems = validate_identity(cfg)
        if problems:
            raise ConfigError(problems)
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None
        self.sources: dict[str, KeySource] = {}
        for iss in cfg.issuers:
            if iss.jwks_file is not None:
                self.sources[iss.issuer] = FileKeySource(iss)
            else:
                self.sources[iss.issuer] = UrlKeySource(iss, self._get_session)
        self.verifier = TokenVerifier(cfg, self.sources, clock=clock)

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": "gatekeeper-jwks"}, raise_for_status=False
            )
        return self._session

    async def _load_files(self) -> None:
        problems: list[str] = []
        for source in self.sources.values():
            if isinstance(source, FileKeySource):
                try:
                    source.load()
                except ConfigError as exc:
                    problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)

    async def start(self) -> None:
        """Load key files (ConfigError on any problem) and fetch key URLs once; start refreshers."""
        await self._load_files()
        for source in self.sources.values():
            if isinstance(source, UrlKeySource):
                await source.start()

    async def authenticate(self, headers: Any, token_headers: Sequence[str] = ()) -> Principal:
        """The verified principal of this request, or raise Deny (401) / DependencyError (503)."""
        token = extract_token(headers, token_headers, self.cfg.max_token_bytes)
        return await self.verifier.verify(token)

    async def reload(self) -> None:
        """Re-read key files and refetch URLs; a bad file raises ConfigError and keeps old keys."""
        try:
            await self._load_files()
        finally:
            for source in self.sources.values():
                if isinstance(source, UrlKeySource):
                    await source.reload()

    async def close(self) -> None:
        for source in self.sources.values():
            await source.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def healthy(self) -> dict[str, Any]:
        """Per-issuer key source state, and ``ok``: every issuer has usable keys."""
        issuers = {name: source.health() for name, source in self.sources.items()}
        return {
            "ok": all(h["usable"] for h in issuers.values()),
            "issuers": issuers,
            "token_cache": len(self.verifier.cache),
        }
