"""``gatekeeper serve`` with a listen address it cannot bind: one clear line and exit 2, no restarts."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.gate import base_config
from tests.support import repo_root


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port held by a listening socket without SO_REUSEPORT (another program)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _serve(tmp: Path, cfg: dict[str, object]) -> subprocess.CompletedProcess[str]:
    path = tmp / "gk.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo_root(),
    )


@pytest.mark.parametrize("key", ["listen", "admin"])
def test_a_taken_port_is_a_configuration_error(tmp_path: Path, taken: int, key: str) -> None:
    cfg = base_config(tmp_path, "http://127.0.0.1:9")
    cfg[key] = {"host": "127.0.0.1", "port": taken}
    proc = _serve(tmp_path, cfg)
    assert proc.returncode == 2, proc.stderr
    assert f"{key}: cannot listen on 127.0.0.1:{taken}: address already in use" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_workers_are_not_restarted_when_the_port_is_taken(tmp_path: Path, taken: int) -> None:
    """Each worker fails the same way: the supervisor stops with 2 instead of respawning them."""
    cfg = base_config(tmp_path, "http://127.0.0.1:9", workers=2)
    cfg["listen"] = {"host": "127.0.0.1", "port": taken}
    proc = _serve(tmp_path, cfg)  # the 60 s timeout fails the test if the workers keep coming back
    assert proc.returncode == 2, proc.stderr
    assert "cannot listen on" in proc.stderr
    assert "restarting" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
