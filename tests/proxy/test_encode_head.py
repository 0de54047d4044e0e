"""The request head the lean client writes (exact bytes) and the response heads the server
refuses: no CR or LF smuggled in through a name, a value, the target or the status reason."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatekeeper.proxy import lean
from gatekeeper.proxy.headers import has_line_break
from gatekeeper.proxy.server import Responder, UnsafeHeader

# Printable text plus the two characters that matter (and a few neighbours that must pass).
_TEXT = st.text(alphabet=st.sampled_from("aZ09-_:; \t\x7f\x0b\x0c\x85\u2028é\r\n"), max_size=12)
_HEADERS = st.lists(st.tuples(_TEXT, _TEXT), max_size=6)


class _Transport:
    def is_closing(self) -> bool:
        return False


class _Request:
    """Stands in for the client request: the head check runs before the request is used."""

    transport = _Transport()
    protocol = None


def _breaks(*texts: str) -> bool:
    return any("\r" in t or "\n" in t for t in texts)


def test_request_head_bytes() -> None:
    head = lean.encode_head("POST", "/a?b=1", [("Host", "up:80"), ("X-A", "1")], 3)
    assert head == b"POST /a?b=1 HTTP/1.1\r\nHost: up:80\r\nX-A: 1\r\nContent-Length: 3\r\n\r\n"
    assert lean.encode_head("GET", "/", [], None) == b"GET / HTTP/1.1\r\n\r\n"
    assert (
        lean.encode_head("DELETE", "/", [], None)
        == b"DELETE / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/a\r\nX-Evil: 1", []),
        ("/a", [("X-A", "1\r\nX-Gatekeeper-Tenant: evil")]),
        ("/a", [("X-A", "1\nX-Evil: 1")]),
        ("/a", [("X-A", "1\r")]),
        ("/a", [("X-A\r\nX-Evil", "1")]),
    ],
)
def test_request_head_refuses_line_breaks(target: str, headers: list[tuple[str, str]]) -> None:
    with pytest.raises(lean.Unsendable):
        lean.encode_head("GET", target, headers, None)


@pytest.mark.parametrize(
    ("reason", "headers"),
    [
        ("OK\r\nSet-Cookie: a=b", []),
        ("OK", [("X-A", "1\nSet-Cookie: a=b")]),
        ("OK", [("X\r", "1")]),
    ],
)
async def test_response_head_refuses_line_breaks(
    reason: str, headers: list[tuple[str, str]]
) -> None:
    responder = Responder(_Request(), close_after=False)  # type: ignore[arg-type]
    with pytest.raises(UnsafeHeader):
        await responder.send(200, headers, b"", reason)
    with pytest.raises(UnsafeHeader):
        await responder.start(200, headers, None, reason)
    assert not responder.started


@given(target=_TEXT, headers=_HEADERS, body_len=st.one_of(st.none(), st.integers(0, 10**9)))
def test_request_head_matches_the_plain_formula(
    target: str, headers: list[tuple[str, str]], body_len: int | None
) -> None:
    """Refused exactly when a piece holds CR or LF; otherwise the head written line by line."""
    pieces = [target] + [t for kv in headers for t in kv]
    if _breaks(*pieces):
        with pytest.raises(lean.Unsendable):
            lean.encode_head("PUT", target, headers, body_len)
        return
    expected = f"PUT {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    expected += f"Content-Length: {body_len if body_len is not None else 0}\r\n\r\n"
    assert lean.encode_head("PUT", target, headers, body_len) == expected.encode("utf-8")


@given(reason=_TEXT, headers=_HEADERS)
async def test_response_head_is_refused_exactly_when_a_piece_breaks_a_line(
    reason: str, headers: list[tuple[str, str]]
) -> None:
    """Refused exactly when the reason, a name or a value holds CR or LF."""
    responder = Responder(_Request(), close_after=False)  # type: ignore[arg-type]
    if _breaks(reason, *[t for kv in headers for t in kv]):
        with pytest.raises(UnsafeHeader):
            await responder.send(204, headers, b"", reason)
    else:
        # Past the check, aiohttp's response needs a real request: the stand-in has none.
        with pytest.raises(AttributeError):
            await responder.send(204, headers, b"", reason)


def test_has_line_break() -> None:
    assert not has_line_break("")
    assert not has_line_break("a" * 4096 + "\x0b\x0c\x85\u2028")
    assert has_line_break("a" * 4096 + "\r")
    assert has_line_break("\n" + "a" * 4096)
