"""JWKS key sets per issuer: from a file (read at start and reload) or a URL (cached and refreshed).

A ``KeySet`` is immutable: every load builds a new one and swaps the reference, so requests in
flight never see a half-loaded set and reloads drop no request. Each key is bound, at load time,
to the algorithms of the issuer's allow-list that its type can serve (RSA for RS*/PS*, EC on the
matching curve for ES*, OKP for EdDSA); a token is only ever checked with such a (key, alg) pair.

URL sources (``UrlKeySource``):

- fetched once at start; a failure there is logged and the issuer starts *empty* (its tokens get
  503 ``jwks-unavailable``) while the refresh task keeps retrying: one IdP being down at boot must
  not take the whole gate (and every other issuer) down, nor send it into a restart loop.
- refreshed every ``jwks_refresh_s`` (retrying after ``jwks_min_fetch_interval_s`` on failure);
- refetched on an unknown ``kid`` at most once per ``jwks_min_fetch_interval_s`` (attempts of any
  kind count), and concurrent callers share one in-flight fetch, so a flood of random kids costs the
  IdP at most one request per interval;
- when the IdP is down the last good keys are served until ``jwks_max_stale_s`` after the last
  successful fetch; after that the issuer is unusable (503) rather than trusting keys forever.

Fetches are counted in ``gatekeeper_jwks_fetches_total{issuer,result}`` (ok | error | invalid).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from .. import metrics
from ..config import IssuerConfig
from ..errors import ConfigError, Problem

log = logging.getLogger("gatekeeper.identity")

# alg -> (kty, allowed curves or None). SECURITY: asymmetric only; HS* (and "none") can never be
# configured, so an RSA public key can never be used as an HMAC secret (key confusion).
SUPPORTED_ALGORITHMS: Mapping[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "ES256K": ("EC", frozenset({"secp256k1"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}

MAX_JWKS_BYTES = 1 << 20  # a JWKS is a few KB; more is hostile or a misconfigured URL
MAX_KEYS = 100
MAX_KID_CHARS = 256
MIN_RSA_BITS = 2048
# A token without kid is tried against at most this many keys: a forged kid-less token must not
# cost MAX_KEYS signature checks (CPU amplification).
MAX_KIDLESS_TRIES = 8
# SECURITY: a JWKS is public; private members mean the wrong file (a leaked private key).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_MEMBERS = {"RSA": ("e", "n"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}


@dataclass(frozen=True, slots=True)
class KeySet:
    """An issuer's verification keys: kid -> {alg -> key}; keys without a kid are kept apart."""

    by_kid: Mapping[str, Mapping[str, PyJWK]] = field(default_factory=dict)
    anonymous: tuple[Mapping[str, PyJWK], ...] = ()
    fingerprints: frozenset[str] = frozenset()

    @property
    def count(self) -> int:
        return len(self.fingerprints)

    def has_kid(self, kid: str) -> bool:
        return kid in self.by_kid

    def candidates(self, kid: str | None, alg: str) -> list[PyJWK]:
        """Keys that may verify a token with this ``kid`` (None: any kid-less key) and ``alg``."""
        if kid is None:
            # A token without kid is tried against the kid-less keys, or, failing those, against
            # every key: all of them belong to this issuer, so this widens nothing but CPU.
            pools = list(self.anonymous) or list(self.by_kid.values())
            return [pool[alg] for pool in pools if alg in pool][:MAX_KIDLESS_TRIES]
        pool = self.by_kid.get(kid)
        if pool is None or alg not in pool:
            return []
        return [pool[alg]]


def _key_algorithms(jwk: Mapping[str, Any], allowed: Sequence[str]) -> tuple[list[str], str]:
    """The allowed algorithms this JWK can serve, or ([], why not)."""
    kty = jwk.get("kty")
    if kty not in _PUBLIC_MEMBERS:
        return [], f"unsupported key type {str(kty)[:20]!r} (only RSA, EC and OKP)"
    crv = jwk.get("crv")
    algs = []
    for alg in allowed:
        want_kty, curves = SUPPORTED_ALGORITHMS[alg]
        if want_kty == kty and (curves is None or crv in curves):
            algs.append(alg)
    declared = jwk.get("alg")
    if declared is not None:
        # RFC 7517 §4.4: a key that names its algorithm is used with that algorithm only.
        algs = [a for a in algs if a == declared]
    if not algs:
        return [], f"{kty} key (crv={crv!r}, alg={declared!r}) serves none of {list(allowed)}"
    return algs, ""


