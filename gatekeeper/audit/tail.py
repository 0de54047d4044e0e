"""``gatekeeper audit tail``: follow the audit file or Redis stream, one line per record.

A person reads::

    2026-11-25T20:01:02.345Z  deny             listed-affiliate   tenant=acme entity=acme-sg
        POST slurm-submit /slurm/v0.0.41/job/submit -> 451  01J...

(on one line), a machine passes ``as_json=True`` and gets the records verbatim. Seals are not
printed. Filters: ``action`` (the decision's action, or ``error`` for requests answered before a
decision, e.g. 401/503; ``unforwarded`` for the log's ``commit-failed`` records, which name
requests answered 503 whose records a failed commit could not keep; ``chain-break`` for the
first record of a chain started beside one that did not verify) and ``tenant``. A file is
followed across rotation (the live file is reopened when it is renamed or replaced);
``follow=False`` prints what exists and returns.
Untrusted text from records is stripped of control characters before it reaches a terminal.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any, TextIO

_CTRL = {c: None for c in range(32)} | {127: None}


def _clean(value: Any) -> str:
    # SECURITY: record fields come from clients (path, subject); no terminal escape sequences.
    return "-" if value is None else str(value).translate(_CTRL)


def action_of(rec: dict[str, Any]) -> str:
    kind = rec.get("type")
    if kind == "outcome":
        return "outcome"  # what the upstream answered to an earlier, forwarded decision
    if kind == "screening":
        return "screening"  # an entity a reload of entity data changed (re-screening)
    if kind == "commit-failed":
        return "unforwarded"  # requests refused (503) because their records could not be kept
    if kind == "chain-break":
        return "chain-break"  # the gate started a new chain beside one that did not verify
    decision = rec.get("decision")
    if isinstance(decision, dict) and decision.get("action"):
        return str(decision["action"])
    return "error"


def format_record(rec: dict[str, Any]) -> str:
    """One human-readable line: time, action, rule, tenant, entity, method, route, path, status."""
    http = rec.get("http") if isinstance(rec.get("http"), dict) else {}
    principal = rec.get("principal") if isinstance(rec.get("principal"), dict) else {}
    decision = rec.get("decision") if isinstance(rec.get("decision"), dict) else {}
    assert isinstance(http, dict) and isinstance(principal, dict) and isinstance(decision, dict)
    ts = _clean(rec.get("ts"))
    if len(ts) == 27 and ts.endswith("Z"):
        ts = ts[:23] + "Z"  # milliseconds are enough for a person
    action = action_of(rec)
    if action == "outcome":
        return (
            f"{ts}  {'outcome':<16} {'-':<20} upstream={_clean(http.get('upstream_status'))} "
            f"-> {_clean(http.get('status'))} in {_clean(http.get('latency_ms'))} ms  "
            f"{_clean(rec.get('decision_id'))}"
        )
    if action == "screening":
        changes = rec.get("changes")
        what = ",".join(map(_clean, changes)) if isinstance(changes, list) else "-"
        return f"{ts}  {'screening':<16} {what:<20} entity={_clean(rec.get('entity'))}"
    if action == "unforwarded":
        ids = rec.get("unforwarded") if isinstance(rec.get("unforwarded"), list) else []
        assert isinstance(ids, list)
        return (
            f"{ts}  {'unforwarded':<16} {_clean(rec.get('unforwarded_count'))} request(s) "
            f"answered 503, not forwarded, records not kept ({_clean(rec.get('detail'))}): "
            f"{_clean(' '.join(str(i) for i in ids[:20]))}"
            f"{' ...' if len(ids) > 20 else ''}; outcome lines lost: "
            f"{_clean(rec.get('outcomes_lost_count'))}"
        )
    if action == "chain-break":
        return (
            f"{ts}  {'chain-break':<16} previous chain moved to {_clean(rec.get('moved_to'))}, "
            f"verified up to seq {_clean(rec.get('last_seq'))}: {_clean(rec.get('error'))}"
        )
    if decision and decision.get("enforced") is False:
        action += "(monitor)"
    return (
        f"{ts}  {_clean(action):<16} {_clean(decision.get('rule')):<20} "
        f"tenant={_clean(principal.get('tenant'))} entity={_clean(principal.get('entity'))}  "
        f"{_clean(http.get('method'))} {_clean(http.get('route'))} {_clean(http.get('path'))} "
        f"-> {_clean(http.get('status') or 'forwarded')}  {_clean(rec.get('decision_id'))}"
    )


def matches(rec: dict[str, Any], action: str | None, tenant: str | None) -> bool:
    if rec.get("type") == "seal" or "seq" not in rec:
        return False
    if action is not None and action_of(rec) != action:
        return False
    if tenant is not None:
        principal = rec.get("principal")
        if not isinstance(principal, dict) or principal.get("tenant") != tenant:
            return False
    return True


def _emit(raw: bytes, action: str | None, tenant: str | None, as_json: bool, out: TextIO) -> None:
    try:
        rec = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # hostile nesting
        return  # a torn line
    if not isinstance(rec, dict) or not matches(rec, action, tenant):
        return
    out.write(raw.decode("utf-8").rstrip("\n") if as_json else format_record(rec))
    out.write("\n")
    out.flush()


async def _tail_file(
    path: str,
    action: str | None,
    tenant: str | None,
    as_json: bool,
    follow: bool,
    out: TextIO,
    poll_s: float,
) -> None:
    f = None
    ino = None
    buf = b""
    try:
        while True:
            if f is None:
                try:
                    f = open(path, "rb")  # noqa: SIM115 - reopened on rotation
                    ino = os.fstat(f.fileno()).st_ino
                    buf = b""
                except FileNotFoundError:
                    if not follow:
                        return
                    await asyncio.sleep(poll_s)
                    continue
            chunk = f.read(1 << 16)
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    _emit(raw, action, tenant, as_json, out)
                continue
            if not follow:
                return
            try:
                st = os.stat(path)
                rotated = st.st_ino != ino or st.st_size < f.tell()
            except FileNotFoundError:
                rotated = False  # between rename and re-create; look again shortly
            if rotated:
                rest = f.read()  # whatever the old file got before it was renamed
                for raw in (buf + rest).split(b"\n"):
                    if raw:
                        _emit(raw, action, tenant, as_json, out)
                f.close()
                f = None
                continue
            await asyncio.sleep(poll_s)
    finally:
        if f is not None:
            f.close()


async def _tail_stream(
    url: str,
    stream: str,
    action: str | None,
    tenant: str | None,
    as_json: bool,
    follow: bool,
    out: TextIO,
) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        last = "0-0"
        while True:
            block = 1000 if follow else None
            resp: Any = await client.xread({stream: last}, count=1000, block=block)
            if not resp:
                if not follow:
                    return
                continue
            for _name, entries in resp:
                for entry_id, fields in entries:
                    last = entry_id
                    raw = fields.get(b"data")
                    if raw is not None:
                        _emit(raw, action, tenant, as_json, out)
    finally:
        await client.aclose()


async def tail(
    source: str | tuple[str, str],
    *,
    action: str | None = None,
    tenant: str | None = None,
    as_json: bool = False,
    follow: bool = True,
    out: TextIO = sys.stdout,
    poll_s: float = 0.25,
) -> None:
    """Print matching records of a file or a ``(redis_url, stream)``, from the start.

    With ``follow`` it keeps waiting for new records until cancelled.
    """
    if isinstance(source, tuple):
        url, stream = source
        await _tail_stream(url, stream, action, tenant, as_json, follow, out)
    else:
        await _tail_file(source, action, tenant, as_json, follow, out, poll_s)
