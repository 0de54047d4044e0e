"""``gatekeeper check`` with real tokens, entities and GeoIP, for every rule of both packs."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from gatekeeper.demo import DemoKeys, Step, slurm_job, write_config
from tests.support import repo_root

POLICIES = repo_root() / "policies"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("check")
    keys = DemoKeys(tmp)
    us = write_config(tmp, keys, port=18080, admin=19090, scheduler="http://127.0.0.1:6820")
    cfg = yaml.safe_load(us.read_text())
    cfg["policy"]["files"] = [str(POLICIES / "cn-dual-use-japan.yaml")]
    cn = tmp / "cn.yaml"
    cn.write_text(yaml.safe_dump(cfg))
    cfg["policy"]["files"] = [str(POLICIES / "us-remote-access.yaml")]
    us_only = tmp / "us.yaml"
    us_only.write_text(yaml.safe_dump(cfg))
    return {"tmp": tmp, "keys": keys, "us": us_only, "cn": cn}


def check(setup: dict[str, Any], pack: str, entity: str | None, ip: str, gpus: int = 8,
          hours: float = 24, purpose: str | None = None) -> dict[str, Any]:  # fmt: skip
    headers = {"X-Forwarded-For": ip}
    if entity:
        headers["Authorization"] = f"Bearer {setup['keys'].token(entity)}"
    if purpose:
        headers["X-Gatekeeper-Purpose"] = purpose
    step = Step("check", entity, ip, gpus, hours, "", 0)
    request = {
        "method": "POST",
        "path": "/slurm/v0.0.41/job/submit",
        "headers": headers,
        "client_ip": "127.0.0.1",  # the trusted proxy; X-Forwarded-For carries the client
        "body": slurm_job(step),
    }
    path = setup["tmp"] / f"req-{entity}-{ip}-{purpose}.json"
    path.write_text(json.dumps(request))
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "check", str(path), "--config", str(setup[pack])],
        capture_output=True, text=True, timeout=60, cwd=repo_root(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


CASES = [
    # pack, entity, client ip, purpose, action, rule, status
    ("us", "frontier-labs", "8.8.8.8", None, "allow", "us-entity", None),
    ("us", "bluewave-my", "103.11.143.1", None, "deny", "listed-affiliate", 451),
    ("us", "frontier-labs", "8.8.8.8", "biological-weapons", "deny", "wmd-end-use", 451),
    ("us", "frontier-labs", "5.62.60.1", None, "deny", "anonymizer", 451),
    ("us", "acme-sg", "165.21.83.88", None, "require_license", "d5-headquarters", 451),
    ("us", "frontier-labs", "114.114.114.114", None, "require_license", "d5-location", 451),
    ("us", "ghost-co", "8.8.8.8", None, "deny", "unknown-entity", 403),
    ("us", "fjord-research", "84.208.20.110", None, "allow", "foreign-tenant", None),
    ("us", "orchid-sg", "203.116.1.1", None, "allow", "d5-headquarters", None),
    ("cn", "kaiyo-defense", "133.242.0.3", None, "deny", "jp-military-end-use", 451),
    ("cn", "kaiyo-compute", "133.242.0.3", None, "deny", "jp-military-affiliate", 451),
    ("cn", "fjord-research", "133.242.0.3", "military", "deny", "jp-military-end-use", 451),
    ("cn", "fjord-research", "84.208.20.110", None, "allow", "known-entity", None),
]


@pytest.mark.parametrize(("pack", "entity", "ip", "purpose", "action", "rule", "status"), CASES,
                         ids=[f"{c[0]}-{c[5]}-{c[1]}" for c in CASES])  # fmt: skip
def test_check_decides_like_the_pack(setup: dict[str, Any], pack: str, entity: str, ip: str,
                                     purpose: str | None, action: str, rule: str,
                                     status: int | None) -> None:  # fmt: skip
    decision = check(setup, pack, entity, ip, purpose=purpose)
    assert (decision["action"], decision["rule"], decision["status"]) == (action, rule, status), (
        decision
    )
    assert decision["policy_version"].startswith("sha256:")
    assert decision["trace"], "check returns the rule trace"
    assert decision["principal"]["entity"] == entity
    if action == "allow" and rule == "d5-headquarters":
        assert decision["license"] == "D1234567"


def test_check_without_token_is_401(setup: dict[str, Any]) -> None:
    decision = check(setup, "us", None, "8.8.8.8")
    assert (decision["action"], decision["status"]) == ("deny", 401)


def test_check_rejects_a_bad_request_file(setup: dict[str, Any]) -> None:
    bad = setup["tmp"] / "bad.json"
    bad.write_text("{not json")
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "check", str(bad), "--config", str(setup["us"])],
        capture_output=True, text=True, timeout=60, cwd=repo_root(),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "bad request file" in proc.stderr