def parse_jwks(data: bytes, algorithms: Sequence[str]) -> tuple[KeySet, list[tuple[str, str]]]:
    """Build a KeySet from JWKS bytes; problems are (key path, message), the set has the good keys.

    A problem with the document itself (not JSON, no ``keys`` list) yields an empty set.
    """
    problems: list[tuple[str, str]] = []
    if len(data) > MAX_JWKS_BYTES:
        return KeySet(), [("", f"JWKS larger than {MAX_JWKS_BYTES} bytes")]
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return KeySet(), [("", f"not valid JSON: {str(exc)[:120]}")]
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        return KeySet(), [("", 'not a JWKS: expected an object with a "keys" list')]
    keys = doc["keys"]
    if len(keys) > MAX_KEYS:
        return KeySet(), [("keys", f"{len(keys)} keys, more than the limit of {MAX_KEYS}")]
    by_kid: dict[str, dict[str, PyJWK]] = {}
    anonymous: list[dict[str, PyJWK]] = []
    fingerprints: set[str] = set()
    for i, jwk in enumerate(keys):
        where = f"keys[{i}]"
        if not isinstance(jwk, dict):
            problems.append((where, "not an object"))
            continue
        private = sorted(_PRIVATE_MEMBERS & jwk.keys())
        if private:
            problems.append(
                (where, f"contains private key material {private}; publish public keys")
            )
            continue
        if jwk.get("use") not in (None, "sig"):
            continue  # an encryption key is not ours to use; silently skipped
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        kid = jwk.get("kid")
        if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS):
            problems.append((where, f"kid must be a string of 1..{MAX_KID_CHARS} characters"))
            continue
        algs, why = _key_algorithms(jwk, algorithms)
        if not algs:
            problems.append((where, why))
            continue
        bound: dict[str, PyJWK] = {}
        try:
            for alg in algs:
                bound[alg] = PyJWK(jwk, algorithm=alg)
        except (PyJWTError, ValueError, TypeError) as exc:
            problems.append((where, f"invalid key: {str(exc)[:120]}"))
            continue
        bits = getattr(next(iter(bound.values())).key, "key_size", None)
        if jwk["kty"] == "RSA" and (bits or 0) < MIN_RSA_BITS:
            problems.append((where, f"RSA key of {bits} bits, shorter than {MIN_RSA_BITS}"))
            continue
        kty = jwk["kty"]
        members = {m: jwk.get(m) for m in _PUBLIC_MEMBERS[kty]}
        fingerprints.add(f"{kid}|{kty}|{json.dumps(members, sort_keys=True)}|{sorted(bound)}")
        if kid is None:
            anonymous.append(bound)
        else:
            # Several JWKs may share a kid (e.g. one per alg): merge, first key per alg wins.
            pool = by_kid.setdefault(kid, {})
            for alg, key in bound.items():
                pool.setdefault(alg, key)
    return KeySet(by_kid, tuple(anonymous), frozenset(fingerprints)), problems


