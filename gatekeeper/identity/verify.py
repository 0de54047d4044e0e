"""Verify a JWT against its issuer's keys (PyJWT), map its claims to a Principal, cache the result.

Order of checks (each failure has its own reason code, see ``reasons.py``):

1. structure: three base64url segments, header and payload JSON objects without duplicate members
   (so the claims we pick the issuer from are the claims PyJWT verifies);
2. ``alg``: ``none`` refused; then the *unverified* ``iss`` is read only to pick a configured issuer
   (exact string match), and ``alg`` must be in that issuer's allow-list;
3. ``crit`` refused (we implement no JWS extension); ``jku``/``x5u``/``jwk``/``x5c`` ignored;
4. ``kid`` looked up in the issuer's key set (an unknown kid may trigger one rate-limited JWKS
   refetch); the key is bound to algorithms of its own type, so an RSA key never verifies HS*/ES*;
5. ``jwt.decode`` with that key and ``algorithms=[alg]``: signature, ``exp``/``nbf``/``iat`` with
   leeway, ``iss``, ``aud``, required claims;
6. the claim map (``ClaimMap``) -> ``Principal``.

Verified tokens are cached by SHA-256 of the token (never the token itself) until their ``exp``, in
an LRU bounded by ``IdentityConfig.cache_size``; an entry dies with the key generation it was
verified under (rotation/revocation) and is never served past ``exp`` + leeway. Cache hits share
one ``Principal`` (and its ``claims`` dict): treat it as read-only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from .. import metrics
from ..config import IdentityConfig, IssuerConfig
from ..context import Principal
from ..errors import DependencyError
from .extract import is_compact
from .keys import MAX_KID_CHARS, KeySource
from .reasons import (
    JWKS_UNAVAILABLE,
    TOKEN_ALGORITHM,
    TOKEN_AUDIENCE,
    TOKEN_CLAIMS,
    TOKEN_CRIT,
    TOKEN_EXPIRED,
    TOKEN_ISSUER,
    TOKEN_MALFORMED,
    TOKEN_NOT_YET_VALID,
    TOKEN_SIGNATURE,
    TOKEN_UNKNOWN_KEY,
    token_deny,
)

MAX_CLAIM_CHARS = 512  # mapped principal attributes longer than this are refused (token-claims)
# The hit counter is on every authenticated request: buffered like the handler's own metrics.
_CACHE_HIT = metrics.buffered(metrics.TOKEN_CACHE, "hit")
_CACHE_MISS = metrics.TOKEN_CACHE.labels(result="miss")
_CACHE_EXPIRED = metrics.TOKEN_CACHE.labels(result="expired")


# A fresh hasher is a copy of this one: creating one by name looks the algorithm up in OpenSSL's
# provider tables every time, copying one does not.
_SHA256 = hashlib.sha256()


def _cache_key(token: str) -> bytes:
    """The verified-token cache's key: the token's SHA-256 (the cache never holds a token)."""
    h = _SHA256.copy()
    h.update(token.encode("ascii"))
    return h.digest()


class _Malformed(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        # SECURITY: {"iss": "a", "iss": "b"} would let two parsers disagree about the claims.
        if key in out:
            raise _Malformed(f"duplicate member {key[:40]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise _Malformed(f"non-standard JSON constant {name}")


def _segment_json(segment: str) -> dict[str, Any]:
    try:
        raw = base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_", validate=True)
        doc = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise _Malformed(str(exc)[:80]) from None
    if not isinstance(doc, dict):
        raise _Malformed("not a JSON object")
    return doc


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    expires_at: float
    issuer: str
    generation: int


class TokenCache:
    """LRU of verified principals keyed by SHA-256(token); ``size`` 0 disables it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[bytes, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None:
            self._data.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: _Entry) -> None:
        if self.size <= 0:
            return
        self._data[key] = entry
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def discard(self, key: bytes) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


def _error_reason(exc: jwt_errors.PyJWTError) -> str:
    """PyJWT's exception -> our reason code (most specific classes first)."""
    if isinstance(exc, jwt_errors.ExpiredSignatureError):
        return TOKEN_EXPIRED
    if isinstance(exc, jwt_errors.ImmatureSignatureError):
        return TOKEN_NOT_YET_VALID
    if isinstance(exc, jwt_errors.InvalidAudienceError):
        return TOKEN_AUDIENCE
    if isinstance(exc, jwt_errors.InvalidIssuerError):
        return TOKEN_ISSUER
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        return {"aud": TOKEN_AUDIENCE, "iss": TOKEN_ISSUER}.get(exc.claim, TOKEN_CLAIMS)
    if isinstance(exc, jwt_errors.InvalidAlgorithmError):
        return TOKEN_ALGORITHM
    if isinstance(exc, (jwt_errors.InvalidSignatureError, jwt_errors.InvalidKeyError)):
        return TOKEN_SIGNATURE
    if isinstance(
        exc,
        (
            jwt_errors.InvalidIssuedAtError,
            jwt_errors.InvalidSubjectError,
            jwt_errors.InvalidJTIError,
            jwt_errors.DecodeError,
        ),
    ):
        # The segments were already decoded by us, so a DecodeError from PyJWT here is its claim
        # type check (exp/nbf not an integer).
        return TOKEN_CLAIMS
    return TOKEN_MALFORMED


