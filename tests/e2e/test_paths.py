"""Path tricks against a real gate.

Routes: ``/admin-only/`` goes to a *different* upstream than everything else, so a trick that
reaches it by a disguised path shows up as a request on the wrong upstream. Every case is either
normalised to the documented path (and route) or rejected with 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.gate import Gate, Upstream, base_config, raw_request

# (raw request target, expected: ("route", upstream path) or 400 or 404)
CASES: list[tuple[str, object]] = [
    ("/public/a", ("public", "/public/a")),
    ("//public//a", ("public", "/public/a")),
    ("/public/./a", ("public", "/public/a")),
    ("/public/x/../a", ("public", "/public/a")),
    ("/x/../public/a", ("public", "/public/a")),
    ("/../../public/a", ("public", "/public/a")),
    ("/public/%2e%2e/secret/a", ("secret", "/secret/a")),
    ("/public/%2E%2E/secret/a", ("secret", "/secret/a")),
    ("/public/.%2e/secret/a", ("secret", "/secret/a")),
    ("/public/%2e/a", ("public", "/public/a")),
    ("/%70ublic/a", ("public", "/public/a")),
    ("/public/%7Euser", ("public", "/public/~user")),
    ("/public/a%2fb", 400),
    ("/public/a%2Fb", 400),
    ("/public/..%2fsecret/a", 400),
    ("/public/a%5cb", 400),
    ("/public/a\\b", 400),
    ("/public/a%00", 400),
    ("/public/a%0d%0aX-Injected:%201", 400),
    ("/public/%zz", 400),
    ("/public/%4", 400),
    ("/public/%c0%ae%c0%ae/secret", 400),
    ("/public/%e0%80%ae", 400),
    ("/public/%ff", 400),
    ("/Public/a", 404),
    ("/SECRET/a", 404),
    ("/secret./a", 404),
    ("/public./a", 404),
    ("/public/a?next=/secret/a", ("public", "/public/a?next=/secret/a")),
    ("http://evil.example/secret/a", 400),
    ("/public/a%20b", ("public", "/public/a%20b")),
    ("/public/%e2%82%ac", ("public", "/public/%E2%82%AC")),
]


@pytest.fixture(scope="module")
def two_upstreams(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gate, Upstream, Upstream]]:
    tmp: Path = tmp_path_factory.mktemp("paths")
    public, secret = Upstream(tmp), Upstream(tmp)
    cfg = base_config(tmp, public.url)
    cfg["routes"] = [
        {"name": "secret", "match": {"path_prefix": "/secret/"}, "upstream": secret.url,
         "authenticate": False},
        {"name": "public", "match": {"path_prefix": "/public/"}, "upstream": public.url,
         "authenticate": False},
    ]  # fmt: skip
    gate = Gate(tmp, cfg)
    try:
        yield gate, public, secret
    finally:
        gate.stop()
        public.stop()
        secret.stop()


@pytest.mark.parametrize(("target", "expected"), CASES, ids=[c[0] for c in CASES])
def test_path_trick(
    two_upstreams: tuple[Gate, Upstream, Upstream], target: str, expected: object
) -> None:
    gate, public, secret = two_upstreams
    before = {"public": len(public.seen()), "secret": len(secret.seen())}
    response = raw_request(
        gate.port,
        f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"),
    )
    status = int(response.split(b" ", 2)[1])
    after = {
        "public": public.seen()[before["public"] :],
        "secret": secret.seen()[before["secret"] :],
    }
    if isinstance(expected, int):
        assert status == expected, response[:300]
        assert not after["public"] and not after["secret"]
        return
    route, upstream_path = expected  # type: ignore[misc]
    assert status == 200, response[:300]
    other = "secret" if route == "public" else "public"
    assert not after[other], f"reached {other}: {after[other]}"
    assert [r["path"] for r in after[route]] == [upstream_path]
