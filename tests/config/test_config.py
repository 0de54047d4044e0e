"""Config loading: every bad file in tests/data/config/bad/ has its exact message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gatekeeper.config import load_config, parse_config_text
from gatekeeper.errors import ConfigError
from tests.support import repo_root

BAD = repo_root() / "tests" / "data" / "config" / "bad"
BAD_FILES = sorted(BAD.glob("*.yaml"))


def expected_messages(path: Path) -> list[str]:
    return [
        line.split("# expect: ", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


def test_there_are_enough_bad_configs() -> None:
    assert len(BAD_FILES) >= 15


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.name for p in BAD_FILES])
def test_bad_config_message(path: Path) -> None:
    expected = expected_messages(path)
    assert expected, f"{path.name} has no '# expect:' line"
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    got = [p.replace(str(BAD) + "/", "") for p in info.value.problems]
    assert got == expected


def test_serve_exits_2_with_every_problem_on_stderr() -> None:
    path = BAD / "many-errors.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo_root(),
    )
    assert proc.returncode == 2
    for message in expected_messages(path):
        assert message in proc.stderr.replace(str(BAD) + "/", "")


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg_file = tmp_path / "gk.yaml"
    cfg_file.write_text(
        "policy: {files: [policies/us.yaml]}\n"
        "identity:\n  issuers:\n    - {issuer: 'https://idp/', audiences: [a], jwks_file: keys/j.json}\n"
    )
    cfg = load_config(str(cfg_file))
    assert cfg.policy.files == (str(tmp_path / "policies" / "us.yaml"),)
    assert cfg.identity.issuers[0].jwks_file == str(tmp_path / "keys" / "j.json")
    assert cfg.listen.port == 8080 and cfg.admin.port == 9090 and cfg.workers == 1
    assert cfg.quota.store == "memory" and cfg.quota.on_store_error == "deny"


def test_env_substitution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GK_REDIS_URL", "redis://10.1.2.3:6379/0")
    cfg = parse_config_text("quota: {store: '${GK_REDIS_URL}'}")
    assert cfg.quota.store == "redis://10.1.2.3:6379/0"


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [1]\n" + "".join(f"b{i}: *x\n" for i in range(1100)),  # alias flood
        "!!python/object/apply:os.system ['true']",  # unsafe tag
        "listen: !!binary aGVsbG8=",
        "[" * 5000,  # deep nesting
        "\x00\x01binary",
    ],
    ids=["alias-flood", "python-tag", "binary-tag", "deep-nesting", "binary"],
)
def test_hostile_yaml_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_config_text(text)


def test_oversized_file(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as fh:
        fh.write("# " + "x" * (65 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(str(big))


def test_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"workers: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(bad))


def test_yaml_1_2_scalars() -> None:
    from gatekeeper.yamlsrc import parse_located

    data = parse_located("country: NO\nbudget: 5.0e7\nflag: yes\non: true\nn: 7\n", "f.yaml")
    assert data == {"country": "NO", "budget": 5.0e7, "flag": "yes", "on": True, "n": 7}
