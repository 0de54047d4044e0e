"""Hot reload keeps the last good configuration; admin quota and explain endpoints."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gatekeeper.demo import DATA, DemoKeys, Step, slurm_job, write_config
from tests.e2e.gate import Gate
from tests.support import free_port


@pytest.fixture
def demo_gate(tmp_path: Path) -> Any:
    keys = DemoKeys(tmp_path)
    entities = tmp_path / "entities.yaml"
    shutil.copy(DATA / "entities.yaml", entities)
    path = write_config(
        tmp_path, keys, port=free_port(), admin=free_port(), scheduler="http://127.0.0.1:9"
    )
    cfg = yaml.safe_load(path.read_text())
    cfg["entities"]["sources"] = [{"path": str(entities)}]
    policy = tmp_path / "us.yaml"
    shutil.copy(Path(cfg["policy"]["files"][0]), policy)
    (tmp_path / "country-groups.yaml").write_text(
        (Path(cfg["policy"]["files"][0]).parent / "country-groups.yaml").read_text()
    )
    cfg["policy"]["files"] = [str(policy)]
    gate = Gate(tmp_path, cfg)
    try:
        yield gate, keys, entities, policy
    finally:
        gate.stop()


async def _metric(gate: Gate, name: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(gate.admin_url + "/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def _explain(gate: Gate, keys: DemoKeys, entity: str, ip: str) -> dict[str, Any]:
    step = Step("x", entity, ip, 8, 24, "", 0)
    request = {
        "method": "POST",
        "path": "/slurm/v0.0.41/job/submit",
        "headers": {"Authorization": f"Bearer {keys.token(entity)}", "X-Forwarded-For": ip},
        "client_ip": "127.0.0.1",
        "body": slurm_job(step),
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(gate.admin_url + "/v1/explain", json=request) as r,
    ):
        assert r.status == 200
        return dict(await r.json())


async def test_broken_entities_keep_the_last_good_registry(demo_gate: Any) -> None:
    gate, keys, entities, _policy = demo_gate
    before = await _explain(gate, keys, "acme-sg", "165.21.83.88")
    assert before["rule"] == "d5-headquarters"
    good = entities.read_text()
    entities.write_text(good + "  - id: broken\n    kind: spaceship\n")
    async with aiohttp.ClientSession() as s, s.post(gate.admin_url + "/v1/reload") as r:
        assert r.status == 500
        assert (await r.json())["reloaded"] is False
    assert await _metric(gate, 'gatekeeper_policy_reloads_total{result="error"}') == 1
    still = await _explain(gate, keys, "acme-sg", "165.21.83.88")
    assert (
        still["rule"] == "d5-headquarters" and still["ownership"]["ultimate_parent"] == "acme-group"
    )

    # Fixed file, new fact: acme-group's stake drops below control, so acme-holdings is the parent.
    entities.write_text(
        good.replace("{id: acme-group, share: 62.5}", "{id: acme-group, share: 40}")
    )
    gate.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while await _metric(gate, 'gatekeeper_policy_reloads_total{result="success"}') < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    after = await _explain(gate, keys, "acme-sg", "165.21.83.88")
    assert after["ownership"]["ultimate_parent"] == "acme-holdings"
    assert after["rule"] == "foreign-tenant"


async def test_broken_policy_keeps_the_last_good_policy(demo_gate: Any) -> None:
    gate, keys, _entities, policy = demo_gate
    version = (await _explain(gate, keys, "frontier-labs", "8.8.8.8"))["policy_version"]
    good = policy.read_text()
    policy.write_text(good.replace("ownership.affiliated: true", "ownership.afiliated: true"))
    async with aiohttp.ClientSession() as s, s.post(gate.admin_url + "/v1/reload") as r:
        assert r.status == 500
    assert (await _explain(gate, keys, "bluewave-my", "103.11.143.1"))["rule"] == "listed-affiliate"
    policy.write_text(good.replace("id: anonymizer", "id: anonymiser"))
    async with aiohttp.ClientSession() as s, s.post(gate.admin_url + "/v1/reload") as r:
        assert r.status == 200
        new_version = (await r.json())["policy_version"]
    assert new_version != version
    assert (await _explain(gate, keys, "frontier-labs", "5.62.60.1"))["rule"] == "anonymiser"


async def test_rotated_jwks_file_is_picked_up_on_reload(demo_gate: Any, tmp_path: Path) -> None:
    gate, keys, _entities, _policy = demo_gate
    new_dir = tmp_path / "rotated"
    new_dir.mkdir()
    new_keys = DemoKeys(new_dir)
    assert (await _explain(gate, new_keys, "frontier-labs", "8.8.8.8"))["status"] == 401
    shutil.copy(new_keys.jwks_path, keys.jwks_path)
    async with aiohttp.ClientSession() as s, s.post(gate.admin_url + "/v1/reload") as r:
        assert r.status == 200
    assert (await _explain(gate, new_keys, "frontier-labs", "8.8.8.8"))["action"] == "allow"
    assert (await _explain(gate, keys, "frontier-labs", "8.8.8.8"))["status"] == 401


async def test_quota_endpoint_shows_group_usage(demo_gate: Any) -> None:
    gate, keys, _entities, _policy = demo_gate
    # The scheduler is unreachable (502): quota is reserved, then refunded.
    step = Step("x", "fjord-research", "84.208.20.110", 8, 10, "", 0)
    headers = {
        "Authorization": f"Bearer {keys.token('fjord-research')}",
        "X-Forwarded-For": step.ip,
    }
    async with aiohttp.ClientSession() as s:
        async with s.post(
            gate.url + "/slurm/v0.0.41/job/submit", json=slurm_job(step), headers=headers
        ) as r:
            assert r.status == 502
        async with s.get(gate.admin_url + "/v1/quotas/ultimate_parent/fjord-group") as r:
            assert r.status == 200
            info = await r.json()
    text = json.dumps(info)
    assert "foreign-monthly" in text
    assert await _metric(gate, "gatekeeper_quota_refunded_total") == pytest.approx(8 * 10 * 15832)
