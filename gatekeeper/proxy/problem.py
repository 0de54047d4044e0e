"""RFC 9457 problem+json answers for blocked requests (docs/reference.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus

import orjson

PROBLEM_TYPE = "application/problem+json"
DECISION_HEADER = "X-Gatekeeper-Decision-Id"


def title_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole response to write: status, headers (in order) and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def problem_reply(
    *,
    status: int,
    reason: str,
    detail: str,
    decision_id: str,
    rule: str | None = None,
    reasons: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Reply:
    """The blocked answer; 451s carry ``Link: <...>; rel="blocked-by"`` (RFC 7725)."""
    body = orjson.dumps(
        {
            "type": f"urn:gatekeeper:problem:{reason}",
            "title": title or title_for(status),
            "status": status,
            "detail": detail or title_for(status),
            "decision_id": decision_id,
            "rule": rule,
            "reasons": list(reasons or [reason]),
        }
    )
    out = {"Content-Type": PROBLEM_TYPE, DECISION_HEADER: decision_id, "Cache-Control": "no-store"}
    if headers:
        out.update(headers)
    if status == 451 and "Link" not in out:
        out["Link"] = f'<urn:gatekeeper:rule:{rule or reason}>; rel="blocked-by"'
    if status == 401 and "WWW-Authenticate" not in out:
        out["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return Reply(status, list(out.items()), body)
