"""Find the one bearer token of a request: ``Authorization: Bearer`` plus route-configured headers.

Extra sources (``RouteConfig.token_headers``) carry either ``Bearer <jwt>`` (Ray's
``x-ray-authorization``) or the raw JWT (Slurm's ``X-SLURM-USER-TOKEN``). A request must present
exactly one token: a repeated header, or two sources with different tokens, is ambiguous and refused
(``token-duplicate``) rather than guessing which one the upstream will honour. An ``Authorization``
header with another scheme (e.g. Basic) is not a bearer credential and is ignored.

The token's shape (``is_compact``) is checked by ``TokenVerifier.verify`` on a cache miss, not
here: a token found in the verified-token cache has the exact bytes of one that passed the check
(the cache is keyed by its SHA-256), and the regular expression over a ~1 KB token is a visible
share of a request's instructions (``bench/instructions.py --clients 16`` counts them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .reasons import (
    TOKEN_DUPLICATE,
    TOKEN_MISSING,
    TOKEN_TOO_LARGE,
    token_deny,
)

# JWS compact serialisation: three unpadded base64url segments; the signature may be empty here so
# that alg=none and stripped signatures get their own reasons later.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+")


def is_compact(token: str) -> bool:
    """True for the JWS compact shape: three base64url segments, the last one possibly empty."""
    return _COMPACT.fullmatch(token) is not None


def extract_token(headers: Any, token_headers: Sequence[str], max_bytes: int) -> str:
    """The request's one candidate token (shape unchecked: ``is_compact``), or raise Deny
    (token-missing/-duplicate/-too-large)."""
    token: str | None = None  # the first source's; any other must be the same
    differs = False
    authz = headers.getall("Authorization", ())
    # SECURITY: two Authorization headers may be read differently by us and by the upstream.
    if len(authz) > 1:
        raise token_deny(TOKEN_DUPLICATE)
    if authz:
        value = authz[0]
        if len(value) > max_bytes + 64:  # checked before any parsing
            raise token_deny(TOKEN_TOO_LARGE)
        m = _BEARER.match(value)
        if m is not None:
            token = value[m.end() :].strip()
        elif value.strip().lower() == "bearer":
            token = ""
    for name in token_headers:
        if name.lower() == "authorization":
            continue
        values = headers.getall(name, ())
        if len(values) > 1:
            raise token_deny(TOKEN_DUPLICATE)
        if values:
            value = values[0]
            if len(value) > max_bytes + 64:
                raise token_deny(TOKEN_TOO_LARGE)
            m = _BEARER.match(value)
            found = (value[m.end() :] if m else value).strip()
            # (Compared, not put in a set: hashing a fresh 1 KB string per request costs more.)
            if token is None:
                token = found
            elif found != token:
                differs = True  # refused once every source has been read
    if token is None:
        raise token_deny(TOKEN_MISSING)
    if differs:
        raise token_deny(TOKEN_DUPLICATE)
    if not token:
        raise token_deny(TOKEN_MISSING)
    if len(token) > max_bytes:
        raise token_deny(TOKEN_TOO_LARGE)
    return token
