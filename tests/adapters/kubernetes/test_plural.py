"""The URL resource of a kind, as the API server spells it."""

from __future__ import annotations

from gatekeeper.adapters.kubernetes.kinds import plural


def test_plural_follows_the_english_rules_save_for_endpoints() -> None:
    kinds = ["PyTorchJob", "Endpoints", "NetworkPolicy", "IngressClass", "StorageClass", "Ingress"]
    assert [plural(kind) for kind in kinds] == [
        "pytorchjobs",
        "endpoints",
        "networkpolicies",
        "ingressclasses",
        "storageclasses",
        "ingresses",
    ]
