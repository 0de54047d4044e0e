"""Header hygiene: what the client may not send us, and what we never forward."""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 §7.6.1 hop-by-hop headers, plus ones we always set ourselves.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "x-forwarded-for", "forwarded"}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length", "x-gatekeeper-decision-id"}
GATE_PREFIX = "x-gatekeeper-"


def _connection_tokens(values: Iterable[str]) -> set[str]:
    return {t.strip().lower() for v in values for t in v.split(",") if t.strip()}


def strip_client_headers(headers: CIMultiDictProxy[str]) -> CIMultiDictProxy[str]:
    """The request headers with every client-supplied ``X-Gatekeeper-*`` removed."""
    # SECURITY: the gate's identity headers must only ever come from the gate.
    if not any(k.lower().startswith(GATE_PREFIX) for k in headers):
        return headers
    return CIMultiDictProxy(
        CIMultiDict((k, v) for k, v in headers.items() if not k.lower().startswith(GATE_PREFIX))
    )


def upstream_request_headers(
    headers: CIMultiDictProxy[str], *, keep_upgrade: bool = False
) -> CIMultiDict[str]:
    """Headers to forward: no hop-by-hop (incl. those named in Connection), no X-Gatekeeper-*."""
    drop = _REQUEST_DROP | _connection_tokens(headers.getall("Connection", ()))
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in headers.items():
        lk = k.lower()
        if lk in drop or lk.startswith(GATE_PREFIX):
            continue
        if keep_upgrade is False and lk.startswith("sec-websocket-"):
            continue
        out.add(k, v)
    return out


def downstream_response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Upstream response headers to pass back to the client."""
    drop = _RESPONSE_DROP | _connection_tokens(headers.getall("Connection", ()))
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in headers.items():
        if k.lower() not in drop:
            out.add(k, v)
    return out
