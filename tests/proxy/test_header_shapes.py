"""The forwarding filters remember each header shape's answer: a remembered answer must be the
one the filter gives, for every part of what it depends on (names, Connection values, Upgrade)."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from gatekeeper.proxy import headers as h


def _proxy(pairs: list[tuple[str, str]]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_same_names_other_connection_values_filter_differently() -> None:
    names = [("Connection", "x-one"), ("X-One", "1"), ("X-Two", "2"), ("Accept", "*/*")]
    first = h.upstream_request_headers(_proxy(names))
    assert first == [("X-Two", "2"), ("Accept", "*/*")]
    second = h.upstream_request_headers(_proxy([("Connection", "x-two"), *names[1:]]))
    assert second == [("X-One", "1"), ("Accept", "*/*")]
    again = h.upstream_request_headers(_proxy(names))  # a remembered shape
    assert again == first


def test_upgrade_kept_or_not_is_part_of_the_shape() -> None:
    pairs = [("Sec-WebSocket-Key", "k"), ("Upgrade", "websocket"), ("Accept", "*/*")]
    assert h.upstream_request_headers(_proxy(pairs)) == [("Accept", "*/*")]
    kept = h.upstream_request_headers(_proxy(pairs), keep_upgrade=True)
    assert kept == [("Sec-WebSocket-Key", "k"), ("Accept", "*/*")]
    assert h.upstream_request_headers(_proxy(pairs)) == [("Accept", "*/*")]


def test_gate_headers_and_hop_by_hop_dropped_in_any_case_and_order() -> None:
    pairs = [
        ("x_gatekeeper_tenant", "evil"),
        ("Host", "a"),
        ("X-Trace", "1"),
        ("TE", "trailers"),
        ("X-Trace", "2"),
        ("X-GATEKEEPER-Entity", "evil"),
    ]
    for _ in range(2):
        out = h.upstream_request_headers(_proxy(pairs))
        assert out == [("X-Trace", "1"), ("X-Trace", "2")]


def test_response_shapes_depend_on_connection() -> None:
    pairs = [("Server", "u"), ("Date", "d"), ("X-A", "1"), ("Content-Length", "2")]
    assert h.downstream_header_pairs(pairs, "") == [("Server", "u"), ("X-A", "1")]
    assert h.downstream_header_pairs(pairs, "keep-alive, x-a") == [("Server", "u")]
    assert h.downstream_header_pairs(pairs, "") == [("Server", "u"), ("X-A", "1")]
    md = CIMultiDict([*pairs, ("Connection", "close")])
    assert h.downstream_response_headers(md) == [("Server", "u"), ("X-A", "1")]


def test_shape_table_stays_bounded() -> None:
    for i in range(h._SHAPES_MAX + 10):
        h.upstream_request_headers(_proxy([(f"X-Name-{i}", "v")]))
    assert len(h._request_shapes) <= h._SHAPES_MAX
    long_name = "X-" + "a" * h._SHAPE_CHARS
    before = dict(h._request_shapes)
    assert h.upstream_request_headers(_proxy([(long_name, "v")])) == [(long_name, "v")]
    assert h._request_shapes == before  # too long to remember


def test_repeated_names_keep_their_own_answers() -> None:
    # A multidict's keys() lists a repeated name once: the filter must not line its answers up
    # against those, or the second Host here would be forwarded and Y lost.
    pairs = [("Host", "a"), ("X", "1"), ("Host", "b"), ("Y", "2")]
    for _ in range(2):
        assert h.upstream_request_headers(_proxy(pairs)) == [("X", "1"), ("Y", "2")]
