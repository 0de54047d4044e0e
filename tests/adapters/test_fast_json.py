"""The orjson fast path of ``load_json`` answers exactly like the strict parser (duplicates!)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gatekeeper.adapters import body as loader
from gatekeeper.errors import BadRequest

CASES = [
    b'{"a":1,"a":2}',
    b'{"a":{"b":1,"b":1}}',
    b'{"a:b":1,"a":2,"a":3}',
    b'{"x":"a:b:c","y":"d","y":"e:"}',
    b'{"a":"\\u003a","a":1}',
    b'{"k":"v:","k":"w"}',
    b'{"a":1, "a" :1}',
    b'[{"a":1},{"a":1}]',
    b'{"job":{"name":"x","env":["A=b:c"]},"script":"a:b"}',
    b'{"a":NaN}',
    b'{"a":1e400}',
    b'{"a":' + b"1" * 5000 + b"}",
    b"\xef\xbb\xbf{}",
    b'{"a":"\\ud800"}',
    b"[" * 70 + b"]" * 70,
    b'{"a":1,}',
    b'{"\xff":1}',
    b'  {"a" : 1 , "b" :2}  ',
]


def _strict(body: bytes) -> tuple[str, Any]:
    try:
        text = body.decode("utf-8")
        doc = json.loads(
            text,
            object_pairs_hook=loader._pairs_hook,
            parse_constant=loader._refuse_constant,
        )
        loader.check_shape(doc)
    except BadRequest as exc:
        return "err", exc.reason
    except (ValueError, RecursionError):
        return "err", "bad-json"
    return "ok", doc


@pytest.mark.parametrize("body", CASES)
def test_fast_path_matches_strict_parser(body: bytes) -> None:
    try:
        got: tuple[str, Any] = ("ok", loader.load_json(body))
    except BadRequest as exc:
        got = ("err", exc.reason)
    want = _strict(body)
    if want[0] == "err":
        assert got[0] == "err"
        if want[1] in ("duplicate-key", "body-too-deep"):
            assert got == want
    else:
        assert got == want


def test_duplicate_hidden_behind_colons_in_strings_is_refused() -> None:
    # The dropped member's value holds no colon, the kept one does: counts must still disagree.
    with pytest.raises(BadRequest) as exc:
        loader.load_json(b'{"s":"x","s":"y:z","t":"::"}')
    assert exc.value.reason == "duplicate-key"


LIMIT_CASES = [
    # Brackets inside strings push the cheap depth bound over the limit: the walk decides.
    b'{"s":"' + b"[{" * 40 + b'","t":[1]}',
    b'{"s":"' + b"[{" * 40 + b'","s":1}',
    # Longer than the node limit in bytes, few nodes: the walk decides.
    b'{"s":"' + b"x" * (loader.MAX_NODES + 10) + b'","t":"a:b"}',
    b'{"s":"' + b"x" * (loader.MAX_NODES + 10) + b'","s":"a"}',
    # Exactly at the depth limit, and one over.
    b"[" * (loader.MAX_DEPTH - 1) + b"1" + b"]" * (loader.MAX_DEPTH - 1),
    b"[" * loader.MAX_DEPTH + b"1" + b"]" * loader.MAX_DEPTH,
    # A colon spelled as an escape next to a duplicate: strict path.
    b'{"a":1,"a":"\\u003a"}',
    b'{"a\\\\u":1,"b":"\\\\"}',
]


@pytest.mark.parametrize("body", LIMIT_CASES)
def test_fast_path_limits_match_strict_parser(body: bytes) -> None:
    test_fast_path_matches_strict_parser(body)
