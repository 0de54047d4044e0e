"""Disks for the audit tests: ``DiskOps`` whose fsync can be held, slowed or made to fail.

They sit in the real seam of ``FileSink`` (its ``ops``): the file is really written, fsynced and
cut; only the timing or the outcome of a call is chosen by the test.
"""

from __future__ import annotations

import threading
import time

from gatekeeper.audit.sinks import DiskOps


class ThreadDeath(BaseException):
    """Raised inside the sink's thread: the thread ends, as a thread killed mid-call would."""


class HeldDisk(DiskOps):
    """An fsync that waits while the disk is held; ``crash`` ends the waiting call's thread."""

    def __init__(self) -> None:
        self._go = threading.Event()
        self._go.set()
        self._crash = False
        self.syncs = 0

    def hold(self) -> None:
        self._go.clear()

    def release(self) -> None:
        self._go.set()

    def crash(self) -> None:
        self._crash = True
        self._go.set()

    def fsync(self, fd: int) -> None:
        self._go.wait(30)
        if self._crash:
            self._crash = False
            raise ThreadDeath
        super().fsync(fd)
        self.syncs += 1


class SlowDisk(DiskOps):
    """Every fsync takes at least ``pause_s`` (a slow disk), then really syncs."""

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s

    def fsync(self, fd: int) -> None:
        time.sleep(self.pause_s)
        super().fsync(fd)
