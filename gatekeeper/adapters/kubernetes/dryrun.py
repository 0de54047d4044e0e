"""``?dryRun=All``: a Kubernetes write the API server decides on but does not store.

The API server reads the query as Go's ``net/url`` does (pairs split at ``&``; a pair holding a
``;`` or an invalid ``%`` escape is dropped; ``+`` is a space) and treats a write as a dry run
when ``dryRun`` has any value; every value must be ``All``, anything else is refused with 422
(``Invalid``, nothing stored). The gate reads the query the same way and calls a write a dry run
only when ``dryRun`` is present and every value is exactly ``All``: then the API server persists
nothing either. Any other ``dryRun`` is decided and charged as a real write; the API server
refuses it and the charge is given back with every other refused write.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

DRY_RUN_ALL = "All"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _unescape(text: str) -> str | None:
    """Go's ``QueryUnescape``: ``None`` for an invalid escape (the API server drops the pair)."""
    if _BAD_ESCAPE.search(text):
        return None
    return unquote_plus(text, errors="replace")


def dry_run_values(query: str) -> list[str]:
    """The ``dryRun`` values of a query string (with or without its leading ``?``)."""
    if "dryRun" not in query and "%" not in query:
        return []  # the common case: no name that could decode to dryRun
    out: list[str] = []
    for pair in query.removeprefix("?").split("&"):
        if not pair or ";" in pair:
            continue
        raw_key, _, raw_value = pair.partition("=")
        key = _unescape(raw_key)
        value = _unescape(raw_value)
        if key == "dryRun" and value is not None:
            out.append(value)
    return out


def is_dry_run(query: str) -> bool:
    """Whether the API server stores nothing for a write with this query (see module docstring)."""
    values = dry_run_values(query)
    return bool(values) and all(v == DRY_RUN_ALL for v in values)


__all__ = ["DRY_RUN_ALL", "dry_run_values", "is_dry_run"]
