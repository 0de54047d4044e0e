"""Real manifests from public projects (tests/data/k8s) measured exactly, accelerators x replicas.

Each document goes through the adapter as the proxy sees it (a POST of the object to its URL);
the expected values are in tests/data/k8s/EXPECTED.yaml, read by hand from each manifest.
"""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper.errors import BadRequest

from .support import manifests, post, resolver_for

CASES = manifests()


@pytest.mark.parametrize(("name", "docs", "expected"), CASES, ids=[c[0] for c in CASES])
def test_manifest_measured_exactly(
    name: str, docs: list[dict[str, Any]], expected: list[float]
) -> None:
    resolve = resolver_for(docs)
    got = [post(doc, resolver=resolve).gpus for doc in docs]
    assert got == expected


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
