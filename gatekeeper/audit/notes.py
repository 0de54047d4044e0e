"""Records the audit log writes about itself: ``commit-failed`` and ``chain-break``.

``commit-failed``: a group commit that failed took its records with it (the file is cut back to
the last durable record). The requests that waited for those records were answered 503 without
being forwarded; outcome lines in the batch (of requests already forwarded) are lost. Their
decision ids are kept (``LostRecords``, at most ``MAX_IDS`` of each, the rest only counted) and
written as one record at the head of the next commit that succeeds::

    {"type":"commit-failed","detail":"...","unforwarded":["01J..."],"unforwarded_count":3,
     "outcomes_lost":[],"outcomes_lost_count":0, ...chain fields}

If that commit fails too, the note goes back and waits for the next one.

``chain-break``: an existing chain that does not verify when the gate starts (a disk incident, a
crash on a filesystem without data ordering, an edit) is moved aside untouched
(``move_aside``: ``audit.jsonl`` -> ``audit.jsonl.broken-<UTC time>``, its rotated segments
``audit.jsonl.<n>`` -> ``audit.jsonl.broken-<UTC time>.<n>``, so the old chain keeps its order),
and the new chain's first record (seq 1) names it::

    {"type":"chain-break","moved_to":"audit.jsonl.broken-20261207T060102Z","files":2,
     "error":"...","last_seq":230,"last_hash":"sha256:...", ...chain fields}

``last_seq``/``last_hash`` are those of the last record that verifies in the old chain (0 and
the zero hash if none does); ``audit verify`` given both chains checks them and reports the break
as a break (``verify.py``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from gatekeeper.audit import files
from gatekeeper.audit.verify import verify_files

COMMIT_FAILED = "commit-failed"
CHAIN_BREAK = "chain-break"
BROKEN_SUFFIX = ".broken-"
MAX_IDS = 1000


class LostRecords:
    """Decision ids of requests whose records a failed commit did not keep (module docstring)."""

    def __init__(self) -> None:
        self.unforwarded: list[str] = []
        self.unforwarded_count = 0
        self.outcomes: list[str] = []
        self.outcomes_count = 0
        self.detail = ""

    def __bool__(self) -> bool:
        return bool(self.unforwarded_count or self.outcomes_count)

    def add(self, decision_id: Any, *, answered: bool, detail: str) -> None:
        """One record of a failed batch: awaited (a request answered 503) or an outcome line."""
        ids = self.unforwarded if answered else self.outcomes
        if len(ids) < MAX_IDS:
            ids.append(str(decision_id))
        if answered:
            self.unforwarded_count += 1
        else:
            self.outcomes_count += 1
        self.detail = detail

    def merge(self, note: dict[str, Any]) -> None:
        """A ``commit-failed`` note whose own commit failed: its contents wait again."""
        room = MAX_IDS - len(self.unforwarded)
        self.unforwarded.extend(note["unforwarded"][: max(0, room)])
        self.unforwarded_count += note["unforwarded_count"]
        room = MAX_IDS - len(self.outcomes)
        self.outcomes.extend(note["outcomes_lost"][: max(0, room)])
        self.outcomes_count += note["outcomes_lost_count"]
        self.detail = self.detail or note["detail"]

    def take(self) -> dict[str, Any]:
        """The note for the next commit; what it holds is no longer kept here."""
        note = {
            "type": COMMIT_FAILED,
            "detail": self.detail,
            "unforwarded": self.unforwarded,
            "unforwarded_count": self.unforwarded_count,
            "outcomes_lost": self.outcomes,
            "outcomes_lost_count": self.outcomes_count,
        }
        self.__init__()  # type: ignore[misc]
        return note


def broken_name(live: str, now: float | None = None) -> str:
    """``audit.jsonl`` -> ``audit.jsonl.broken-20261207T060102Z`` (``-2``, ... if taken)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    name = f"{live}{BROKEN_SUFFIX}{stamp}"
    n = 1
    while os.path.exists(name) or files.segments(name):
        n += 1
        name = f"{live}{BROKEN_SUFFIX}{stamp}-{n}"
    return name


def move_aside(live: str, error: str) -> dict[str, Any]:
    """Rename the chain of ``live`` out of the way, untouched; the ``chain-break`` note.

    The caller holds the live file's lock (one writer per chain), so no other process moves it
    or writes to it meanwhile.
    """
    chain = files.chain_files(live)
    target = broken_name(live)
    moved: list[str] = []
    for path in chain:
        _, n = files.split_segment(path)
        dest = target if path == live else f"{target}.{n}"
        os.rename(path, dest)
        moved.append(dest)
    folder = os.path.dirname(live) or "."
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the renames are durable before the new chain says they happened
    finally:
        os.close(dfd)
    try:  # what still verifies, for the record; the move itself is done either way
        report = verify_files(moved, allow_partial=True) if moved else None
    except (OSError, ValueError):
        report = None
    return {
        "type": CHAIN_BREAK,
        "moved_to": os.path.basename(target),
        "files": len(moved),
        "error": (report.first_error if report else None) or error,
        "last_seq": report.last_seq if report else 0,
        "last_hash": report.head if report else "sha256:" + "0" * 64,
    }
