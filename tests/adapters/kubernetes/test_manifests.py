"""Real manifests from public projects (tests/data/k8s) measured exactly, accelerators x replicas.

Each document goes through the adapter as the proxy sees it (a POST of the object to its URL),
and through a running gate in front of the stand-in API server; the expected values are in
tests/data/k8s/EXPECTED.yaml, read by hand from each manifest.
"""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper.demo import DemoKeys
from gatekeeper.errors import BadRequest
from tests.e2e.gate import Gate

from .stack import NS, ApiServer, measured, send
from .support import manifests, post, resolver_for, url_for

CASES = manifests()


@pytest.mark.parametrize(("name", "docs", "expected"), CASES, ids=[c[0] for c in CASES])
def test_manifest_measured_exactly(
    name: str, docs: list[dict[str, Any]], expected: list[float]
) -> None:
    resolve = resolver_for(docs)
    got = [post(doc, resolver=resolve).gpus for doc in docs]
    assert got == expected


@pytest.mark.parametrize(("name", "docs", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_manifest_measured_exactly_through_the_proxy(
    stack: tuple[Gate, DemoKeys, ApiServer],
    name: str,
    docs: list[dict[str, Any]],
    expected: list[float],
) -> None:
    """Every document as an HTTP POST through a running gate (the shipped Kubernetes routes) to
    the stand-in API server, in the file's order: a pod's DRA claim templates are stored before
    it, and the gate reads them back with the client's token. The US lab's decision records
    carry the expected accelerators; the D:5-parented tenant is refused (451) whatever asks for
    any, measured the same, and none of its refused writes is forwarded."""
    gate, keys, api = stack
    lab, acme = keys.token("frontier-labs"), keys.token("acme-sg")
    for doc, gpus in zip(docs, expected, strict=True):
        path = url_for(doc, doc["metadata"].get("namespace", NS))
        status, body = await send(gate, lab, "POST", path, doc)
        assert status == 201, body
        assert measured(gate)[-1] == ("POST", path, gpus, "allow")
        writes = sum(1 for e in api.seen() if e["method"] == "POST")
        status, problem = await send(gate, acme, "POST", path, doc)
        if gpus == 0:
            assert status == 201, problem
            continue
        assert status == 451 and problem["rule"] == "d5-headquarters", problem
        assert measured(gate)[-1] == ("POST", path, gpus, "require_license")
        assert sum(1 for e in api.seen() if e["method"] == "POST") == writes


def test_every_manifest_has_an_origin() -> None:
    from .support import DATA

    for name, _docs, _expected in CASES:
        head = (DATA / name).read_text().splitlines()[:3]
        assert any(line.startswith("# Origin: ") for line in head), name


def test_pod_claims_without_a_resolver_or_pool_are_refused() -> None:
    """Through the proxy (which does not read claims) the DRA pod cannot be bounded: 400."""
    docs = dict(((n, d) for n, d, _ in CASES))["dra-gpu-test-count.yaml"]
    with pytest.raises(BadRequest) as e:
        post(docs[2])
    assert e.value.reason == "unmeasurable-request"
    assert "spec.resourceClaims[0].resourceClaimTemplateName" in e.value.detail
