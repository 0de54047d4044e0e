"""Re-screening on reload: write, count and keep the changes a new entity registry brings.

``Rescreener.run(before, after, audit)`` is called by the runtime after every successful reload
(SIGHUP, ``POST /v1/reload``). The comparison (``screening.diff``) runs in a worker thread — at a
million entities it takes seconds, and the event loop keeps serving on the new snapshot meanwhile.
Each changed entity becomes one ``screening`` record through the audit log's public ``append``
API, chained like any record; the records go in batches of ``BATCH`` queued without waiting and
one awaited, so a list version that changes thousands of entities neither floods the log's queue
nor waits for one commit per record. A record that cannot be written is logged and counted as an
audit error by the log; the reload itself stands (the data is already in use), and the changes
are still listed on the admin API.

With ``workers > 1`` every worker reloads and keeps the list for its admin API, but only the
worker that ``writes`` (worker 0) writes the records and counts the metric, so the sum across
workers counts each change once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import metrics
from ..errors import DependencyError
from .registry import Registry
from .screening import Change, count_kinds, diff

if TYPE_CHECKING:
    from ..audit.log import AuditLog

log = logging.getLogger("gatekeeper.entities")

BATCH = 256  # records queued per awaited commit (the log's queue holds 10,000)
KEPT_RELOADS = 16  # reloads listed on the admin API
KEPT_CHANGES = 10_000  # changes kept per reload (the count stays exact)


class Rescreener:
    """The last reloads' screening changes, newest last (``GET /v1/screening``)."""

    def __init__(self, *, writes: bool = True) -> None:
        self.writes = writes
        self.reloads: deque[dict[str, Any]] = deque(maxlen=KEPT_RELOADS)

    async def run(
        self,
        before: Registry,
        after: Registry,
        audit: AuditLog | None,
        *,
        at: str,
        data_versions: tuple[str, str] | None = None,
    ) -> list[Change]:
        """Compare, count, write and keep; ``data_versions``: the snapshots' data versions."""
        changes = await asyncio.to_thread(diff, before, after)

        def body(c: Change) -> dict[str, Any]:
            return c.record_body(before.version, after.version, data_versions)

        written = 0
        if changes and self.writes:
            for kind, n in count_kinds(changes):
                metrics.SCREENING_CHANGES.labels(kind).inc(n)
            if audit is not None:
                written = await _write(audit, [body(c) for c in changes])
        if changes:
            log.info(
                "re-screening: %d entit%s changed (data %s -> %s)",
                len(changes),
                "y" if len(changes) == 1 else "ies",
                before.version,
                after.version,
            )
        self.reloads.append(
            {
                "at": at,
                "entities_version": {"before": before.version, "after": after.version},
                "data_version": (
                    None
                    if data_versions is None
                    else {"before": data_versions[0], "after": data_versions[1]}
                ),
                "changed": len(changes),
                "audit_records": written,
                "changes": [body(c) for c in changes[:KEPT_CHANGES]],
            }
        )
        return changes

    def to_json(self) -> dict[str, Any]:
        return {"reloads": list(self.reloads)}


async def _write(audit: AuditLog, bodies: list[dict[str, Any]]) -> int:
    written = 0
    try:
        for start in range(0, len(bodies), BATCH):
            chunk = bodies[start : start + BATCH]
            for b in chunk[:-1]:
                audit.append_nowait(b)
            await audit.append(chunk[-1])
            written += len(chunk)
    except DependencyError as exc:
        log.error(
            "re-screening: %d of %d screening records not written: %s",
            len(bodies) - written,
            len(bodies),
            exc,
        )
    return written
