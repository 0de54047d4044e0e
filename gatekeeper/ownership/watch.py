"""Reload when the entity source files change (``entities.watch_interval_s``).

Lists are often dropped into place by a cron job rather than followed by a SIGHUP. The watcher
polls each source's (size, mtime, inode) every ``interval`` seconds; a change is acted on once the
file has stayed the same for one more interval, so a file still being written is not read half
way. Then it calls the runtime's reload — the same path as SIGHUP, so a broken new file keeps the
last good registry and a good one is re-screening. A source that disappears counts as a change
(the reload then fails and says which file is missing).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger("gatekeeper.entities")

Signature = tuple[int, int, int] | None


def signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def signatures(paths: Sequence[str]) -> list[Signature]:
    return [signature(p) for p in paths]


async def watch_sources(
    paths: Sequence[str],
    interval: float,
    reload: Callable[[], Awaitable[bool]],
    initial: list[Signature] | None = None,
) -> None:
    """Poll ``paths`` until cancelled; ``reload()`` once per settled change.

    ``initial``: the signatures taken *before* the running registry was loaded, so a file
    replaced between that load and the watcher's first look is still seen as a change.
    """
    seen = initial if initial is not None else signatures(paths)
    pending: list[Signature] | None = None
    while True:
        await asyncio.sleep(interval)
        now = signatures(paths)
        if now == seen:
            pending = None
            continue
        if now != pending:
            pending = now  # changed: wait one more interval for the writer to finish
            continue
        changed = [p for p, a, b in zip(paths, seen, now, strict=True) if a != b]
        log.info("entity sources changed (%s): reloading", ", ".join(changed))
        seen, pending = now, None
        await reload()
