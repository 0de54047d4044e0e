"""Route table: first match wins (path prefix, optional regex, optional methods), compiled once."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..config import RouteConfig
from ..memo import remember

_MATCH_KEY_TEXT = 1024  # characters of method and path a remembered match may hold


class CompiledRoute:
    """A route with its regex compiled and its method set frozen."""

    __slots__ = ("config", "methods", "prefix", "regex")

    def __init__(self, config: RouteConfig) -> None:
        self.config = config
        self.prefix = config.match.path_prefix
        self.regex = re.compile(config.match.path_regex) if config.match.path_regex else None
        self.methods = frozenset(config.match.methods)

    def matches(self, method: str, path: str) -> bool:
        if not path.startswith(self.prefix):
            return False
        if self.methods and method not in self.methods:
            return False
        return self.regex is None or self.regex.search(path) is not None


class Router:
    """Ordered routes; ``match`` returns the first whose prefix, methods and regex all match."""

    __slots__ = ("_matched", "routes")

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self.routes = tuple(CompiledRoute(r) for r in routes)
        # (method, path) -> its route or None: a pure function of them and the (fixed) table,
        # and clients repeat the same few (``gatekeeper.memo`` bounds it).
        self._matched: dict[tuple[str, str], RouteConfig | None] = {}

    def match(self, method: str, path: str) -> RouteConfig | None:
        key = (method, path)
        try:
            return self._matched[key]
        except KeyError:
            pass
        found = self._first(method, path)
        remember(self._matched, key, found, len(method) + len(path), _MATCH_KEY_TEXT)
        return found

    def _first(self, method: str, path: str) -> RouteConfig | None:
        for route in self.routes:
            if route.matches(method, path):
                return route.config
        return None
