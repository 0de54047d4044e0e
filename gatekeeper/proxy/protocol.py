"""The proxy listener's HTTP/1.1 connection protocol: aiohttp's, with the gate's answer to requests
that are not valid HTTP.

aiohttp's parser (llhttp, strict mode) already refuses the request-smuggling shapes: CL+TE together,
duplicate Content-Length, obfuscated or repeated Transfer-Encoding, obs-fold, bare CR/LF, NUL and
whitespace before the colon (tests/security/test_http_attacks.py). What it does with them by default
does not suit a gate: a ``text/plain`` body echoing the offending bytes, no
``X-Gatekeeper-Decision-Id`` (CONTRACT §3: every response carries one), and an ERROR log line with a
traceback per request, which lets anyone flood the gate's log with garbage. Here such requests get
problem+json with a fresh decision id (400, or 431 when a line or the header count is over the
limit), one INFO log line naming that id, a ``gatekeeper_denials_total{route="-"}`` count, and the
connection is closed. They never reach the decision pipeline, so there is no audit record: nothing
about them (method, path, principal) could be read.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from .. import metrics
from .ids import new_decision_id
from .problem import problem_response

log = logging.getLogger("gatekeeper.proxy")

R_BAD_HTTP = "bad-http"
R_HEADER_TOO_LARGE = "header-too-large"


def _first_line(text: str, limit: int = 160) -> str:
    """The parser's message without the echoed request bytes, printable and bounded."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = line.removeprefix("400, message:").strip().rstrip(":")
    return "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in line[:limit])


def classify(exc: BaseException | None, status: int) -> tuple[int, str, str]:
    """(status, reason, detail) for an error aiohttp hands to ``handle_error``."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "the limit"
        return 431, R_HEADER_TOO_LARGE, f"request line or header field longer than {limit} bytes"
    if isinstance(exc, HttpProcessingError):
        message = exc.message if isinstance(exc.message, str) else str(exc)
        if "Too many headers" in message:
            return 431, R_HEADER_TOO_LARGE, "too many header fields"
        return 400, R_BAD_HTTP, _first_line(message) or "malformed HTTP request"
    if status >= 500:
        return 500, "internal-error", "the gate failed to answer"
    return status, R_BAD_HTTP, "malformed HTTP request"


class GateRequestHandler(RequestHandler):
    """aiohttp's connection handler; only the answer to unparsable requests differs."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of a response is on the wire already; only closing is left (as aiohttp does).
            raise ConnectionError("response already started")
        status, reason, detail = classify(exc, status)
        decision_id = new_decision_id()
        peer = self.transport.get_extra_info("peername") if self.transport else None
        # SECURITY: one line, never a traceback: malformed input must not be able to flood logs.
        level = logging.ERROR if status >= 500 else logging.INFO
        if isinstance(exc, BadHttpMethod):
            level = logging.DEBUG  # TLS or other non-HTTP bytes on the port: internet noise
        log.log(
            level,
            "refused malformed request from %s: %d %s (%s) decision %s",
            peer[0] if peer else "?",
            status,
            reason,
            detail,
            decision_id,
            exc_info=exc if status >= 500 else None,
        )
        metrics.DENIALS.labels("-", reason).inc()
        resp = problem_response(
            status=status, reason=reason, detail=detail, decision_id=decision_id
        )
        # SECURITY: after a framing error the rest of the stream cannot be trusted: close.
        resp.force_close()
        return resp


class GateServer(web.Server):
    """``web.Server`` that builds ``GateRequestHandler`` connections."""

    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return GateRequestHandler(self, loop=self._loop, **kwargs)
