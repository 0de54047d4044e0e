"""Crash-test subject: append concurrently forever, print each acknowledged seq (then get kill -9).

Usage: python -m tests.audit.crash_writer AUDIT_PATH CONCURRENCY [SIGNING_KEY]
Each line on stdout is ``<seq> <hash>`` written with os.write right after ``append`` returned, i.e.
only for records the log reported durable (what a request that got its response relies on).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from gatekeeper.audit.log import AuditLog
from tests.audit.helpers import body, file_cfg


async def main(path: str, concurrency: int, key: str | None) -> None:
    log = AuditLog(file_cfg(Path(path), signing_key=key, rotate_bytes=256 * 1024), replica="gk-0")
    await log.start()
    os.write(1, b"started\n")

    async def worker(w: int) -> None:
        i = 0
        while True:
            i += 1
            b = body(w * 1_000_000 + i)
            b["padding"] = "x" * (w * 97 % 3000)  # uneven sizes: writes cross page boundaries
            rec = await log.append(b)
            os.write(1, f"{rec['seq']} {rec['hash']}\n".encode())

    await asyncio.gather(*(worker(w) for w in range(concurrency)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
