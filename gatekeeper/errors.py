"""The whole error taxonomy of gatekeeper, by who must act.

- ``Deny``: the *client* must act. The request is refused with a 4xx status and a kebab-case
  reason code (401 bad token, 400/413 bad body, 403 unknown entity, 429 quota, 451 export control).
  ``BadRequest`` is the 400 flavour raised by parsers and compute adapters.
- ``DependencyError``: the *operator* must act. A dependency (quota store, audit sink, JWKS
  endpoint, upstream) failed; the request is refused fail-closed with 503 (or 502/504 for the
  upstream) and counted in its own metric.
- ``ConfigError``: the *deployer* must act. Raised at start-up, reload and by the offline
  validators; it carries every problem found, each located as ``file:line: key.path: message``.

There are deliberately no deeper trees: callers branch on these three and on the reason string.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class GatekeeperError(Exception):
    """Base of the three kinds below; never raised directly."""


class Deny(GatekeeperError):
    """The request is refused because of the client: its token, body, identity, quota or the law."""

    def __init__(
        self,
        reason: str,
        status: int,
        detail: str = "",
        *,
        rule: str | None = None,
        headers: Mapping[str, str] | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.status = status
        self.detail = detail
        self.rule = rule
        self.headers: dict[str, str] = dict(headers or {})
        self.title = title


class BadRequest(Deny):
    """A malformed request (400, or 413 when too large); raised by parsers and compute adapters."""

    def __init__(self, reason: str, detail: str = "", *, status: int = 400) -> None:
        super().__init__(reason, status, detail)


class DependencyError(GatekeeperError):
    """A dependency the operator runs failed; the gate answers 503 (502/504 for the upstream)."""

    def __init__(self, reason: str, detail: str = "", *, status: int = 503) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Problem:
    """One located configuration problem."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(GatekeeperError):
    """Invalid configuration, policy or data file: every problem at once, each with its location."""

    def __init__(self, problems: Iterable[Problem | str]) -> None:
        self.problems: list[str] = [str(p) for p in problems]
        super().__init__("\n".join(self.problems))
