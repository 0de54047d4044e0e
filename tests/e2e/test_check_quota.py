"""``gatekeeper check`` and ``/v1/explain`` answer with the quota as it stands, and take none of it.

A private redis-server (one per test) holds the buckets, so separate ``check`` processes and a
running gate share them as live replicas do. The us-remote-access pack is used with its foreign
budget cut down to two requests an hour, so a tenant reaches its cap in two consuming checks.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gatekeeper.config import load_config
from gatekeeper.demo import DemoKeys, Step, slurm_job, write_config
from gatekeeper.runtime import Runtime
from tests.e2e.gate import Gate
from tests.support import RedisServer, free_port, repo_root

POLICIES = repo_root() / "policies"
BUDGET = "foreign-monthly: {unit: tpp_hours, limit: 2.0e+8, window: 30d, per: ultimate_parent}"
SMALL = "foreign-monthly: {unit: requests, limit: 2, window: 1h, per: ultimate_parent}"
ENTITY, IP, GROUP = "fjord-research", "84.208.20.110", "fjord-group"  # rule foreign-tenant


def _config(tmp: Path, keys: DemoKeys, store: str, **quota: Any) -> Path:
    pack = (POLICIES / "us-remote-access.yaml").read_text()
    assert BUDGET in pack
    (tmp / "us.yaml").write_text(pack.replace(BUDGET, SMALL))
    (tmp / "country-groups.yaml").write_text((POLICIES / "country-groups.yaml").read_text())
    path = write_config(
        tmp, keys, port=free_port(), admin=free_port(), scheduler="http://127.0.0.1:9"
    )
    cfg = yaml.safe_load(path.read_text())
    cfg["policy"]["files"] = [str(tmp / "us.yaml")]
    cfg["quota"] = {"store": store, **quota}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def setup(tmp_path: Path, redis_server: RedisServer) -> dict[str, Any]:
    keys = DemoKeys(tmp_path)
    config = _config(tmp_path, keys, redis_server.url)
    request = {
        "method": "POST",
        "path": "/slurm/v0.0.41/job/submit",
        "headers": {"Authorization": f"Bearer {keys.token(ENTITY)}", "X-Forwarded-For": IP},
        "client_ip": "127.0.0.1",
        "body": slurm_job(Step("q", ENTITY, IP, 8, 24, "", 0)),
    }
    req = tmp_path / "request.json"
    req.write_text(json.dumps(request))
    return {"tmp": tmp_path, "keys": keys, "config": config, "request": request, "req": req}


def check(config: Path, req: Path, *flags: str, rc: int = 0) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "check", str(req), "--config", str(config), *flags],
        capture_output=True, text=True, timeout=60, cwd=repo_root(),
    )  # fmt: skip
    assert proc.returncode == rc, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return dict(json.loads(proc.stdout)) if rc == 0 else {"stderr": proc.stderr}


def used(config: Path) -> float:
    """The group's usage of the budget, read from the store as the admin endpoint reads it."""

    async def read() -> float:
        runtime = Runtime(load_config(str(config)))
        await runtime.start(with_audit=False)
        try:
            rows = await runtime.snapshot.quota_stage.describe("ultimate_parent", GROUP)
        finally:
            await runtime.close()
        return float(rows["quotas"][0]["used"])

    return asyncio.run(read())


def test_check_under_the_cap_reads_and_takes_nothing(setup: dict[str, Any]) -> None:
    config, req = setup["config"], setup["req"]
    for _ in range(3):  # asked again and again, the answer stays: nothing is taken
        d = check(config, req)
        assert (d["action"], d["rule"], d["status"]) == ("allow", "foreign-tenant", None), d
        q = d["quota"]
        assert (q["name"], q["consumed"], q["remaining"], q["limit"]) == (
            "foreign-monthly", 0.0, 2.0, 2.0,
        )  # fmt: skip
        assert "error" not in q and "error" not in d
    assert used(config) == 0.0
    check(config, req, "--consume")
    assert check(config, req)["quota"]["remaining"] == 1.0


def test_check_consume_still_consumes(setup: dict[str, Any]) -> None:
    config, req = setup["config"], setup["req"]
    first = check(config, req, "--consume")["quota"]
    assert (first["consumed"], first["remaining"]) == (1.0, 1.0)
    second = check(config, req, "--consume")["quota"]
    assert (second["consumed"], second["remaining"]) == (1.0, 0.0)
    assert used(config) == 2.0
    third = check(config, req, "--consume")
    assert (third["status"], third["error"]) == (429, "quota-exhausted")


