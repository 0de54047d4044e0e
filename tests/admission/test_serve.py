"""``gatekeeper serve`` with ``admission:`` opens the third listener (TLS) beside proxy and admin."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp

from tests.e2e.gate import Gate
from tests.support import wait_port

from .support import review_of, webhook_config


async def test_serve_answers_admission_reviews(tmp_path: Path) -> None:
    cfg = webhook_config(tmp_path)
    gate = Gate(tmp_path, cfg)
    try:
        port = cfg["admission"]["port"]
        wait_port(port, timeout=30)
        ctx = ssl.create_default_context(cafile=cfg["admission"]["tls"]["cert"])
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}  # fmt: skip
        body = review_of(pod, namespace="team-a")
        async with aiohttp.ClientSession() as s:
            url = f"https://127.0.0.1:{port}/v1/admission"
            async with s.post(url, json=body, ssl=ctx) as r:
                assert r.status == 200
                answer = (await r.json())["response"]
        assert answer["uid"] == body["request"]["uid"]
        assert answer["allowed"] is False and answer["status"]["reason"] == "d5-headquarters"
    finally:
        assert gate.stop() == 0


def test_port_in_use_is_a_configuration_error(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    import yaml

    from tests.support import repo_root

    cfg = webhook_config(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg["admission"]["port"] = busy.getsockname()[1]
        path = tmp_path / "g.yaml"
        path.write_text(yaml.safe_dump(cfg))
        done = subprocess.run(
            [sys.executable, "-m", "gatekeeper", "serve", "--config", str(path)],
            cwd=repo_root(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"admission: cannot listen on 127.0.0.1:{cfg['admission']['port']}" in done.stderr
