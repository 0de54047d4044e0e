"""Request-target normalisation (docs/reference.md), done once before route matching.

The gate forwards the *normalised* path, so the upstream acts on exactly the path the gate decided
on. Rules, in order:

1. Only origin-form targets (``/path?query``) are accepted; absolute-form, authority-form and ``*``
   are rejected (the gate is not a forward proxy).
2. Percent-escapes must be well formed. ``%2F`` / ``%5C`` (encoded slash and backslash) and any
   escape or raw byte decoding to a control character (``%00``, CR, LF, DEL, ...) are rejected.
   A raw backslash is rejected too: several servers treat it as a separator.
3. Escapes of *unreserved* characters (``A-Z a-z 0-9 - . _ ~``) are decoded, so ``%2e%2e`` becomes
   ``..``; other escapes are kept, upper-cased. Percent-decoded byte runs must be valid UTF-8
   (overlong encodings such as ``%c0%ae`` are rejected).
4. Empty segments (``//``) collapse, ``.`` segments vanish and ``..`` removes the previous segment
   (never climbing above the root). A trailing slash is kept.

Matching stays case-sensitive, as HTTP paths are; ``/SLURM/`` is not ``/slurm/``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..context import R_BAD_PATH
from ..errors import BadRequest

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPE_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
MAX_TARGET = 8192


def _bad(detail: str) -> BadRequest:
    return BadRequest(R_BAD_PATH, detail)


def split_target(target: str) -> tuple[str, str]:
    """Split a request target into (path, query-with-'?' or '')."""
    path, sep, query = target.partition("?")
    return path, (sep + query) if sep else ""


@lru_cache(maxsize=4096)
def normalize_path(raw: str) -> str:
    """Normalise a raw request path (no query); raises ``BadRequest('bad-path')``.

    Memoised (a pure function; polling clients repeat the same paths, and the checks below walk
    every character in Python). Refusals raise and so are never cached."""
    if len(raw) > MAX_TARGET:
        raise _bad("request target too long")
    if not raw.startswith("/"):
        # SECURITY: absolute-form (http://host/...) and authority-form targets would let a
        # client pick a route by one path and reach another host or path.
        raise _bad("only origin-form request targets are accepted")
    for ch in raw:
        o = ord(ch)
        if o < 0x21 or o == 0x7F or o > 0x7E:
            raise _bad("control, space or non-ASCII character in path")
        if ch == "\\":
            raise _bad("backslash in path")
    # Validate every '%' is a proper escape.
    i = raw.find("%")
    while i != -1:
        if i + 2 >= len(raw):
            raise _bad("truncated percent-escape")
        if ord(raw[i + 1]) not in _HEX or ord(raw[i + 2]) not in _HEX:
            raise _bad("invalid percent-escape")
        i = raw.find("%", i + 3)
    decoded = _ESCAPE_RUN.sub(_decode_run, raw) if "%" in raw else raw
    return _remove_dot_segments(decoded)


def _decode_run(m: re.Match[str]) -> str:
    text = m.group(0)
    data = bytes(int(text[j + 1 : j + 3], 16) for j in range(0, len(text), 3))
    try:
        data.decode("utf-8")  # SECURITY: rejects overlong forms like %c0%ae ('.')
    except UnicodeDecodeError:
        raise _bad("percent-escapes are not valid UTF-8") from None
    out = []
    for b in data:
        if b < 0x20 or b == 0x7F:
            raise _bad("encoded control character in path")
        if b in (0x2F, 0x5C):
            # SECURITY: an encoded slash or backslash means different paths to different servers.
            raise _bad("encoded slash or backslash in path")
        out.append(chr(b) if b in _UNRESERVED else f"%{b:02X}")
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    trailing = path.endswith("/") or path.endswith("/.") or path.endswith("/..")
    stack: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if stack:
                stack.pop()
            continue
        stack.append(seg)
    result = "/" + "/".join(stack)
    if trailing and result != "/":
        result += "/"
    return result
