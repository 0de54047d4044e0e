"""Names of audit files: rotation segments and per-replica files.

Rotation renames the live file ``audit.jsonl`` to ``audit.jsonl.<n>`` with ``n`` one above the
highest existing segment, so **a higher number is newer** and nothing is ever renamed twice (no
logrotate-style shifting, which is not crash-safe). One chain runs through
``audit.jsonl.1, audit.jsonl.2, ..., audit.jsonl`` in that order; ``chain_files`` lists them and
``order_paths`` puts any list of such names (e.g. a shell glob, which sorts ``.10`` before ``.2``)
into chain order, grouped by live-file name.

With ``workers > 1`` every process keeps its own chain in its own file; ``per_replica_path`` turns
``audit/audit.jsonl`` into ``audit/audit.gk-1.jsonl`` for replica ``gk-1``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

_SEGMENT = re.compile(r"^(?P<base>.+)\.(?P<n>[0-9]{1,9})$")


def per_replica_path(path: str, replica: str) -> str:
    """``dir/audit.jsonl`` -> ``dir/audit.<replica>.jsonl`` (suffix kept; appended if none)."""
    p = Path(path)
    if p.suffix:
        return str(p.with_name(f"{p.stem}.{replica}{p.suffix}"))
    return f"{path}.{replica}"


def split_segment(path: str) -> tuple[str, int | None]:
    """``audit.jsonl.3`` -> (``audit.jsonl``, 3); ``audit.jsonl`` -> (``audit.jsonl``, None)."""
    m = _SEGMENT.match(path)
    if m is None:
        return path, None
    return m.group("base"), int(m.group("n"))


def segments(live: str) -> list[tuple[int, str]]:
    """Existing rotated segments of ``live``, oldest first, as (number, path)."""
    folder = os.path.dirname(live) or "."
    name = os.path.basename(live)
    found: list[tuple[int, str]] = []
    try:
        entries = os.listdir(folder)
    except OSError:  # no folder (yet), or not a folder: no segments
        return []
    for entry in entries:
        if entry.startswith(name + "."):
            rest = entry[len(name) + 1 :]
            if rest.isdigit() and len(rest) <= 9:
                found.append((int(rest), os.path.join(folder, entry)))
    found.sort()
    return found


def chain_files(live: str) -> list[str]:
    """Every file of the chain whose live file is ``live``, in chain order (live file last)."""
    files = [p for _, p in segments(live)]
    if os.path.exists(live):
        files.append(live)
    return files


def next_segment(live: str) -> str:
    """The name the live file gets when it is rotated now."""
    existing = segments(live)
    n = existing[-1][0] + 1 if existing else 1
    return f"{live}.{n}"


def order_paths(paths: Iterable[str]) -> list[list[str]]:
    """Group paths by live-file name and sort each group into chain order (live file last)."""
    groups: dict[str, list[tuple[float, str]]] = {}
    for path in paths:
        base, n = split_segment(path)
        if n is None:
            groups.setdefault(path, []).append((float("inf"), path))
        else:
            groups.setdefault(base, []).append((float(n), path))
    return [[p for _, p in sorted(group)] for group in groups.values()]


def flatten(groups: Sequence[Sequence[str]]) -> list[str]:
    return [p for g in groups for p in g]
