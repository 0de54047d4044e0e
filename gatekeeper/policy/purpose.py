"""Declared purposes: the identity provider's claim stands, a client's header can only add to it.

A token's ``purpose`` claim is what the identity provider vouches for. The client may declare
purposes of its own in one ``X-Gatekeeper-Purpose`` header (comma-separated); they are added to
the claim's, never put in its place, so a rule listing prohibited purposes matches when either
names one. ``request.purpose`` in a policy is this set (trimmed, lower-cased).

``header_purpose`` is the one place the edge (``serve``) and ``gatekeeper check`` read the header.
"""

from __future__ import annotations

import functools
from typing import Any

from multidict import MultiMapping

from ..context import R_PURPOSE_INVALID, R_PURPOSE_REPEATED
from ..errors import BadRequest

PURPOSE_HEADER = "X-Gatekeeper-Purpose"
_PURPOSE_NAME = PURPOSE_HEADER.lower()
MAX_PURPOSE_CHARS = 1024  # a handful of kebab-case purposes; more is not a declaration
MAX_PURPOSES = 16


def header_purpose(headers: MultiMapping[str]) -> str | None:
    """The client's ``X-Gatekeeper-Purpose`` value, or ``None``; 400 when repeated or oversized.

    SECURITY: read before the edge strips client ``X-Gatekeeper-*`` headers. A second header is
    refused rather than choosing one: whichever the gate picked, a reader of the request (a log,
    the scheduler) could pick the other. Underscore spellings (``X_Gatekeeper_Purpose``) are the
    same header: the edge strips them as gate headers, so a purpose declared that way must be
    read, not dropped unread (a declared purpose can only make a decision stricter).
    """
    values = [
        value for key, value in headers.items() if key.lower().replace("_", "-") == _PURPOSE_NAME
    ]
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(R_PURPOSE_REPEATED, f"more than one {PURPOSE_HEADER} header")
    value = values[0]
    if len(value) > MAX_PURPOSE_CHARS or len(value.split(",")) > MAX_PURPOSES:
        raise BadRequest(
            R_PURPOSE_INVALID,
            f"{PURPOSE_HEADER} longer than {MAX_PURPOSE_CHARS} characters "
            f"or more than {MAX_PURPOSES} purposes",
        )
    return value


def _split(text: Any) -> list[str]:
    if not isinstance(text, str):
        return []
    # SECURITY: normalised (trimmed, lower-case) so "Nuclear-Weapons " cannot dodge a purpose list.
    return [p for p in (part.strip().lower() for part in text.split(",")) if p]


_NONE: frozenset[str] = frozenset()


def declared_purposes(claim: str | None, header: str | None) -> frozenset[str]:
    """Every purpose the claim and the header name (the union; empty when neither says)."""
    if claim is None and header is None:
        return _NONE
    return _union(claim, header)


@functools.lru_cache(maxsize=1024)  # a few distinct declarations recur on every request
def _union(claim: str | None, header: str | None) -> frozenset[str]:
    return frozenset(_split(claim)) | frozenset(_split(header))
