"""Offline verification of audit files (``gatekeeper audit verify``) and the tail check at start.

For each chain (rotated segments of one live file, taken in chain order, see ``files``) every line
must be the canonical JSON of its record, every ``hash`` must recompute, every ``prev_hash`` must be
the previous record's ``hash`` and ``seq`` must count up by one from 1 (first ``prev_hash`` =
``ZERO_HASH``). Each seal must name the chain head at its position. With a public key every seal's
signature is checked and records after the last seal are reported as unsealed.

Lines that are not JSON objects are *torn* writes (a crash or a full disk in the middle of a
write). A torn **last** line is reported (``torn_tail``; ``ok`` is false until the gate has
resumed and appended after it). A torn line inside the chain is listed in ``torn_lines`` and is
harmless on its own: the chain must still link the records on either side of it, so a record
that was turned into garbage shows up as a broken link at the next record.

Breaks: when the gate starts on a chain that does not verify, it moves the chain aside
(``audit.jsonl.broken-<time>``) and starts a new one whose first record is a ``chain-break``
naming it, with the seq and hash of the old chain's last verifiable record (``notes.py``). A
chain that fails here but is named by such a record, and ends (as far as it verifies) exactly
where the record says, is reported in ``breaks`` ("chain restarted after break") and does not
fail the verification: the failure was seen, kept and recorded by the gate. ``commit-failed``
records (requests refused without being forwarded after a failed commit) are counted in
``unforwarded``.

What no local check can catch is a file truncated together with its last seals; the Redis stream
sink, which carries the seals off-host, is the anchor for that.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gatekeeper.audit.files import order_paths, split_segment
from gatekeeper.audit.record import ZERO_HASH, canonical, chain_hash
from gatekeeper.audit.seal import check_seal, load_public_key


@dataclass(slots=True)
class VerifyReport:
    """What ``verify_files`` found. ``ok`` is the exit status of ``audit verify``."""

    ok: bool = True
    records: int = 0
    seals: int = 0
    first_error: str | None = None  # "file:line: message"
    unsealed_after: int | None = None  # with a key: seq of the last sealed record, if any follow
    unsealed: int = 0  # how many records follow the last seal
    torn_tail: bool = False
    torn_lines: list[str] = field(default_factory=list)  # "file:line" of torn lines mid-chain
    chains: int = 0
    last_seq: int = 0
    head: str = ZERO_HASH
    breaks: list[str] = field(default_factory=list)  # explained breaks, one line each
    unforwarded: int = 0  # requests named by commit-failed records
    restarts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # chain-break recs
    _tail_only: bool = False  # first_error is only about a torn or unsealed tail

    @property
    def intact(self) -> bool:
        """No edited, missing, reordered or forged line (a torn tail or unsealed tail aside)."""
        return self.first_error is None or self._tail_only

    def summary(self) -> str:
        if self.ok:
            text = f"ok: {self.records} records, {self.seals} seals, {self.chains} chain(s)"
            return text + (f", {len(self.breaks)} break(s)" if self.breaks else "")
        return f"FAILED: {self.first_error}"


class TailError(ValueError):
    """The tail of an existing audit file does not verify ("file:line: message")."""


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # hostile nesting
        return None
    return obj if isinstance(obj, dict) else None


def _check_record(obj: dict[str, Any], raw: bytes) -> str | None:
    """Self-contained checks of one record line; the message, or None if it is fine."""
    if obj.get("v") != 1:
        return f"unsupported record version {obj.get('v')!r}"
    h, prev, seq = obj.get("hash"), obj.get("prev_hash"), obj.get("seq")
    if not isinstance(h, str) or not isinstance(prev, str) or not prev.isascii():
        return "record without hash/prev_hash"
    if not isinstance(seq, int) or isinstance(seq, bool):
        return "record without an integer seq"
    try:
        if canonical(obj) != raw:
            return "line is not canonical JSON (edited by hand?)"
        body = {k: v for k, v in obj.items() if k != "hash"}
        if chain_hash(prev, body) != h:
            return f"hash mismatch at seq {seq}: record edited"
    except (TypeError, ValueError):
        return "record cannot be canonicalised"
    return None


class _Chain:
    """Verification state of one chain."""

    def __init__(self, report: VerifyReport, pub: Ed25519PublicKey | None, partial: bool) -> None:
        self.r = report
        self.pub = pub
        self.partial = partial
        self.head: str | None = None  # None: no record yet
        self.seq = 0
        self.last_sealed = 0
        self.pending_torn: str | None = None

    def fail(self, where: str, msg: str) -> None:
        self.r.first_error = f"{where}: {msg}"
        self.r.ok = False
        self.r.last_seq = self.seq  # the last record that verifies
        self.r.head = self.head or ZERO_HASH

    def line(self, where: str, raw: bytes) -> bool:
        """Process one line (without its newline); False stops the verification."""
        obj = _parse(raw)
        if obj is None:
            if self.pending_torn is not None:
                self.r.torn_lines.append(self.pending_torn)
            self.pending_torn = where
            return True
        if self.pending_torn is not None:
            self.r.torn_lines.append(self.pending_torn)
            self.pending_torn = None
        if obj.get("type") == "seal":
            return self.seal(where, obj)
        problem = _check_record(obj, raw)
        if problem:
            self.fail(where, problem)
            return False
        seq, prev = obj["seq"], obj["prev_hash"]
        if self.head is None:
            if not (seq == 1 and prev == ZERO_HASH) and not self.partial:
                self.fail(
                    where, f"chain starts at seq {seq}, not 1: earlier files or records missing"
                )
                return False
        elif prev != self.head:
            self.fail(
                where,
                f"prev_hash of seq {seq} does not match the record before it "
                f"(seq {self.seq}): records deleted, inserted or reordered",
            )
            return False
        elif seq != self.seq + 1:
            self.fail(where, f"seq {seq} follows seq {self.seq}: records deleted or reordered")
            return False
        self.head, self.seq = obj["hash"], seq
        self.r.records += 1
        kind = obj.get("type")
        if kind == "chain-break" and seq == 1:
            self.r.restarts.append((where, obj))
        elif kind == "commit-failed" and isinstance(obj.get("unforwarded_count"), int):
            self.r.unforwarded += obj["unforwarded_count"]
        return True

    def seal(self, where: str, obj: dict[str, Any]) -> bool:
        if obj.get("v") != 1 or obj.get("seq") != self.seq or obj.get("hash") != self.head:
            self.fail(where, f"seal for seq {obj.get('seq')!r} does not match the chain head")
            return False
        if self.pub is not None and not check_seal(self.pub, obj):
            self.fail(where, f"seal for seq {self.seq} has an invalid signature (forged)")
            return False
        self.r.seals += 1
        self.last_sealed = self.seq
        return True

    def finish(self, last_where: str | None) -> None:
        r = self.r
        if self.pending_torn is not None:
            r.torn_tail = True
            if r.first_error is None:
                r.first_error = f"{self.pending_torn}: torn last line (incomplete write)"
                r.ok = False
                r._tail_only = True
        if self.pub is not None and self.seq > self.last_sealed:
            r.unsealed_after = self.last_sealed
            r.unsealed += self.seq - self.last_sealed
            if r.first_error is None:
                r.first_error = (
                    f"{last_where}: {self.seq - self.last_sealed} record(s) after seq "
                    f"{self.last_sealed} are not sealed (appended or rewritten tail?)"
                )
                r.ok = False
                r._tail_only = True
        r.last_seq = self.seq
        r.head = self.head or ZERO_HASH


def verify_files(
    paths: Sequence[str], public_key: str | None = None, *, allow_partial: bool = False
) -> VerifyReport:
    """Verify audit files; rotated segments are put in chain order, one chain per live file.

    ``public_key``: PEM file of the Ed25519 key (public or private) that signed the seals.
    ``allow_partial``: accept a chain that starts after seq 1 (older segments archived elsewhere).
    """
    report = VerifyReport()
    pub = load_public_key(public_key) if public_key else None
    failed: list[tuple[list[str], VerifyReport]] = []
    for group in order_paths(paths):
        one = _verify_chain(group, pub, allow_partial)
        report.chains += 1
        report.records += one.records
        report.seals += one.seals
        report.unsealed += one.unsealed
        report.unforwarded += one.unforwarded
        report.torn_lines += one.torn_lines
        report.torn_tail = report.torn_tail or one.torn_tail
        report.restarts += one.restarts
        if one.unsealed_after is not None:
            report.unsealed_after = one.unsealed_after
        report.last_seq, report.head = one.last_seq, one.head
        if not one.ok:
            failed.append((group, one))
    restarts = {str(rec.get("moved_to")): (where, rec) for where, rec in report.restarts}
    for group, one in failed:
        name = split_segment(os.path.basename(group[-1]))[0]
        where, rec = restarts.pop(name, (None, None))
        if rec is not None and (rec.get("last_seq"), rec.get("last_hash")) == (
            one.last_seq,
            one.head,
        ):
            report.breaks.append(
                f"chain restarted after break: {name} verifies up to seq {one.last_seq}, then "
                f"{one.first_error}; the new chain starts at {where}"
            )
            continue
        if report.ok:
            report.ok, report.first_error, report._tail_only = (
                False,
                one.first_error,
                one._tail_only,
            )
    for where, rec in restarts.values():
        report.breaks.append(
            f"chain restarted after break at {where}: {rec.get('moved_to')} (not checked here) "
            f"verified up to seq {rec.get('last_seq')}, then {rec.get('error')}"
        )
    return report


def _verify_chain(group: list[str], pub: Ed25519PublicKey | None, partial: bool) -> VerifyReport:
    """One chain (its files in chain order) on its own report."""
    report = VerifyReport(chains=1)
    chain = _Chain(report, pub, partial)
    last_where: str | None = None
    for path in group:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below; streaming line by line
        except OSError as exc:
            chain.fail(path, f"cannot read: {exc.strerror}")
            return report
        with f:
            for lineno, line in enumerate(f, 1):
                where = f"{path}:{lineno}"
                raw = line[:-1] if line.endswith(b"\n") else line
                if not chain.line(where, raw):
                    return report
                last_where = where
    chain.finish(last_where)
    return report


# ----------------------------------------------------------------------------- tail at start


@dataclass(slots=True)
class ChainTail:
    """Where an existing chain stands: the last record, and what the end of the file looks like."""

    seq: int = 0
    head: str = ZERO_HASH
    path: str | None = None  # file holding the last record
    torn: str | None = None  # "file:line" of a torn last line
    needs_newline: bool = False  # the newest file ends without "\n"
    checked: int = 0  # records re-verified at the tail
    unsealed: int = 0  # complete records after the last seal seen in the tail window


def _lines_before(path: str, offset: int) -> int:
    n = 0
    with open(path, "rb") as f:
        left = offset
        while left > 0:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            n += block.count(b"\n")
            left -= len(block)
    return n


def read_tail(paths: Sequence[str], *, window: int = 1 << 20) -> ChainTail:
    """The chain state at the end of ``paths`` (chain order); re-verifies the last ``window`` bytes.

    Raises ``TailError`` when a record in that window was edited or the links between them break.
    """
    tail = ChainTail()
    newest = True  # the newest non-empty file decides whether the chain ends torn
    for index in range(len(paths) - 1, -1, -1):
        path = paths[index]
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            continue
        if size == 0:
            continue
        start = max(0, size - window)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(size - start)
        first_line = _lines_before(path, start) + 1 if start else 1
        pieces = data.split(b"\n")
        if start:  # the first piece is the end of a line that began before the window
            pieces = pieces[1:]
            first_line += 1
        last_piece = pieces.pop()  # b"" when the file ends with "\n"
        records: list[tuple[int, dict[str, Any]]] = []
        torn_at: int | None = None
        sealed_at = 0
        for i, raw in enumerate([*pieces, last_piece] if last_piece else pieces):
            obj = _parse(raw)
            lineno = first_line + i
            if obj is None:
                torn_at = lineno
                continue
            torn_at = None
            if obj.get("type") == "seal":
                sealed_at = len(records)
                continue
            problem = _check_record(obj, raw)
            if problem:
                raise TailError(f"{path}:{lineno}: {problem}")
            if records:
                prev_line, prev = records[-1]
                if obj["prev_hash"] != prev["hash"] or obj["seq"] != prev["seq"] + 1:
                    msg = f"seq {obj['seq']} does not follow seq {prev['seq']} (line {prev_line})"
                    raise TailError(f"{path}:{lineno}: {msg}")
            records.append((lineno, obj))
        if newest:
            newest = False
            tail.needs_newline = bool(last_piece)
            if torn_at is not None:
                tail.torn = f"{path}:{torn_at}"
        if records:
            last = records[-1][1]
            tail.seq, tail.head, tail.path = last["seq"], last["hash"], path
            tail.checked = len(records)
            tail.unsealed = len(records) - sealed_at
            return tail
    return tail
