"""The command line: exit statuses and outputs, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from gatekeeper.demo import DATA
from tests.support import repo_root


def gk(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or repo_root(),
    )


def _entities_config(tmp: Path) -> Path:
    cfg = tmp / "gk.yaml"
    cfg.write_text(
        yaml.safe_dump({"entities": {"sources": [{"path": str(DATA / "entities.yaml")}]}})
    )
    return cfg


def test_entities_show_known(tmp_path: Path) -> None:
    proc = gk("entities", "show", "acme-sg", "--config", str(_entities_config(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    profile = json.loads(proc.stdout)
    assert profile["ultimate_parent"] == "acme-group"
    assert profile["parent_hq_country"] == "CN"
    assert profile["paths"]["ultimate_parent"] == ["acme-sg", "acme-holdings", "acme-group"]
    assert profile["affiliated"] is False


def test_entities_show_affiliate_path(tmp_path: Path) -> None:
    proc = gk("entities", "show", "bluewave-my", "--config", str(_entities_config(tmp_path)))
    profile = json.loads(proc.stdout)
    assert profile["affiliated"] is True and profile["listed_share"] == 50.0
    assert profile["listed_via"] == ["redline-tech"]


def test_entities_show_unknown_exits_1(tmp_path: Path) -> None:
    proc = gk("entities", "show", "nobody", "--config", str(_entities_config(tmp_path)))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["known"] is False


def test_config_from_environment(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, GATEKEEPER_CONFIG=str(_entities_config(tmp_path)))
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "entities", "show", "acme-sg"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_policy_validate_ok_and_errors(tmp_path: Path) -> None:
    ok = gk(
        "policy", "validate", "policies/us-remote-access.yaml", "policies/cn-dual-use-japan.yaml"
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "version sha256:" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nname: b\nrules:\n  - id: r\n    when: {geo.planet: mars}\n    action: deny\n"
    )
    proc = gk("policy", "validate", str(bad))
    assert proc.returncode == 1
    assert f"{bad}:5" in proc.stdout


def test_policy_test_passes_on_shipped_packs() -> None:
    proc = gk("policy", "test", "policies/tests")
    assert proc.returncode == 0, proc.stdout
    assert " 0 failed" in proc.stdout


def test_policy_test_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    src = (repo_root() / "policies" / "tests" / "us-remote-access.yaml").read_text()
    wrong = src.replace("expect: {action: deny", "expect: {action: allow", 1)
    assert wrong != src, "the shipped test file changed shape; update this test"
    case_dir = tmp_path / "tests"
    case_dir.mkdir()
    (case_dir / "us.yaml").write_text(
        wrong.replace("policy: [../", f"policy: [{repo_root()}/policies/")
    )
    proc = gk("policy", "test", str(case_dir))
    assert proc.returncode == 1, proc.stdout
    assert "FAIL listed-affiliate matches" in proc.stdout, proc.stdout
    assert proc.stdout.count("PASS") > 10


def test_check_bad_config_exits_2(tmp_path: Path) -> None:
    req = tmp_path / "r.json"
    req.write_text('{"method": "GET", "path": "/"}')
    cfg = tmp_path / "gk.yaml"
    cfg.write_text("workers: many\n")
    proc = gk("check", str(req), "--config", str(cfg))
    assert proc.returncode == 2
    assert "workers: must be an integer" in proc.stderr
