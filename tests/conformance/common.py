"""Helpers the conformance labs share: finding a lab's processes and reading a gate's audit log."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Self


def processes_with_env(name: str, value: str) -> list[int]:
    """Processes (other than this one) whose environment holds ``name=value``: a daemon's
    children inherit it, so a lab finds everything it started, and only that."""
    marker = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


class AuditTail:
    """Reads the decision records a gate appends to its audit file, from where it last stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def decisions(self) -> list[dict[str, Any]]:
        """Decision records (not outcome records) written since the last call."""
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        records = [json.loads(line) for line in data[:end].splitlines()]
        return [r for r in records if "decision" in r]


class Lab:
    """Daemons started together: ``start()`` runs ``_start()`` and, should that fail, stops
    whatever had come up before raising."""

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError
