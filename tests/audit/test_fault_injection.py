"""Fault injection at every step of a group commit, across seeds, one and two commits in flight.

A real ``AuditLog`` with seals writes to a real ``FileSink`` on a real file; only the sink's
``DiskOps`` (its write, fsync and ftruncate) and the sealer fail, at random but from a seed:
ENOSPC and EIO from a write, a short write (half the bytes really written) that the next call
completes or that is followed by ENOSPC, EIO and ENOSPC from an fsync (also the fsync of a
rotation, and of a cut), a cut that fails, the sink's thread dying inside a write or an fsync,
slow fsyncs (so that a second commit is chained and queued behind the first), and a seal that
cannot be made. Concurrent appends and outcome lines run through it, with rotation.

After every sequence the real verifier (with the public key) passes on the real files, every
acknowledged record is in them exactly as acknowledged, no refused request has a decision
record, every refused request is named by a ``commit-failed`` record, and every outcome line
is either written or named as lost.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.audit import files
from gatekeeper.audit.log import AuditLog
from gatekeeper.audit.record import outcome_body
from gatekeeper.audit.seal import Sealer, load_private_key
from gatekeeper.audit.sinks import DiskOps, FileSink
from gatekeeper.audit.verify import verify_files
from gatekeeper.errors import DependencyError
from tests.audit.disks import ThreadDeath
from tests.audit.helpers import body, file_cfg, make_keys

SEEDS = 40
ROUNDS = 25
TOTALS: Counter[str] = Counter()


class FaultyDisk(DiskOps):
    """Real system calls, some of which fail (module docstring); ``on`` switches faults."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng = rng
        self.rate = rate
        self.on = True
        self.counts: Counter[str] = Counter()
        self._enospc_next = False

    def _pick(self, *kinds: str) -> str | None:
        if not self.on or self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(kinds)
        self.counts[kind] += 1
        return kind

    def write(self, fd: int, data: memoryview) -> int:
        if self._enospc_next:
            self._enospc_next = False
            raise OSError(errno.ENOSPC, "No space left on device")
        kind = self._pick("write-enospc", "write-eio", "short-write", "short-enospc", "death")
        if kind == "write-enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        if kind == "write-eio":
            raise OSError(errno.EIO, "Input/output error")
        if kind == "death":
            raise ThreadDeath
        if kind in ("short-write", "short-enospc") and len(data) > 1:
            self._enospc_next = kind == "short-enospc"
            return os.write(fd, data[: len(data) // 2])
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.on and self.rng.random() < 0.3:
            time.sleep(self.rng.uniform(0, 0.003))  # a slow disk: the next commit queues
        kind = self._pick("fsync-eio", "fsync-enospc", "death")
        if kind == "fsync-eio":
            raise OSError(errno.EIO, "Input/output error")
        if kind == "fsync-enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        if kind == "death":
            raise ThreadDeath
        os.fsync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        if self._pick("cut-eio"):
            raise OSError(errno.EIO, "Input/output error")
        os.ftruncate(fd, size)


class FaultySealer(Sealer):
    """A sealer that sometimes cannot seal (the batch must fail, nothing of it written)."""

    def __init__(self, key_path: str, rng: random.Random, rate: float, counts: Counter[str]):
        super().__init__(load_private_key(key_path), "gk-0")
        self.rng, self.rate, self.counts, self.on = rng, rate, counts, True

    def seal(self, seq: int, head: str, ts: str) -> dict[str, Any]:
        if self.on and self.rng.random() < self.rate:
            self.counts["seal"] += 1
            raise RuntimeError("signing failed")
        return super().seal(seq, head, ts)


class CountingSink(FileSink):
    """Counts the batches handed to the file at once (two when two commits are in flight)."""

    def __init__(self, *args: Any, counts: Counter[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts = counts
        self.in_flight = 0

    async def write(self, lines: Sequence[bytes]) -> None:
        self.in_flight += 1
        if self.in_flight > 1:
            self.counts["two-in-flight"] += 1
        try:
            await super().write(lines)
        finally:
            self.in_flight -= 1


async def _sequence(folder: Path, seed: int, depth: int, keys: tuple[str, str]) -> Counter[str]:
    rng = random.Random(seed)
    path = folder / f"audit-{seed}-{depth}.jsonl"
    disk = FaultyDisk(random.Random(seed * 7919 + depth), rate=rng.choice((0.03, 0.08, 0.2)))
    sealer = FaultySealer(keys[0], random.Random(seed + 1), 0.04, disk.counts)
    rotate = rng.choice((4_000, 20_000, 10**8))
    sink = CountingSink(str(path), rotate_bytes=rotate, ops=disk, counts=disk.counts)
    cfg = file_cfg(path, rotate_bytes=rotate, signing_key=keys[0])
    log = AuditLog(cfg, replica="gk-0", sinks=[sink], sealer=sealer, depth=depth)
    await log.start()
    acked: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    outcomes: list[str] = []
    n = 0
    for _ in range(ROUNDS):
        ids = [f"s{seed}-{n + i}" for i in range(rng.randint(1, 12))]
        n += len(ids)
        bodies = []
        for did in ids:
            b = body(0)
            b["decision_id"] = did
            bodies.append(b)
        # In two waves: the second arrives while the first batch is on its way to the disk.
        split = rng.randint(0, len(bodies))
        first = [asyncio.ensure_future(log.append(b)) for b in bodies[:split]]
        for _ in range(rng.randint(0, 8)):
            await asyncio.sleep(0)
        second = [asyncio.ensure_future(log.append(b)) for b in bodies[split:]]
        results = await asyncio.gather(*first, *second, return_exceptions=True)
        for did, res in zip(ids, results, strict=True):
            if isinstance(res, DependencyError):
                assert res.reason == "audit-unavailable"
                refused.append(did)
            else:
                assert isinstance(res, dict), res
                acked[did] = dict(res)
                if rng.random() < 0.5:  # forwarded: its outcome line follows, unawaited
                    log.append_nowait(outcome_body(did, 200, 200, 1.0, False))
                    outcomes.append(did)
        if rng.random() < 0.3:
            await asyncio.sleep(rng.uniform(0, 0.01))  # lazy commits of outcome lines alone
    disk.on = sealer.on = False
    # The disk is back: the next commit that succeeds writes what the failed ones left to say.
    # (A commit still in flight may have failed just before; a record chained behind it fails
    # with it, so the first one or two may still be refused.)
    for attempt in range(5):
        last = body(0)
        last["decision_id"] = f"s{seed}-last{attempt}"
        try:
            acked[last["decision_id"]] = dict(await log.append(last))
            break
        except DependencyError:
            refused.append(last["decision_id"])
    else:
        raise AssertionError("the log did not come back once the faults stopped")
    await log.close()
    _check(path, keys[1], acked, refused, outcomes)
    disk.counts["sequences"] += 1
    disk.counts["acked"] += len(acked)
    disk.counts["refused"] += len(refused)
    return disk.counts


def _check(
    path: Path,
    public_key: str,
    acked: dict[str, dict[str, Any]],
    refused: list[str],
    outcomes: list[str],
) -> None:
    chain = files.chain_files(str(path))
    report = verify_files(chain, public_key=public_key)
    assert report.ok, report.first_error
    assert not report.torn_lines and report.unsealed == 0
    records = [
        json.loads(raw)
        for p in chain
        for raw in Path(p).read_bytes().splitlines()
        if b'"type":"seal"' not in raw
    ]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    decisions = {r["decision_id"]: r for r in records if r.get("type") is None}
    assert len(decisions) == sum(1 for r in records if r.get("type") is None)  # none twice
    # Every acknowledged record is on disk exactly as acknowledged; no refused one is.
    for did, rec in acked.items():
        assert decisions.get(did) == rec, did
    assert set(decisions) == set(acked)
    notes = [r for r in records if r.get("type") == "commit-failed"]
    named = [i for note in notes for i in note["unforwarded"]]
    assert sum(note["unforwarded_count"] for note in notes) == len(refused)
    assert sorted(named) == sorted(refused)
    written = {r["decision_id"] for r in records if r.get("type") == "outcome"}
    lost = {i for note in notes for i in note["outcomes_lost"]}
    assert set(outcomes) == written | lost and not written & lost
    assert report.unforwarded == len(refused)


@pytest.mark.parametrize("depth", [1, 2])
async def test_commit_faults_never_break_the_chain(tmp_path: Path, depth: int) -> None:
    keys = make_keys(tmp_path)
    totals: Counter[str] = Counter()
    for seed in range(SEEDS):
        totals += await _sequence(tmp_path, seed, depth, keys)
    TOTALS.update(totals)
    tallies = ("sequences", "acked", "refused", "two-in-flight")
    faults = {k: v for k, v in totals.items() if k not in tallies}
    print(f"\nfault injection, {depth} commit(s) in flight: {dict(totals)}")
    assert totals["sequences"] == SEEDS
    # The plan really exercised every kind of fault and both outcomes.
    for kind in (
        "write-enospc", "write-eio", "short-write", "short-enospc", "death",
        "fsync-eio", "fsync-enospc", "cut-eio", "seal",
    ):  # fmt: skip
        assert faults.get(kind, 0) > 0, kind
    assert totals["acked"] > 0 and totals["refused"] > 0
    # With two in flight, a batch really was handed to the file while another was on its way.
    assert (totals["two-in-flight"] > 0) == (depth == 2)
