"""Numbering, chaining and sealing one group commit (``AuditLog``'s hot path).

Every record of a batch gets ``v``, ``seq``, ``ts``, ``replica``, ``prev_hash`` and ``hash``
(``record.py`` defines the hash); a seal of the batch's last record ends the batch when a signing
key is configured. Nothing here touches the log's state: the writer moves its tip only once the
whole batch is chained.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gatekeeper.audit.record import RECORD_VERSION, RecordBody, canonical, chain_hash, scrub
from gatekeeper.audit.seal import Sealer

# A record body, its time stamp, and the future of the append waiting for it (None: nobody waits).
Pending = tuple[dict[str, Any], str, "asyncio.Future[dict[str, Any]] | None"]
# A chained batch: its lines, its records, and the new tip (seq, hash).
Chained = tuple[list[bytes], list[dict[str, Any]], int, str]

_ts_sec = -1
_ts_prefix = ""


def utc_ts(t: float | None = None) -> str:
    """``2026-11-25T20:01:02.345678Z`` (the formatted second is cached: strftime is slow)."""
    global _ts_sec, _ts_prefix
    now = time.time() if t is None else t
    sec = int(now)
    if sec != _ts_sec:
        _ts_prefix = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _ts_sec = sec
    return f"{_ts_prefix}{int((now - sec) * 1e6):06d}Z"


# The chain leaves a hole for each record's own hash: ``"hash":"\x7f"`` sorts in place, and
# the canonical form without "hash" is the serialisation minus that member ("prev_hash" always
# sorts after "hash", so a comma follows it). DEL is the one character JSON writes raw that
# records practically never hold, so one memchr finds the hole; a record holding it anywhere
# else takes the plain path (two serialisations), never a wrong splice.
_HOLE = "\x7f"
_HOLE_MEMBER = b'"hash":"\x7f",'
_BEFORE_HOLE = len(b'"hash":"')
_AFTER_HOLE = len(b'",')
# A fresh hasher is a copy of this one: creating one from the name costs a look-up of the
# algorithm in OpenSSL's provider tables each time, copying one does not.
_SHA256 = hashlib.sha256()


def chain_batch(
    batch: Sequence[Pending], seq: int, head: str, replica: str, sealer: Sealer | None
) -> Chained:
    """Number and chain ``batch`` behind (``seq``, ``head``); its lines (a seal last when
    ``sealer``), records, and the new tip."""
    prev = head.encode("ascii")
    lines: list[bytes] = []
    records: list[dict[str, Any]] = []
    for body, ts, _ in batch:
        seq += 1
        checked = body.__class__ is RecordBody
        if checked:
            # record_body's own fresh dict, handed to the log by append(): completed in place.
            rec: dict[str, Any] = body
            rec["v"] = RECORD_VERSION
            rec["seq"] = seq
            rec["ts"] = ts
            rec["replica"] = replica
            rec["prev_hash"] = head
            rec["hash"] = _HOLE
        else:
            rec = {
                **body,
                "v": RECORD_VERSION,
                "seq": seq,
                "ts": ts,
                "replica": replica,
                "prev_hash": head,
                "hash": _HOLE,
            }
        try:
            template = canonical(rec, checked=checked)
        except (TypeError, ValueError):  # lone surrogates, NaN, odd types: keep the record
            rec = scrub(rec)
            template = canonical(rec)
        # One serialisation instead of two: cut the hole member out for the hash, fill it in
        # for the line (see _HOLE). The hole must be the only DEL byte in the record.
        i = template.find(b"\x7f")
        start = i - _BEFORE_HOLE
        end = i + 1 + _AFTER_HOLE
        if (
            start > 0
            and template.startswith(_HOLE_MEMBER, start)
            and template.find(b"\x7f", end) < 0
        ):
            before = template[:start]
            after = template[end:]
            h = _SHA256.copy()
            h.update(prev)
            h.update(before)
            h.update(after)
            prev = b"sha256:" + h.hexdigest().encode("ascii")
            lines.append(b"".join((before, b'"hash":"', prev, b'",', after, b"\n")))
            head = prev.decode("ascii")
        else:  # DEL elsewhere in the record: hash and serialise it the plain way
            del rec["hash"]
            head = chain_hash(head, rec)
            rec["hash"] = head
            lines.append(canonical(rec) + b"\n")
            prev = head.encode("ascii")
        rec["hash"] = head
        records.append(rec)
    if sealer is not None:
        lines.append(canonical(sealer.seal(seq, head, utc_ts())) + b"\n")
    return lines, records, seq, head
