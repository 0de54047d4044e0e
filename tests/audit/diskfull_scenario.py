"""Disk-full scenario, shared by the tmpfs variant (in-process) and the RLIMIT_FSIZE variant.

``python -m tests.audit.diskfull_scenario rlimit DIR`` runs the RLIMIT_FSIZE variant in its own
process (the limit applies to the whole process) and prints the result as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatekeeper import metrics
from gatekeeper.audit.log import AuditLog
from gatekeeper.errors import DependencyError
from tests.audit.helpers import body, file_cfg


async def scenario(
    path: Path, fill: Callable[[], None], free: Callable[[], None]
) -> dict[str, Any]:
    log = AuditLog(file_cfg(path), replica="gk-0")
    await log.start()
    acked: list[int] = []
    for i in range(5):
        acked.append((await log.append(body(i)))["seq"])
    fill()
    errors_before = metrics.AUDIT_ERRORS.labels(sink="file")._value.get()
    refused = 0
    refused_ids: list[str] = []
    for i in range(400):  # concurrent batches of padded records until the disk is full
        batch = []
        for j in range(8):
            b = body(1000 + i * 8 + j)
            b["padding"] = "p" * 700
            batch.append(log.append(b))
        ids = [f"d{1000 + i * 8 + j:06d}" for j in range(8)]
        for r, did in zip(await asyncio.gather(*batch, return_exceptions=True), ids, strict=True):
            if isinstance(r, DependencyError):
                assert r.reason == "audit-unavailable" and r.status == 503
                refused += 1
                refused_ids.append(did)
            else:
                assert isinstance(r, dict), r
                acked.append(r["seq"])
        if refused:
            break
    healthy_when_full = log.healthy()
    # the same batch again (slightly bigger): still no room, still refused, nothing half-written
    again = []
    for j in range(8):
        b = body(9000 + j)
        b["padding"] = "q" * 800
        again.append(log.append(b))
    results = await asyncio.gather(*again, return_exceptions=True)
    still_refused = all(isinstance(r, DependencyError) for r in results)
    refused_ids += [f"d{9000 + j:06d}" for j in range(8)]
    errors = metrics.AUDIT_ERRORS.labels(sink="file")._value.get() - errors_before
    free()
    # The writer probes once a second while unhealthy: healthy again with no append, however late
    # the probe runs on a busy machine.
    deadline = time.monotonic() + 30
    while not log.healthy() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    healthy_after_probe = log.healthy()
    after = await log.append(body(10_000))
    acked.append(after["seq"])
    await log.close()
    return {
        "acked": acked,
        "refused": refused,
        "refused_ids": refused_ids,
        "healthy_when_full": healthy_when_full,
        "still_refused": still_refused,
        "errors": errors,
        "healthy_after_probe": healthy_after_probe,
        "after_seq": after["seq"],
    }


def run_rlimit(folder: Path) -> dict[str, Any]:
    path = folder / "audit.jsonl"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def fill() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + 20_000, hard))

    def free() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    return asyncio.run(scenario(path, fill, free))


if __name__ == "__main__":
    assert sys.argv[1] == "rlimit"
    print(json.dumps(run_rlimit(Path(sys.argv[2]))))