class TokenVerifier:
    """Verifies tokens for the configured issuers; one per Authenticator."""

    def __init__(
        self,
        cfg: IdentityConfig,
        sources: Mapping[str, KeySource],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.sources = sources
        self.issuers: dict[str, IssuerConfig] = {i.issuer: i for i in cfg.issuers}
        self.cache = TokenCache(cfg.cache_size)
        self.clock = clock
        self.signature_checks = 0  # jwt.decode calls; observable proof that the cache works

    async def verify(self, token: str) -> Principal:
        """The principal of ``token`` (from ``extract_token``) or raise Deny."""
        principal = self.cached(token)
        if principal is None:
            principal = await self.verify_fresh(token)
        return principal

    def cached(self, token: str) -> Principal | None:
        """The principal of ``token`` when it was verified before and still holds (a cache hit),
        else ``None`` (then ``verify_fresh``); raises Deny for a non-ASCII or expired token.

        The shape is checked only on a miss: a hit is a token that passed it before.
        """
        if not token.isascii():  # O(1) for str; the cache key needs ASCII bytes
            raise token_deny(TOKEN_MALFORMED)
        key = _cache_key(token)
        entry = self.cache.get(key)
        if entry is None:
            return None
        source = self.sources[entry.issuer]
        if self.clock() >= entry.expires_at + self.cfg.leeway_s:
            self.cache.discard(key)
            _CACHE_EXPIRED.inc()
            raise token_deny(TOKEN_EXPIRED)
        if entry.generation == source.generation and source.usable():
            _CACHE_HIT.inc()
            return entry.principal
        self.cache.discard(key)
        return None

    async def verify_fresh(self, token: str) -> Principal:
        """Verify ``token`` for which ``cached`` answered ``None``, and cache its principal."""
        _CACHE_MISS.inc()
        if not is_compact(token):
            raise token_deny(TOKEN_MALFORMED)
        principal, issuer, generation = await self._verify(token)
        if principal.expires_at is not None:
            key = _cache_key(token)
            self.cache.put(key, _Entry(principal, principal.expires_at, issuer, generation))
        return principal

    async def _verify(self, token: str) -> tuple[Principal, str, int]:
        header_b64, payload_b64, signature_b64 = token.split(".")
        try:
            header = _segment_json(header_b64)
            unverified = _segment_json(payload_b64)
            base64.b64decode(
                signature_b64 + "=" * (-len(signature_b64) % 4), altchars=b"-_", validate=True
            )
        except _Malformed:
            raise token_deny(TOKEN_MALFORMED) from None

        alg = header.get("alg")
        if not isinstance(alg, str) or not alg or alg.lower() == "none":
            # SECURITY: alg=none (any spelling) is never acceptable.
            raise token_deny(TOKEN_ALGORITHM)
        # SECURITY: the unverified iss only *selects* which configured issuer's keys and rules to
        # verify with; jwt.decode then checks iss again on the verified payload.
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise token_deny(TOKEN_ISSUER)
        if alg not in issuer.algorithms:
            raise token_deny(TOKEN_ALGORITHM)
        if "crit" in header:
            # SECURITY: RFC 7515 §4.1.11: unknown critical extensions must be rejected; we know none
            # (not even b64=false).
            raise token_deny(TOKEN_CRIT)
        if "b64" in header:
            raise token_deny(TOKEN_MALFORMED)
        # SECURITY: jku, x5u, jwk, x5c, x5t are deliberately never read: keys come only from the
        # issuer's configured JWKS, never from the token.
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise token_deny(TOKEN_MALFORMED)

        source = self.sources[issuer.issuer]
        keys = self._candidates(source, kid, alg)
        if keys is None and await source.refetch_for_unknown_kid():
            keys = self._candidates(source, kid, alg)
        if not source.usable():
            raise DependencyError(JWKS_UNAVAILABLE, "the issuer's signing keys are unavailable")
        if keys is None:
            raise token_deny(TOKEN_UNKNOWN_KEY)
        if not keys:
            # the kid exists but its key type cannot serve this alg (e.g. RSA key, ES256 token)
            raise token_deny(TOKEN_ALGORITHM)
        generation = source.generation

        claims: dict[str, Any] | None = None
        reason = TOKEN_SIGNATURE
        for jwk in keys:
            self.signature_checks += 1
            try:
                claims = jwt.decode(
                    token,
                    key=jwk,
                    algorithms=[alg],
                    audience=list(issuer.audiences),
                    issuer=issuer.issuer,
                    leeway=self.cfg.leeway_s,
                    options={
                        "require": list(issuer.required_claims),
                        "enforce_minimum_key_length": True,
                    },
                )
                break
            except jwt_errors.PyJWTError as exc:
                reason = _error_reason(exc)
                if reason != TOKEN_SIGNATURE:
                    break  # claims are only checked after a good signature: definitive
        if claims is None:
            raise token_deny(reason)
        return self._principal(issuer, claims), issuer.issuer, generation

    @staticmethod
    def _candidates(source: KeySource, kid: str | None, alg: str) -> list[Any] | None:
        """None: kid unknown; []: kid known but no key of it serves alg."""
        keyset = source.keyset
        if kid is not None and (len(kid) > MAX_KID_CHARS or not keyset.has_kid(kid)):
            return None
        found = keyset.candidates(kid, alg)
        if kid is None and not found:
            return None
        return found

    @staticmethod
    def _principal(issuer: IssuerConfig, claims: dict[str, Any]) -> Principal:
        cmap = issuer.claims

        def text(name: str, required: bool = False) -> str | None:
            value = claims.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_CHARS:
                raise token_deny(TOKEN_CLAIMS)
            return value

        subject = text(cmap.subject, required=True)
        assert subject is not None
        exp = claims.get("exp")
        return Principal(
            subject=subject,
            issuer=issuer.issuer,
            tenant=text(cmap.tenant),
            entity=text(cmap.entity),
            nationality=text(cmap.nationality),
            purpose=text(cmap.purpose),
            claims=claims,
            expires_at=float(exp) if isinstance(exp, (int, float)) else None,
        )
