"""The intake's own checks of a request's declared body length, for faces without an HTTP parser
(the edge's parser refuses these first; ``check`` and tests hand requests over directly)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gatekeeper.config import Config, LimitsConfig, RouteMatch
from gatekeeper.intake import Intake, Request

from .adapters.helpers import route

SUBMIT = "/slurm/v0.0.41/job/submit"


def _admit(headers: list[tuple[str, str]], method: str = "POST") -> str | None:
    cfg = Config(
        routes=(route("slurm", match=RouteMatch(path_prefix="/slurm/")),),
        limits=LimitsConfig(max_body_bytes=1000),
    )
    request = Request(method, SUBMIT, CIMultiDictProxy(CIMultiDict(headers)), "127.0.0.1")
    refusal = Intake(cfg).admit(request, started=0).refusal
    return None if refusal is None else f"{refusal.status} {refusal.reason}"


@pytest.mark.parametrize("value", ["12", "0", " 12 ", "000"])
def test_one_decimal_length_is_read(value: str) -> None:
    assert _admit([("Content-Length", value)]) is None


@pytest.mark.parametrize(
    "value", ["abc", "", "-1", "+12", "1_0", "12, 12", "0x10", "1e3", "١٢", "9" * 40, "12\x00"]
)
def test_anything_but_one_decimal_length_is_refused(value: str) -> None:
    assert _admit([("Content-Length", value)]) == "400 bad-http"


def test_two_lengths_are_refused_even_when_equal() -> None:
    assert _admit([("Content-Length", "12"), ("Content-Length", "12")]) == "400 bad-http"


def test_a_declared_length_over_the_limit_is_413() -> None:
    assert _admit([("Content-Length", "1001")]) == "413 body-too-large"
    assert _admit([("Content-Length", "1000")]) is None


def test_read_routes_do_not_read_the_length() -> None:
    # A GET to a measured route is not measured: its length is the HTTP parser's business.
    assert _admit([("Content-Length", "abc")], method="GET") is None
