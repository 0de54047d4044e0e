"""Decision ids: ULIDs (time-ordered, 26 Crockford base32 characters), cheap to make."""

from __future__ import annotations

import base64
import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# RFC 4648 base32 -> Crockford: the 80 random bits are exactly 16 base32 characters (no padding),
# so C's b32encode does them; the 10 time characters change once a millisecond and are cached.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
_last_ms = -1
_last_prefix = ""
# Random bytes are read 10 KiB at a time: one getrandom(2) per 1024 ids instead of one per id,
# and encoded in one go (10 bytes are exactly 16 base32 characters, so the encoding of the pool
# is the concatenation of each id's encoding; Python 3.11's b32encode is slow per call).
_POOL_SIZE = 10 * 1024
_pool = ""
_pos = _POOL_SIZE * 16 // 10
_POOL_CHARS = _POOL_SIZE * 16 // 10


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
    if _pos >= _POOL_CHARS:
        raw = base64.b32encode(os.urandom(_POOL_SIZE))
        _pool, _pos = raw.translate(_TO_CROCKFORD).decode(), 0
    rnd = _pool[_pos : _pos + 16]
    _pos += 16
    return _last_prefix + rnd
