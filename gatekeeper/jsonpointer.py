"""RFC 6901 JSON pointers: parse one, and look one up in a parsed JSON document.

Used by the generic adapter (the measured fields of a request body) and by the config loader
(which refuses a malformed pointer at start-up, naming the key).
"""

from __future__ import annotations

from typing import Any

# What ``resolve_pointer`` returns for a pointer that names nothing in the document (``None`` is
# a JSON value: ``null``).
MISSING: Any = object()


class PointerError(ValueError):
    """A JSON pointer that is not valid RFC 6901 syntax (a configuration error)."""


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901 reference tokens of ``pointer`` (``""`` is the whole document)."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise PointerError(f"JSON pointer {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for tok in tokens:
        rest = tok.replace("~0", "").replace("~1", "")
        if "~" in rest:
            raise PointerError(f"JSON pointer {pointer!r}: '~' must be followed by 0 or 1")
    # ~1 first, then ~0 (RFC 6901 §4), so "~01" becomes "~1", not "/".
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def resolve_pointer(doc: Any, tokens: tuple[str, ...]) -> Any:
    """The value at ``tokens`` in ``doc``, or ``MISSING``."""
    node = doc
    for tok in tokens:
        if isinstance(node, dict):
            if tok not in node:
                return MISSING
            node = node[tok]
        elif isinstance(node, list):
            if not tok.isdigit() or (len(tok) > 1 and tok[0] == "0") or not tok.isascii():
                return MISSING
            idx = int(tok)
            if idx >= len(node):
                return MISSING
            node = node[idx]
        else:
            return MISSING
    return node
