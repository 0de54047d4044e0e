"""deploy/k8s/webhook agrees with itself, with the base manifests and with the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gatekeeper.adapters.kubernetes import tables_for
from gatekeeper.admission import ADMISSION_PATH
from gatekeeper.config import load_config
from tests.support import repo_root

WEBHOOK = repo_root() / "deploy" / "k8s" / "webhook"


def _docs() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted(WEBHOOK.glob("*.yaml")):
        if path.name in ("kustomization.yaml", "gatekeeper.yaml"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


DOCS = _docs()
KUSTOMIZATION = yaml.safe_load((WEBHOOK / "kustomization.yaml").read_text())
NAMESPACE = KUSTOMIZATION["namespace"]


def test_config_is_the_base_config_plus_admission(monkeypatch: pytest.MonkeyPatch) -> None:
    base = (repo_root() / "deploy" / "config" / "gatekeeper.yaml").read_text()
    text = (WEBHOOK / "gatekeeper.yaml").read_text()
    assert text.startswith(base)
    added = yaml.safe_load(text[len(base) :])
    assert list(added) == ["admission"]
    monkeypatch.setenv("GATEKEEPER_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("GATEKEEPER_AUDIT_REDIS_URL", "redis://redis:6379/1")
    cfg = load_config(str(WEBHOOK / "gatekeeper.yaml"))
    assert cfg.admission is not None and cfg.admission.tls is not None
    patch = yaml.safe_load((WEBHOOK / "deployment-patch.yaml").read_text())["spec"]["template"][
        "spec"
    ]
    container = patch["containers"][0]
    assert container["ports"][0]["containerPort"] == cfg.admission.port
    mount = container["volumeMounts"][0]["mountPath"]
    assert (
        cfg.admission.tls.cert == f"{mount}/tls.crt" and cfg.admission.tls.key == f"{mount}/tls.key"
    )
    secret = patch["volumes"][0]["secret"]["secretName"]
    assert DOCS[("Certificate", "gatekeeper-webhook")]["spec"]["secretName"] == secret


def test_kustomization_lists_every_file() -> None:
    files = {p.name for p in WEBHOOK.glob("*.yaml")} - {"kustomization.yaml", "gatekeeper.yaml"}
    listed = {r for r in KUSTOMIZATION["resources"] if r != "../"}
    listed |= {p["path"] for p in KUSTOMIZATION["patches"]}
    assert listed == files


def test_webhook_configuration() -> None:
    vwc = DOCS[("ValidatingWebhookConfiguration", "gatekeeper")]
    cert = DOCS[("Certificate", "gatekeeper-webhook")]
    service = DOCS[("Service", "gatekeeper-webhook")]
    assert (
        vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        == f"{NAMESPACE}/gatekeeper-webhook"
    )
    assert f"gatekeeper-webhook.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    assert service["spec"]["ports"][0]["targetPort"] == "webhook"
    for hook in vwc["webhooks"]:
        assert hook["failurePolicy"] == "Fail"
        assert 1 <= hook["timeoutSeconds"] <= 30
        assert hook["admissionReviewVersions"] == ["v1"]
        svc = hook["clientConfig"]["service"]
        assert (svc["name"], svc["namespace"], svc["path"], svc["port"]) == (
            "gatekeeper-webhook",
            NAMESPACE,
            ADMISSION_PATH,
            service["spec"]["ports"][0]["port"],
        )
        excluded = hook["namespaceSelector"]["matchExpressions"][0]
        assert excluded["operator"] == "NotIn"
        assert {NAMESPACE, "kube-system"} <= set(excluded["values"])


# Asked about so that the adapter refuses them: they scale workloads past the webhook.
REFUSED_BY_DESIGN = {"horizontalpodautoscalers", "scaledobjects", "scaledjobs"}


def test_every_registered_workload_is_in_the_table() -> None:
    """A resource the webhook asks about is one the adapter measures (or refuses by design)."""
    kinds = tables_for(None).kinds
    vwc = DOCS[("ValidatingWebhookConfiguration", "gatekeeper")]
    rules = vwc["webhooks"][0]["rules"]
    missing = []
    for rule in rules:
        group = rule["apiGroups"][0]
        for resource in rule["resources"]:
            plural = resource.split("/")[0]
            known = any(
                w.api_version.rpartition("/")[0] == group and res == plural
                for (api, res), w in kinds.by_resource.items()
                if api == w.api_version
            )
            if not known and plural not in REFUSED_BY_DESIGN:
                missing.append(f"{group}/{resource}")
    assert not missing


def test_files_parse() -> None:
    for path in WEBHOOK.glob("*.yaml"):
        assert list(yaml.safe_load_all(Path(path).read_text()))


def test_claim_reader_rbac() -> None:
    binding = DOCS[("ClusterRoleBinding", "gatekeeper-read-claims")]
    role = DOCS[("ClusterRole", "gatekeeper-read-claims")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gatekeeper", "namespace": NAMESPACE}
    ]
    assert role["rules"] == [
        {
            "apiGroups": ["resource.k8s.io"],
            "resources": ["resourceclaims", "resourceclaimtemplates"],
            "verbs": ["get"],
        }
    ]
    patch = yaml.safe_load((WEBHOOK / "deployment-patch.yaml").read_text())["spec"]["template"][
        "spec"
    ]
    assert (
        patch["serviceAccountName"] == "gatekeeper"
        and patch["automountServiceAccountToken"] is True
    )


def test_every_registered_scale_has_its_workload_readable() -> None:
    """A Scale carries only replicas: the webhook reads the workload, so it must be allowed to."""
    binding = DOCS[("ClusterRoleBinding", "gatekeeper-read-scaled")]
    assert binding["roleRef"]["name"] == "gatekeeper-read-scaled"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gatekeeper", "namespace": NAMESPACE}
    ]
    role = DOCS[("ClusterRole", "gatekeeper-read-scaled")]
    readable = {
        (group, resource)
        for rule in role["rules"]
        if rule["verbs"] == ["get"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    vwc = DOCS[("ValidatingWebhookConfiguration", "gatekeeper")]
    scaled = {
        (rule["apiGroups"][0], resource.removesuffix("/scale"))
        for rule in vwc["webhooks"][0]["rules"]
        for resource in rule["resources"]
        if resource.endswith("/scale")
    }
    assert scaled and scaled == readable
