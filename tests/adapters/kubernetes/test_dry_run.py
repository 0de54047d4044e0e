"""``?dryRun=All`` through the proxy: decided and audited as the real write, charged nothing.

The official ``kubernetes`` client (``dry_run="All"``, what ``kubectl --dry-run=server`` sends)
talks to a real gate in front of the stand-in API server, which stores nothing for a dry run and
refuses any other ``dryRun`` value with 422 as the API server's validation does. The tenant is
``fjord-research`` from Norway: allowed within the ``foreign-monthly`` TPP-hours budget of its
ultimate parent ``fjord-group``.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gatekeeper.adapters.kubernetes.dryrun import dry_run_values, is_dry_run
from gatekeeper.config import Config, RouteMatch
from gatekeeper.demo import DemoKeys
from gatekeeper.intake import Intake, Request
from tests.e2e.gate import Gate
from tests.security.harness import NO_IP

from ..helpers import route
from .stack import NS, ApiServer
from .test_client import apps_api, deployment

H100_DAY = 8 * 24 * 15832  # TPP-hours of one pod of 8 H100s for the route's max_hours (24)

# (query, the dryRun values Go's net/url gives the API server, a dry run)
QUERIES = [
    ("", [], False),
    ("?dryRun=All", ["All"], True),
    ("?fieldManager=kubectl&dryRun=All", ["All"], True),
    ("?dryRun=All&dryRun=All", ["All", "All"], True),
    ("?dry%52un=%41ll", ["All"], True),
    ("?dryRun=All&dryRun=", ["All", ""], False),  # 422 at the API server
    ("?dryRun=all", ["all"], False),
    ("?dryRun", [""], False),
    ("?dryRun=All+", ["All "], False),
    ("?dryrun=All", [], False),  # names are case-sensitive: a real write
    ("?dryRun=All;x=1", [], False),  # a pair with ";" is dropped: a real write
    ("?dryRun=%zzAll", [], False),  # an invalid escape drops the pair
]


@pytest.mark.parametrize(("query", "values", "dry"), QUERIES)
def test_dry_run_is_read_as_the_api_server_reads_it(
    query: str, values: list[str], dry: bool
) -> None:
    assert dry_run_values(query) == values
    assert is_dry_run(query) is dry


def test_only_kubernetes_routes_know_dry_run() -> None:
    cfg = Config(
        routes=(
            route("kubernetes", match=RouteMatch(path_prefix="/apis/")),
            route("slurm", match=RouteMatch(path_prefix="/slurm/")),
        )
    )
    headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))

    def dry(target: str) -> bool:
        admitted = Intake(cfg).admit(
            Request("POST", target, headers, "127.0.0.1", b"{}"), started=0
        )
        assert admitted.refusal is None
        return admitted.ctx.request.dry_run

    assert dry("/apis/apps/v1/namespaces/ml/deployments?dryRun=All") is True
    assert dry("/apis/apps/v1/namespaces/ml/deployments?dryRun=all") is False
    assert dry("/slurm/v0.0.41/job/submit?dryRun=All") is False


def _used(gate: Gate) -> float:
    with urllib.request.urlopen(gate.admin_url + "/v1/quotas/ultimate_parent/fjord-group") as r:
        state = json.load(r)
    (row,) = [q for q in state["quotas"] if q["name"] == "foreign-monthly"]
    return float(row["used"])


def _records(gate: Gate) -> list[dict[str, Any]]:
    audit = Path(gate.config["audit"]["sinks"][0]["path"])
    return [json.loads(line) for line in audit.read_text().splitlines() if line]


def _outcome(gate: Gate, decision_id: str) -> dict[str, Any]:
    """The outcome line, appended after the answer went out: waited for, not assumed."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for r in _records(gate):
            if r.get("type") == "outcome" and r["decision_id"] == decision_id:
                return r
        time.sleep(0.05)
    raise AssertionError(f"no outcome line for {decision_id}")


def _fjord(gate: Gate, keys: DemoKeys) -> Any:
    apps = apps_api(gate, keys.token("fjord-research"))
    apps.api_client.set_default_header("X-Forwarded-For", NO_IP)
    return apps


def test_dry_run_through_the_proxy(stack: tuple[Gate, DemoKeys, ApiServer]) -> None:
    gate, keys, api = stack
    apps = _fjord(gate, keys)
    path = f"/apis/apps/v1/namespaces/{NS}/deployments"
    created = apps.create_namespaced_deployment(NS, deployment(8), dry_run="All")
    assert created.metadata.name == "serve"
    assert _used(gate) == 0
    (dry,) = [r for r in _records(gate) if "decision" in r]
    assert dry["http"]["path"] == path + "?dryRun=All"
    assert dry["decision"]["action"] == "allow" and dry["quota"]["consumed"] == 0
    assert dry["compute"]["gpus"] == 8.0
    apps.create_namespaced_deployment(NS, deployment(8))
    assert _used(gate) == H100_DAY
    # 70 pods of 8 H100s exceed the budget: refused as the real write would be, never forwarded
    for dry_run in ("All", None):
        with pytest.raises(kubernetes.client.ApiException) as e:
            apps.create_namespaced_deployment(NS, deployment(8, replicas=70), dry_run=dry_run)
        assert e.value.status == 429
        assert json.loads(e.value.body)["type"].endswith("quota-exhausted")
    assert _used(gate) == H100_DAY
    posts = [s for s in api.seen() if s["method"] == "POST"]
    assert len(posts) == 2


def test_malformed_dry_run_is_a_real_write(stack: tuple[Gate, DemoKeys, ApiServer]) -> None:
    """Charged like a real write; the API server refuses it (422) and the charge comes back."""
    gate, keys, _api = stack
    apps = _fjord(gate, keys)
    with pytest.raises(kubernetes.client.ApiException) as e:
        apps.create_namespaced_deployment(NS, deployment(8), dry_run="all")
    assert e.value.status == 422
    (decision,) = [r for r in _records(gate) if "decision" in r]
    outcome = _outcome(gate, decision["decision_id"])
    assert not decision["http"]["path"].endswith("dryRun=All")
    assert decision["quota"]["consumed"] == H100_DAY
    assert outcome["type"] == "outcome" and outcome["quota"]["refunded"] is True
    assert _used(gate) == 0
