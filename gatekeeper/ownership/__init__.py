"""Entity registry and the 50%-rule ownership resolver (docs/entities.md).

Public API: ``load_registry(cfg, as_of=day) -> Registry``; ``Registry.profile(id)`` (O(1),
unknown ids get ``known=False``), ``Registry.get(id)``, ``Registry.profiles()``,
``Registry.version``, ``Registry.stats``; ``LISTING_FLAGS`` (the US 50% rule) and
``AFFILIATION_FLAGS`` (one 50% rule per flag). Re-screening: ``screening.diff`` and
``rescreen.Rescreener``; polling the source files: ``watch.watch_sources``.
"""

from __future__ import annotations

from .model import AFFILIATION_FLAGS, LISTING_FLAGS
from .registry import Registry, load_registry

__all__ = ["AFFILIATION_FLAGS", "LISTING_FLAGS", "Registry", "load_registry"]
