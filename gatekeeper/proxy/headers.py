"""Header hygiene: what the client may not send us, and what we never forward.

Also the request-line overrides the gate refuses, as headers or as a ``_method`` query parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import compress
from operator import itemgetter
from typing import Any
from urllib.parse import parse_qsl

from multidict import CIMultiDict, CIMultiDictProxy

from ..context import R_OVERRIDE_HEADER, R_OVERRIDE_PARAM
from ..errors import BadRequest


def has_line_break(text: str) -> bool:
    """True when ``text`` holds a CR or LF: the check of a head's lines before they are joined.

    Two ``in`` tests are two ``memchr`` scans; counting CRs and LFs in the joined head instead
    (the earlier check) was a byte-by-byte loop, 6k instructions for a head carrying a 1 KB token.
    """
    return "\r" in text or "\n" in text


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
# SECURITY: client-address headers other than the X-Forwarded-For the gate writes itself: an
# upstream that reads X-Real-IP or True-Client-IP must not get a value the client chose.
CLIENT_ADDRESS_HEADERS = frozenset(
    {
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "cf-connecting-ip",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-proto",
        "x-original-forwarded-for",
    }
)
# Expect: the gate answers ``100-continue`` to its client itself and sends the body on whole;
# forwarded, it would make the upstream client wait for an interim answer the upstream may not send.
_REQUEST_DROP = (
    HOP_BY_HOP
    | CLIENT_ADDRESS_HEADERS
    | {
        "host",
        "content-length",
        "x-forwarded-for",
        "forwarded",
        "expect",
    }
)
# The gate's server writes its own Date on every response: a forwarded one would make two, and
# Date is a singleton field (RFC 9110 §6.6.1). nginx's proxy_pass replaces it the same way.
_RESPONSE_DROP = HOP_BY_HOP | {"content-length", "x-gatekeeper-decision-id", "date"}
# SECURITY: CGI/WSGI-style upstreams map "-" and "_" in header names to the same variable
# (HTTP_X_GATEKEEPER_TENANT), so every spelling of the prefix is the gate's.
_GATE_PREFIXES = ("x-gatekeeper-", "x_gatekeeper_", "x-gatekeeper_", "x_gatekeeper-")
# In ``header_names``: every name that is (or starts like) a gate header contains it.
GATE_MARK = "\nx-gatekeeper"


def is_gate_header(name: str) -> bool:
    """Whether ``name`` is (or an upstream may read it as) an ``X-Gatekeeper-*`` header."""
    return name.lower().startswith(_GATE_PREFIXES)


# Headers that some frameworks (Rack, Symfony, Express method-override, IIS URL Rewrite, ...)
# honour to change the method or the path *after* the gate has routed and decided on the real
# ones: a ``GET`` to a read route carrying ``X-HTTP-Method-Override: POST`` and a job body would be
# submitted unmeasured by such an upstream.
OVERRIDE_HEADERS = (
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
)


_OVERRIDE_NAMES = frozenset(OVERRIDE_HEADERS)
_OVERRIDE_MARKS = tuple(f"\n{name}\n" for name in OVERRIDE_HEADERS)


def header_names(headers: CIMultiDictProxy[str]) -> str:
    """Every header name lower-cased, ``_`` read as ``-``, each between newlines: one string that
    the screens below (and the intake) search instead of walking the names each.

    A name is present (as multidict matches names: lower-cased) only if ``"\n<name>\n"`` is in
    it; the converse can fail only for a name holding a newline, which the exact checks sort out.
    """
    return "\n" + "\n".join(headers.keys()).lower().replace("_", "-") + "\n"


def refuse_override_headers(headers: CIMultiDictProxy[str], names: str | None = None) -> None:
    """Raise ``BadRequest('override-header')`` when a method or path override header is present.

    Underscore spellings (``X_HTTP_Method_Override``) count: CGI/WSGI-style upstreams map ``-``
    and ``_`` in a header name to the same variable. ``names``: ``header_names(headers)``.
    """
    if names is None:
        names = header_names(headers)
    for mark in _OVERRIDE_MARKS:
        if mark in names:
            break
    else:
        return  # the common case: no name that could be an override
    for key in headers:
        name = key.lower().replace("_", "-")
        if name in _OVERRIDE_NAMES:
            # SECURITY: refused, not stripped: the gate decides on the request line, and a client
            # relying on an override must learn that it was not applied.
            raise BadRequest(
                R_OVERRIDE_HEADER,
                f"{name} is not accepted: the gate routes and decides on the request line",
            )


# The same override as a query parameter (Symfony reads ``_method`` from the query string, Express's
# method-override can be set to; Rack and Laravel read it from a form body).
_OVERRIDE_PARAM = "_method"


def refuse_override_params(query: str) -> None:
    """Raise ``BadRequest('override-param')`` when the query string (``?...``) names ``_method``.

    Names are compared as a framework's query parser sees them: percent-decoded, ``+`` as space,
    in any case, an array suffix (``_method[]``) ignored (``_param_name``). A form-encoded body
    can carry ``_method`` too; the gate does not read streamed
    bodies, so routes whose upstream honours that must not leave writes unmeasured.
    """
    if len(query) < 8 or ("method" not in query.lower() and "%" not in query):
        return  # the common case: no query, or no name that could decode to _method
    for name, _ in parse_qsl(query[1:], keep_blank_values=True):
        if _param_name(name) == _OVERRIDE_PARAM:
            # SECURITY: refused like the override headers: the gate decided on the request line.
            raise BadRequest(
                R_OVERRIDE_PARAM,
                "the _method query parameter is not accepted: the gate routes and decides on "
                "the request line",
            )


def _param_name(name: str) -> str:
    """A query name as PHP-style parsers key it: ``_method[]``/``_method[x]`` are ``_method``,
    and ``.`` or a space reads as ``_``; any case, outer whitespace ignored."""
    base = name.strip().lower().partition("[")[0]
    return base.replace(".", "_").replace(" ", "_")


def _connection_tokens(values: Iterable[str]) -> set[str]:
    return {t.strip().lower() for v in values for t in v.split(",") if t.strip()}


def strip_client_headers(
    headers: CIMultiDictProxy[str], names: str | None = None
) -> CIMultiDictProxy[str]:
    """The request headers with every client-supplied ``X-Gatekeeper-*`` removed (``names``:
    ``header_names(headers)``)."""
    # SECURITY: the gate's identity headers must only ever come from the gate.
    # Fast common case: no name starts with "x-gatekeeper" in any spelling of "-" and "_" (a
    # name that merely starts so, e.g. "X-Gatekeeperish", takes the exact filter below).
    if names is None:
        names = header_names(headers)
    if GATE_MARK not in names:
        return headers
    return CIMultiDictProxy(
        CIMultiDict((k, v) for k, v in headers.items() if not is_gate_header(k))
    )


# The header filters below answer from the names alone (with the Connection values they name and,
# for a request, whether an Upgrade is kept): clients and upstreams send the same few shapes over
# and over, so each shape's answer (keep or drop, per position) is remembered, keyed by all of
# that. Bounded: only shapes whose names and Connection values total at most _SHAPE_CHARS
# characters are kept, and a full table is emptied (a flood of distinct shapes only costs the
# filtering itself).
_SHAPES_MAX = 512
_SHAPE_CHARS = 2048
_request_shapes: dict[tuple[tuple[str, ...], bool, tuple[str, ...]], tuple[bool, ...]] = {}
_response_shapes: dict[tuple[tuple[str, ...], str], tuple[bool, ...]] = {}
_name_of = itemgetter(0)


def _remember(
    table: dict[Any, tuple[bool, ...]], key: Any, chars: int, keep: tuple[bool, ...]
) -> None:
    if chars <= _SHAPE_CHARS:
        if len(table) >= _SHAPES_MAX:
            table.clear()
        table[key] = keep


def _request_keep(
    names: Iterable[str], keep_upgrade: bool, connection: Sequence[str]
) -> tuple[bool, ...]:
    drop = _REQUEST_DROP | _connection_tokens(connection) if connection else _REQUEST_DROP
    keep: list[bool] = []
    for k in names:
        lk = k.lower()
        keep.append(
            not (
                lk in drop
                or lk.startswith(_GATE_PREFIXES)
                or (keep_upgrade is False and lk.startswith("sec-websocket-"))
            )
        )
    return tuple(keep)


def upstream_request_headers(
    headers: CIMultiDictProxy[str], *, keep_upgrade: bool = False
) -> list[tuple[str, str]]:
    """Headers to forward: no hop-by-hop (incl. those named in Connection), no X-Gatekeeper-*.

    A list of pairs in the client's order, not a new multidict: the gate only appends to it
    (every header it sets itself is one this filter drops), and the upstream clients take pairs.
    """
    # The names of the pairs themselves: a multidict's keys() lists a repeated name once.
    items = list(headers.items())
    names = tuple(map(_name_of, items))
    connection = tuple(headers.getall("Connection", ()))
    key = (names, keep_upgrade, connection)
    keep = _request_shapes.get(key)
    if keep is None:
        keep = _request_keep(names, keep_upgrade, connection)
        _remember(_request_shapes, key, sum(map(len, names + connection)), keep)
    return list(compress(items, keep))


def downstream_header_pairs(
    pairs: Iterable[tuple[str, str]], connection: str
) -> list[tuple[str, str]]:
    """Upstream response headers to pass back to the client (``connection``: its Connection)."""
    pairs = pairs if isinstance(pairs, list) else list(pairs)
    names = tuple(map(_name_of, pairs))
    key = (names, connection)
    keep = _response_shapes.get(key)
    if keep is None:
        drop = _RESPONSE_DROP | _connection_tokens((connection,)) if connection else _RESPONSE_DROP
        keep = tuple(k.lower() not in drop for k in names)
        _remember(_response_shapes, key, sum(map(len, names)) + len(connection), keep)
    return list(compress(pairs, keep))


def downstream_response_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
) -> list[tuple[str, str]]:
    """``downstream_header_pairs`` of a multidict (aiohttp's client)."""
    return downstream_header_pairs(headers.items(), ",".join(headers.getall("Connection", ())))
