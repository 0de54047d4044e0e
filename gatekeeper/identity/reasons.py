"""Token reason codes and the 401 they become (RFC 6750 ``WWW-Authenticate``).

Descriptions are fixed strings per reason: nothing from the token (not even its ``alg``, ``kid`` or
``iss``, all attacker-controlled) is echoed into the response, the logs or the audit record.
"""

from __future__ import annotations

from ..errors import Deny

TOKEN_MISSING = "token-missing"
TOKEN_MALFORMED = "token-malformed"
TOKEN_TOO_LARGE = "token-too-large"
TOKEN_DUPLICATE = "token-duplicate"
TOKEN_EXPIRED = "token-expired"
TOKEN_NOT_YET_VALID = "token-not-yet-valid"
TOKEN_SIGNATURE = "token-signature"
TOKEN_AUDIENCE = "token-audience"
TOKEN_ISSUER = "token-issuer"
TOKEN_ALGORITHM = "token-algorithm"
TOKEN_UNKNOWN_KEY = "token-unknown-key"
TOKEN_CLAIMS = "token-claims"
TOKEN_CRIT = "token-crit"
JWKS_UNAVAILABLE = "jwks-unavailable"  # DependencyError (503): the issuer's keys cannot be had

DESCRIPTIONS = {
    TOKEN_MISSING: "no bearer token",
    TOKEN_MALFORMED: "the token is not a well-formed JWS compact JWT",
    TOKEN_TOO_LARGE: "the token is too large",
    TOKEN_DUPLICATE: "more than one token or Authorization header",
    TOKEN_EXPIRED: "the token has expired",
    TOKEN_NOT_YET_VALID: "the token is not valid yet",
    TOKEN_SIGNATURE: "the token signature does not verify",
    TOKEN_AUDIENCE: "the token is not issued for this audience",
    TOKEN_ISSUER: "the token issuer is not trusted",
    TOKEN_ALGORITHM: "the token algorithm is not allowed for this issuer or key",
    TOKEN_UNKNOWN_KEY: "the token is signed with an unknown key",
    TOKEN_CLAIMS: "the token lacks a required claim or has an invalid claim",
    TOKEN_CRIT: "the token has critical header parameters this gate does not understand",
}

# The gate answers every token problem, including a missing token, with
# error="invalid_token". RFC 6750 §3.1 says a request *without* credentials SHOULD carry no error
# code; set this to None to follow the RFC for token-missing.
MISSING_TOKEN_ERROR: str | None = "invalid_token"


def token_deny(reason: str) -> Deny:
    """The 401 for a token problem, with its WWW-Authenticate challenge."""
    description = DESCRIPTIONS[reason]
    error = MISSING_TOKEN_ERROR if reason == TOKEN_MISSING else "invalid_token"
    if error is None:
        challenge = 'Bearer realm="gatekeeper"'
    else:
        challenge = f'Bearer error="{error}", error_description="{description}"'
    return Deny(reason, 401, description, headers={"WWW-Authenticate": challenge})
