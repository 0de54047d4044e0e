"""The ``kubernetes:`` and ``admission:`` sections: parsing, inheritance and exact errors."""

from __future__ import annotations

import pytest

from gatekeeper.config import parse_config_text
from gatekeeper.errors import ConfigError

ROUTE = """
routes:
  - {name: k, upstream: "http://127.0.0.1:1", adapter: kubernetes}
  - {name: o, upstream: "http://127.0.0.1:1", adapter: kubernetes,
     kubernetes: {kueue_enforces_max_exec_time: true}}
"""


def test_routes_inherit_the_top_level_section() -> None:
    cfg = parse_config_text(
        """
kubernetes:
  workloads:
    - kind: Trainer
      api_version: example.com/v1
      templates: [{each: spec.groups, template: template, count: ["replicas|maxReplicas=1", "@nodes"]}]
  accelerator_resources: [{name: "rdma/*", devices: 0}]
"""
        + ROUTE
    )
    assert cfg.routes[0].kubernetes is cfg.kubernetes
    assert cfg.routes[0].kubernetes.workloads[0].templates[0].count == (
        "replicas|maxReplicas=1",
        "@nodes",
    )
    own = cfg.routes[1].kubernetes
    assert own is not None and own.kueue_enforces_max_exec_time and not own.workloads


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kubernetes:\n  workloads:\n    - {kind: T, api_version: a/v1, templates: [{template: spec..x}]}\n",
            "<string>:3: kubernetes.workloads[0].templates[0].template: bad field path 'spec..x' "
            "(expected dotted field names)",
        ),
        (
            "kubernetes:\n  workloads:\n    - {kind: T, api_version: a/v1, templates: [{template: t, count: ['replicas=x']}]}\n",
            "<string>:3: kubernetes.workloads[0].templates[0].count[0]: bad replica factor 'replicas=x' "
            "(expected field|field-N=default)",
        ),
        (
            "kubernetes:\n  workloads:\n    - {kind: '', api_version: a/v1}\n",
            "<string>:3: kubernetes.workloads[0].kind: must not be empty",
        ),
        (
            "kubernetes:\n  accelerator_resources: [{name: x.com/gpu, devices: -1}]\n",
            "<string>:2: kubernetes.accelerator_resources[0].devices: must be between 0 and 1024 (got -1.0)",
        ),
        (
            "admission: {port: 8443}\n",
            "<string>:1: admission.tls: the admission webhook is served over TLS only",
        ),
        (
            "admission: {port: 8080, tls: {cert: a, key: b}}\n",
            "<string>:1: admission.port: the admission listener needs its own port",
        ),
        (
            "admission: {inventory: nope, tls: {cert: a, key: b}}\n",
            "<string>:1: admission.inventory: no inventory entry 'nope'",
        ),
        (
            'admission: {api_server: "ftp://x", tls: {cert: a, key: b}}\n',
            "<string>:1: admission.api_server: not a valid http/https URL: 'ftp://x'",
        ),
        (
            "admission: {tls: {cert: a, key: b}, tenants: {users: {alice: 5}}}\n",
            "<string>:1: admission.tenants.users.alice: must map strings to strings",
        ),
    ],
)
def test_bad_sections(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config_text(text)
    assert message in str(e.value).splitlines(), str(e.value)


def test_configured_crd_is_measured_through_the_route() -> None:
    from multidict import CIMultiDict

    from gatekeeper.adapters import measure

    from ..helpers import CATALOG

    cfg = parse_config_text(
        """
kubernetes:
  workloads:
    - kind: Trainer
      api_version: example.com/v1
      templates: [{each: spec.groups, template: template, count: ["replicas=1"]}]
      hours: [spec.deadlineSeconds]
routes:
  - {name: k, upstream: "http://127.0.0.1:1", adapter: kubernetes, gpu_model: H100-SXM}
"""
    )
    body = (
        b'{"apiVersion": "example.com/v1", "kind": "Trainer", "metadata": {"name": "t"},'
        b' "spec": {"deadlineSeconds": 3600, "groups": [{"replicas": 4, "template": {"spec":'
        b' {"containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}}]}}'
    )
    headers = CIMultiDict({"Content-Type": "application/json"})
    path = "/apis/example.com/v1/namespaces/a/trainers"
    c = measure(cfg.routes[0], "POST", path, headers, body, CATALOG)
    assert c is not None and (c.gpus, c.hours, c.gpu_hours) == (32.0, 1.0, 32.0)
