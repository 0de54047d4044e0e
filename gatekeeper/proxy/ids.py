"""Decision ids: ULIDs (time-ordered, 26 Crockford base32 characters), cheap to make."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# The 80 random bits are 16 Crockford characters of 5 uniform bits each. A random byte's low 5
# bits are uniform (256 is a multiple of 32), so ``bytes.translate`` with a table mapping every
# byte to the character of its low 5 bits turns 16 random bytes into one id's random part, in C.
# The 10 time characters change once a millisecond and are cached.
_TO_CHAR = bytes(_ALPHABET.encode()[b & 31] for b in range(256))
_last_ms = -1
_last_prefix = ""
# Random bytes are read 16 KiB at a time: one getrandom(2) and one translation per 1024 ids.
_POOL_CHARS = 16 * 1024
_pool = ""
_pos = _POOL_CHARS


def _time_chars(ms: int) -> str:
    out = []
    for _ in range(10):
        out.append(_ALPHABET[ms & 31])
        ms >>= 5
    return "".join(reversed(out))


def new_decision_id() -> str:
    """A new ULID: 48 bits of Unix milliseconds, then 80 random bits."""
    global _last_ms, _last_prefix, _pool, _pos
    ms = int(time.time() * 1000)
    if ms != _last_ms:
        _last_ms, _last_prefix = ms, _time_chars(ms)
    pos = _pos
    if pos >= _POOL_CHARS:
        _pool, pos = os.urandom(_POOL_CHARS).translate(_TO_CHAR).decode("ascii"), 0
    _pos = pos + 16
    return _last_prefix + _pool[pos : pos + 16]
