"""Run real ``gatekeeper serve`` and upstream processes for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support import free_port, repo_root, wait_port


class Upstream:
    """The stand-in upstream (tests/e2e/upstream_server.py) as a subprocess."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.log = tmp / f"upstream-{self.port}.jsonl"
        self.log.touch()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.upstream_server", "--port", str(self.port),
             "--log", str(self.log)],
            cwd=repo_root(),
        )  # fmt: skip
        wait_port(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def base_config(tmp: Path, upstream_url: str, **overrides: Any) -> dict[str, Any]:
    """A config with an open (unauthenticated) route to the upstream and an allow-all policy."""
    cfg: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "limits": {"max_body_bytes": 65536, "upstream_timeout_s": 2, "header_timeout_s": 2},
        "policy": {"files": [], "default_action": "allow"},
        "audit": {"durability": "fsync", "sinks": [{"type": "file", "path": str(tmp / "audit.jsonl")}]},
        "routes": [
            {"name": "submit", "match": {"path_prefix": "/api/submit"}, "upstream": upstream_url,
             "adapter": "generic", "authenticate": False,
             "generic": {"gpus_header": "X-Test-Gpus"}},
            {"name": "open", "match": {"path_prefix": "/"}, "upstream": upstream_url,
             "authenticate": False},
        ],
    }  # fmt: skip
    cfg.update(overrides)
    return cfg


class Gate:
    """``gatekeeper serve`` as a subprocess with a config written to ``tmp``."""

    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any],
        *,
        name: str = "gatekeeper",
        while_starting: Callable[[subprocess.Popen[bytes]], None] | None = None,
    ) -> None:
        """Start ``gatekeeper serve`` and wait for its ports; ``while_starting`` is called with
        the process about every 0.2 s until then."""
        self.config = config
        self.path = tmp / f"{name}.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.port = int(config["listen"]["port"])
        self.admin_port = int(config["admin"]["port"])
        self.stderr_path = tmp / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper", "serve", "--config", str(self.path)],
            cwd=repo_root(),
            stderr=self._stderr,
            env=dict(os.environ, GATEKEEPER_LOG_LEVEL="WARNING"),
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gate exited {self.proc.returncode}: {self.stderr()}")
                if while_starting is not None:
                    while_starting(self.proc)
                try:
                    wait_port(self.port, timeout=0.2)
                    wait_port(self.admin_port, timeout=0.2)
                    break
                except TimeoutError:
                    continue
            else:
                raise TimeoutError(f"gate did not start: {self.stderr()}")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()
        return int(self.proc.returncode)

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes over TCP and read until the server closes or ``timeout``."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)
