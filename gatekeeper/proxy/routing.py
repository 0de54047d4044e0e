"""Route table: first match wins (path prefix, optional regex, optional methods), compiled once."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..config import RouteConfig


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

    __slots__ = ("routes",)

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self.routes = tuple(CompiledRoute(r) for r in routes)

    def match(self, method: str, path: str) -> RouteConfig | None:
        for route in self.routes:
            if route.matches(method, path):
                return route.config
        return None
