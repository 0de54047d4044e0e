"""What an adapter measures: the route and the request, with no HTTP framework types."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..config import RouteConfig


class Submission(NamedTuple):
    """A request as an adapter sees it. ``headers`` is any case-insensitive mapping with
    ``.get`` (and optionally ``.getall``); ``body`` is the whole body, already bounded."""

    route: RouteConfig
    method: str
    path: str
    headers: Any
    body: bytes


__all__ = ["Submission"]
