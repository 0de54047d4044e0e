"""Entity sources: native YAML, FollowTheMoney JSON lines, Consolidated Screening List.

Each loader has the signature ``load(path, collector, source_index, hasher)``: it adds entities and
edges to the collector, reports bad rows to ``collector.reports[source_index]``, feeds every byte it
reads to ``hasher`` (the registry version), and raises ``ConfigError`` only when the file as a
whole is unusable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model import Collector
from .csl import load_csl
from .ftm import load_ftm
from .native import load_native

Loader = Callable[[str, Collector, int, Any], None]

LOADERS: dict[str, Loader] = {"native": load_native, "ftm": load_ftm, "csl": load_csl}