class KeySource:
    """Where one issuer's keys come from. ``keyset`` is swapped atomically on every good load.

    ``generation`` increases whenever a key disappears (rotation or revocation), so the token cache
    can drop tokens verified with a key that is no longer trusted.
    """

    kind = "abstract"

    def __init__(self, issuer: IssuerConfig) -> None:
        self.issuer = issuer
        self.keyset = KeySet()
        self.generation = 0
        self.loaded_at: float | None = None  # wall time of the last successful load
        self.last_error: str | None = None

    def _swap(self, keyset: KeySet) -> None:
        if self.keyset.fingerprints - keyset.fingerprints:
            self.generation += 1
        self.keyset = keyset
        self.loaded_at = time.time()
        self.last_error = None

    def usable(self) -> bool:
        return self.keyset.count > 0

    async def refetch_for_unknown_kid(self) -> bool:
        """Try to learn new keys (rate-limited); True when a fetch happened or was joined."""
        return False

    async def start(self) -> None:
        raise NotImplementedError

    async def reload(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {
            "source": self.kind,
            "keys": self.keyset.count,
            "loaded_at": self.loaded_at,
            "usable": self.usable(),
            "stale": self.last_error is not None,
            "last_error": self.last_error,
        }


class FileKeySource(KeySource):
    """A JWKS file, read at start and on reload; a bad file raises ConfigError, keeping old keys."""

    kind = "file"

    def __init__(self, issuer: IssuerConfig) -> None:
        super().__init__(issuer)
        assert issuer.jwks_file is not None
        self.path = issuer.jwks_file

    def load(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            self.last_error = f"cannot read: {exc.strerror or exc}"
            raise ConfigError([Problem(self.path, None, "", self.last_error)]) from None
        keyset, problems = parse_jwks(data, self.issuer.algorithms)
        # SECURITY: a deployer's own key file must be fully valid; a half-usable file is refused.
        if not problems and keyset.count == 0:
            problems = [("keys", "no keys")]
        if problems:
            self.last_error = f"{len(problems)} problem(s) in {self.path}"
            raise ConfigError([Problem(self.path, None, p, m) for p, m in problems])
        self._swap(keyset)

    async def start(self) -> None:
        self.load()

    async def reload(self) -> None:
        self.load()


class _FetchError(Exception):
    def __init__(self, message: str, result: str = "error") -> None:
        super().__init__(message)
        self.result = result


SessionFactory = Callable[[], Awaitable[aiohttp.ClientSession]]


class UrlKeySource(KeySource):
    """A JWKS URL: fetched at start, refreshed on a schedule and (rate-limited) on unknown kids."""

    kind = "url"

    def __init__(self, issuer: IssuerConfig, session: SessionFactory) -> None:
        super().__init__(issuer)
        assert issuer.jwks_url is not None
        self.url = issuer.jwks_url
        host = urlsplit(self.url).hostname or ""
        if self.url.startswith("http://") and host not in ("127.0.0.1", "::1", "localhost"):
            # SECURITY: keys fetched in clear text can be swapped by anyone on the path.
            log.warning("jwks_url %s is plain http: use https outside loopback", self.url)
        self._session = session
        self._inflight: asyncio.Task[bool] | None = None
        self._last_attempt = float("-inf")  # monotonic
        self._loop_task: asyncio.Task[None] | None = None
        self.fetches = 0

    def usable(self) -> bool:
        if self.keyset.count == 0 or self.loaded_at is None:
            return False
        # SECURITY: keys are not trusted forever while the IdP is unreachable.
        return time.time() - self.loaded_at <= self.issuer.jwks_max_stale_s

    async def _fetch(self) -> bool:
        self._last_attempt = time.monotonic()
        self.fetches += 1
        label = metrics.JWKS_FETCHES.labels(issuer=self.issuer.issuer, result="ok")
        try:
            body = await self._download()
            keyset, problems = parse_jwks(body, self.issuer.algorithms)
            for where, message in problems:
                log.warning("jwks %s: %s: %s (key skipped)", self.url, where, message)
            if keyset.count == 0:
                raise _FetchError("no usable keys in the JWKS", "invalid")
        except _FetchError as exc:
            self.last_error = str(exc)
            metrics.JWKS_FETCHES.labels(issuer=self.issuer.issuer, result=exc.result).inc()
            log.warning("jwks fetch %s failed: %s (serving cached keys)", self.url, exc)
            return False
        self._swap(keyset)
        label.inc()
        return True

    async def _download(self) -> bytes:
        session = await self._session()
        timeout = aiohttp.ClientTimeout(total=self.issuer.jwks_timeout_s)
        try:
            async with session.get(
                self.url,
                timeout=timeout,
                max_redirects=3,
                headers={"Accept": "application/jwk-set+json, application/json"},
            ) as resp:
                if resp.status != 200:
                    raise _FetchError(f"HTTP {resp.status}")
                if (resp.content_length or 0) > MAX_JWKS_BYTES:
                    raise _FetchError("JWKS too large", "invalid")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > MAX_JWKS_BYTES:
                        raise _FetchError("JWKS too large", "invalid")
                    chunks.append(chunk)
                return b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _FetchError(f"{type(exc).__name__}: {str(exc)[:160]}") from None

    async def refresh(self) -> bool:
        """Fetch now, or join the fetch already in flight (single flight)."""
        task = self._inflight
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight = task
        # shield: a cancelled request must not cancel the fetch other requests wait for
        return await asyncio.shield(task)

    async def refetch_for_unknown_kid(self) -> bool:
        if self._inflight is not None and not self._inflight.done():
            await self.refresh()
            return True
        # SECURITY: rate limit, so random kids cannot make the gate hammer the IdP.
        if time.monotonic() - self._last_attempt < self.issuer.jwks_min_fetch_interval_s:
            return False
        await self.refresh()
        return True

    async def _refresh_loop(self) -> None:
        while True:
            ok = self.last_error is None and self.loaded_at is not None
            period = self.issuer.jwks_refresh_s
            if not ok:
                period = min(period, self.issuer.jwks_min_fetch_interval_s)
            # jitter so replicas do not fetch in lockstep
            due = self._last_attempt + period * random.uniform(0.9, 1.0)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # re-check: an unknown-kid fetch may have happened meanwhile
            try:
                await self.refresh()
            except Exception:  # never let the refresher die
                log.exception("jwks refresh of %s crashed", self.url)
                await asyncio.sleep(max(1.0, self.issuer.jwks_min_fetch_interval_s))

    async def start(self) -> None:
        if not await self.refresh():
            log.error(
                "jwks %s unreachable at start (%s); issuer %s starts without keys, retrying",
                self.url,
                self.last_error,
                self.issuer.issuer,
            )
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def reload(self) -> None:
        await self.refresh()

    async def close(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop_task = None

    def health(self) -> dict[str, Any]:
        out = super().health()
        out["url"] = self.url
        out["age_s"] = None if self.loaded_at is None else round(time.time() - self.loaded_at, 3)
        out["fetches"] = self.fetches
        return out