def test_check_at_the_cap_is_429_and_takes_nothing(setup: dict[str, Any]) -> None:
    config, req = setup["config"], setup["req"]
    for _ in range(2):
        check(config, req, "--consume")
    assert used(config) == 2.0
    d = check(config, req)
    assert (d["action"], d["status"], d["error"]) == ("deny", 429, "quota-exhausted"), d
    assert "quota-exhausted" in d["reasons"] and "0 of 2 requests left" in d["detail"]
    assert (d["quota"]["consumed"], d["quota"]["remaining"]) == (0.0, 0.0)
    assert used(config) == 2.0
    # --no-quota: the old answer, the policy's alone.
    old = check(config, req, "--no-quota")
    assert (old["action"], old["status"], old["quota"]) == ("allow", None, None)
    assert "error" not in old
    assert used(config) == 2.0


def test_consume_and_no_quota_exclude_each_other(setup: dict[str, Any]) -> None:
    out = check(setup["config"], setup["req"], "--consume", "--no-quota", rc=2)
    assert "not allowed with" in out["stderr"]


@pytest.mark.parametrize("on_error", ["deny", "allow"])
def test_check_without_a_reachable_store_says_so(tmp_path: Path, on_error: str) -> None:
    keys = DemoKeys(tmp_path)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    config = _config(tmp_path, keys, dead, on_store_error=on_error)
    req = tmp_path / "request.json"
    req.write_text(json.dumps({
        "method": "POST", "path": "/slurm/v0.0.41/job/submit", "client_ip": "127.0.0.1",
        "headers": {"Authorization": f"Bearer {keys.token(ENTITY)}", "X-Forwarded-For": IP},
        "body": slurm_job(Step("q", ENTITY, IP, 8, 24, "", 0)),
    }))  # fmt: skip
    d = check(config, req)
    assert "store-unavailable" in d["reasons"] and d["quota"]["error"], d
    if on_error == "deny":
        # As the live gate records it: the policy's allow, answered 503.
        assert (d["action"], d["status"], d["error"]) == ("allow", 503, "store-unavailable")
        assert d["detail"] == d["quota"]["error"]
    else:
        assert (d["action"], d["status"], d["quota"]["fail_open"]) == ("allow", None, True)
    skipped = check(config, req, "--no-quota")
    assert (skipped["action"], skipped["quota"]) == ("allow", None)


async def _metric(gate: Gate, name: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(gate.admin_url + "/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def _explain(gate: Gate, request: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(gate.admin_url + "/v1/explain", json=request) as r,
    ):
        assert r.status == 200
        return dict(await r.json())


REJECTED = "gatekeeper_quota_rejected_total"
STORE_ERRORS = "gatekeeper_store_errors_total"


async def test_explain_on_a_running_gate_counts_no_refusal(
    setup: dict[str, Any], redis_server: RedisServer
) -> None:
    config, req, request = setup["config"], setup["req"], setup["request"]
    gate = Gate(setup["tmp"], yaml.safe_load(config.read_text()))
    try:
        fresh = await _explain(gate, request)
        assert (fresh["quota"]["consumed"], fresh["quota"]["remaining"]) == (0.0, 2.0)
        for _ in range(2):
            await asyncio.to_thread(check, config, req, "--consume")
        rejected = await _metric(gate, REJECTED)
        for _ in range(3):
            d = await _explain(gate, request)
            assert (d["status"], d["error"]) == (429, "quota-exhausted"), d
        assert await _metric(gate, REJECTED) == rejected
        # The same request live is refused and counted.
        headers = request["headers"]
        async with (
            aiohttp.ClientSession() as s,
            s.post(gate.url + request["path"], json=request["body"], headers=headers) as r,
        ):
            assert r.status == 429
        assert await _metric(gate, REJECTED) == rejected + 1
        # A store that went away: the explanation names it; the live error counter stays.
        errors = await _metric(gate, STORE_ERRORS)
        redis_server.kill()
        try:
            d = await _explain(gate, request)
            assert (d["status"], d["error"]) == (503, "store-unavailable"), d
            assert d["quota"]["error"]
            assert await _metric(gate, STORE_ERRORS) == errors
        finally:
            redis_server.start()
    finally:
        gate.stop()
