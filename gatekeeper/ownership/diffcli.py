"""``gatekeeper entities diff --config C --before DIR_OR_FILES``: re-screening offline.

Loads the configured entity data ("after") and the same configuration with each source's file
replaced by its older version ("before"), and prints one JSON line per changed entity — the same
body as the ``screening`` audit record the gate writes on reload (``screening.Change``). Exit 0
with or without changes; 2 for a configuration error on either side (with ``file:line``).

``--before`` is a directory holding files named like the configured sources (each source's file
name looked up in it), or one file per source: matched to sources by file name, else in order
when there are exactly as many files as sources.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from datetime import date

import orjson

from ..config import EntitiesConfig, load_config
from ..errors import ConfigError, Problem
from .registry import load_registry
from .screening import diff


def before_config(cfg: EntitiesConfig, before: list[str]) -> EntitiesConfig:
    """``cfg`` with every source's path replaced by its older version (module docstring)."""
    sources = cfg.sources
    if len(before) == 1 and os.path.isdir(before[0]):
        paths = [os.path.join(before[0], os.path.basename(s.path)) for s in sources]
    else:
        by_name = {os.path.basename(p): p for p in before}
        if all(os.path.basename(s.path) in by_name for s in sources):
            paths = [by_name[os.path.basename(s.path)] for s in sources]
        elif len(before) == len(sources):
            paths = list(before)
        else:
            names = ", ".join(os.path.basename(s.path) for s in sources)
            raise ConfigError(
                [
                    Problem(
                        "--before", None, "", f"give a directory or one file per source ({names})"
                    )
                ]
            )
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ConfigError([Problem(p, None, "--before", "no such file") for p in missing])
    new_sources = tuple(replace(s, path=p) for s, p in zip(sources, paths, strict=True))
    return replace(cfg, sources=new_sources)


def run_diff(config_path: str, before: list[str], *, as_of: str | None = None) -> int:
    try:
        day = date.fromisoformat(as_of) if as_of else None
    except ValueError:
        print(f"gatekeeper: --as-of {as_of!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(config_path)
        old = load_registry(before_config(cfg.entities, before), as_of=day)
        new = load_registry(cfg.entities, as_of=day)
    except ConfigError as exc:
        print(f"gatekeeper: configuration error:\n{exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    for change in diff(old, new):
        out.write(orjson.dumps(change.record_body(old.version, new.version)).decode() + "\n")
    out.flush()
    return 0
