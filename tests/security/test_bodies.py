"""Hostile bodies through a real gate on the Slurm and Kubernetes routes.

Each is refused with a 4xx problem+json naming the reason (400; 413 for size), audited, never a 5xx
and never forwarded. Where the body is valid but tricky (YAML anchors and merge keys), the gate must
measure what the upstream will read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.security.harness import K8S_JOBS, SUBMIT, SecGate, request_bytes


@pytest.fixture(autouse=True)
def invariant(secgate: SecGate) -> Iterator[None]:
    yield
    time.sleep(0.05)
    secgate.check_invariant()


def _j(text: str) -> bytes:
    return text.encode()


SLURM: list[tuple[str, bytes, str]] = [
    ("nested 30000", b'{"job": ' + b"[" * 30000 + b"]" * 30000 + b"}", "body-too-deep"),
    ("nested 100", b'{"job": {"name": ' + b"[" * 100 + b"]" * 100 + b"}}", "body-too-deep"),
    ("time 1e400", _j('{"job": {"tres_per_job": "gres/gpu:8", "time_limit": 1e400}}'), "bad-value"),
    ("nodes 1e400", _j('{"job": {"tres_per_node": "gres/gpu:8", "nodes": 1e400}}'), "bad-value"),
    ("nodes -1e400", _j('{"job": {"tres_per_node": "gres/gpu:8", "nodes": -1e400}}'), "bad-value"),
    ("time 5000 digits", _j('{"job": {"tres_per_job": "gres/gpu:8", "time_limit": '
                            + "9" * 5000 + "}}"), "bad-json"),
    ("gpus 5000 digits", _j('{"job": {"tres_per_job": "gres/gpu:' + "9" * 5000 + '"}}'),
     "unknown-gpu-syntax"),
    ("nodes huge", _j('{"job": {"tres_per_node": "gres/gpu:8", "nodes": "99999999999"}}'),
     "bad-nodes"),
    ("duplicate tres_per_job", _j('{"job": {"name": "x", "tres_per_job": "gres/gpu:1", '
                                  '"tres_per_job": "gres/gpu:64"}}'), "duplicate-key"),
    ("duplicate job", _j('{"job": {"tres_per_job": "gres/gpu:1"}, '
                         '"job": {"tres_per_job": "gres/gpu:64"}}'), "duplicate-key"),
    ("duplicate via escape", _j('{"job": {"tres_per_job": "gres/gpu:1", '
                                '"tres_per_jo\\u0062": "gres/gpu:64"}}'), "duplicate-key"),
    ("tres as number", _j('{"job": {"tres_per_job": 64}}'), "unknown-gpu-syntax"),
    ("job as string", _j('{"job": "gres/gpu:64"}'), "bad-value"),
    ("job as list", _j('{"job": [{"tres_per_job": "gres/gpu:64"}]}'), "bad-value"),
    ("jobs as object", _j('{"jobs": {"a": {"tres_per_job": "gres/gpu:64"}}}'), "bad-value"),
    ("nodes boolean", _j('{"job": {"tres_per_node": "gres/gpu:8", "nodes": true}}'), "bad-value"),
    ("time as word", _j('{"job": {"tres_per_job": "gres/gpu:8", '
                        '"time_limit": {"number": "abc", "set": true}}}'), "bad-time"),
    ("script as number", _j('{"job": {"tres_per_job": "gres/gpu:8"}, "script": 5}'), "bad-value"),
    ("top-level array", _j('[{"job": {"tres_per_job": "gres/gpu:64"}}]'), "bad-body"),
    ("invalid UTF-8", b'{"job": {"name": "\xff\xfe", "tres_per_job": "gres/gpu:8"}}', "bad-json"),
    ("overlong UTF-8", b'{"job": {"name": "\xc0\xae", "tres_per_job": "gres/gpu:8"}}', "bad-json"),
    ("UTF-8 BOM", b'\xef\xbb\xbf{"job": {"tres_per_job": "gres/gpu:8"}}', "bad-json"),
    ("UTF-16", '{"job": {"tres_per_job": "gres/gpu:8"}}'.encode("utf-16"), "bad-json"),
    ("NaN", _j('{"job": {"tres_per_job": "gres/gpu:8", "time_limit": NaN}}'), "bad-json"),
    ("Infinity", _j('{"job": {"tres_per_job": "gres/gpu:8", "time_limit": Infinity}}'), "bad-json"),
    ("lone surrogate in model", _j('{"job": {"tres_per_job": "gres/gpu:\\ud800:8"}}'),
     "unknown-gpu-syntax"),
    ("NUL in TRES", _j('{"job": {"tres_per_job": "gres/gpu:8\\u0000:64"}}'), "unknown-gpu-syntax"),
    ("two documents", _j('{"job": {"tres_per_job": "gres/gpu:8"}} {"job": {}}'), "bad-json"),
    ("comment", _j('{"job": {"tres_per_job": "gres/gpu:8" /* 64 */}}'), "bad-json"),
    ("YAML to the JSON API", b"job:\n  tres_per_job: gres/gpu:64\n", "bad-json"),
]  # fmt: skip


def _pod(spec: str) -> bytes:
    return ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n" + spec).encode()


_CONTAINER = (
    "  template:\n    spec:\n      containers:\n      - name: a\n        resources:\n"
    "          limits: {nvidia.com/gpu: %s}\n"
)


def _laughs(levels: int) -> bytes:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines).encode()


K8S: list[tuple[str, bytes, str]] = [
    ("python tag", b"!!python/object/apply:os.system ['id']\n", "bad-yaml"),
    ("python tag nested", _pod("  parallelism: !!python/object/new:int [64]\n"), "bad-yaml"),
    ("custom tag", _pod("  parallelism: !gpus 64\n" + _CONTAINER % "8"), "bad-yaml"),
    ("binary tag", _pod(_CONTAINER % "!!binary MTY="), "bad-value"),
    ("set tag", _pod("  parallelism: !!set {a, b}\n"), "bad-value"),
    ("timestamp as GPUs", _pod(_CONTAINER % "2001-12-14"), "bad-value"),
    ("billion laughs", _laughs(9), "body-too-large"),
    ("too many aliases", ("a: &a x\nb: [" + ", ".join(["*a"] * 101) + "]\n").encode(),
     "yaml-too-many-aliases"),
    ("duplicate key", _pod("  parallelism: 1\n  parallelism: 64\n" + _CONTAINER % "8"),
     "duplicate-key"),
    ("two documents", _pod("  parallelism: 1\n") + b"---\n" + _pod("  parallelism: 64\n"),
     "bad-yaml"),
    ("parallelism 1e400", _pod("  parallelism: 1e400\n" + _CONTAINER % "8"), "bad-value"),
    ("parallelism .inf", _pod("  parallelism: .inf\n" + _CONTAINER % "8"), "bad-value"),
    ("invalid UTF-8", _pod("  parallelism: 1\n") + b"  x: \xff\n", "bad-yaml"),
    ("deep flow", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "bad-yaml"),
    ("deep block", ("".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "v: 1\n")
     .encode(), "body-too-deep"),
    ("duplicate JSON key", _j('{"spec": {"parallelism": 1, "parallelism": 64}}'), "duplicate-key"),
]  # fmt: skip


def _send(secgate: SecGate, path: str, body: bytes, ctype: str) -> tuple[int, dict[str, object]]:
    before = len(secgate.seen())
    data = request_bytes(
        "POST", path, headers=[*secgate.auth(), ("Content-Type", ctype)], body=body
    )
    ex = secgate.exchange(data, expect=1, timeout=10)
    assert len(ex.responses) == 1, ex.rest[:200]
    resp = ex.responses[0]
    assert resp.status < 500, resp.body[:300]
    assert resp.header("Content-Type") == "application/problem+json", resp.body[:300]
    problem: dict[str, object] = resp.json()
    rec = secgate.records()[str(problem["decision_id"])]
    assert rec["http"]["status"] == resp.status
    assert rec["decision"]["action"] == "deny"
    time.sleep(0.02)
    assert secgate.seen()[before:] == [], "a refused body reached the upstream"
    return resp.status, problem


@pytest.mark.parametrize(("name", "body", "reason"), SLURM, ids=[c[0] for c in SLURM])
def test_hostile_slurm_body(secgate: SecGate, name: str, body: bytes, reason: str) -> None:
    status, problem = _send(secgate, SUBMIT, body, "application/json")
    assert status == (413 if reason == "body-too-large" else 400)
    assert problem["type"] == f"urn:gatekeeper:problem:{reason}", problem
    assert problem["detail"]


@pytest.mark.parametrize(("name", "body", "reason"), K8S, ids=[c[0] for c in K8S])
def test_hostile_kubernetes_body(secgate: SecGate, name: str, body: bytes, reason: str) -> None:
    status, problem = _send(secgate, K8S_JOBS, body, "application/yaml")
    assert status == (413 if reason == "body-too-large" else 400)
    assert problem["type"] == f"urn:gatekeeper:problem:{reason}", problem


def test_body_over_the_limit_is_413(secgate: SecGate) -> None:
    body = b'{"job": {"name": "' + b"x" * 70_000 + b'"}}'
    status, problem = _send(secgate, SUBMIT, body, "application/json")
    assert status == 413 and problem["type"] == "urn:gatekeeper:problem:body-too-large"


def _measured(secgate: SecGate, path: str, body: bytes, ctype: str) -> dict[str, object]:
    data = request_bytes(
        "POST", path, headers=[*secgate.auth(), ("Content-Type", ctype)], body=body
    )
    ex = secgate.exchange(data, expect=1)
    resp = ex.responses[0]
    assert resp.status == 200, resp.body[:300]
    compute: dict[str, object] = secgate.records()[resp.header("X-Gatekeeper-Decision-Id") or ""][
        "compute"
    ]
    return compute


def test_yaml_anchors_and_merge_keys_are_measured_as_the_api_server_reads_them(
    secgate: SecGate,
) -> None:
    """Anchors and ``<<`` merges are valid Kubernetes YAML: they must be counted, not hidden."""
    anchors = _pod(
        "  parallelism: 8\n  template:\n    spec:\n      containers:\n      - name: a\n"
        "        resources:\n          limits: &lim {nvidia.com/gpu: 8}\n"
        "          requests: *lim\n      - name: b\n        resources: {limits: *lim}\n"
    )
    assert _measured(secgate, K8S_JOBS, anchors, "application/yaml")["gpus"] == 128.0
    merge = _pod(
        "  parallelism: 1\n  template:\n    spec:\n      containers:\n      - name: a\n"
        "        resources:\n          limits:\n            <<: {nvidia.com/gpu: 64}\n"
        "            cpu: 1\n"
    )
    assert _measured(secgate, K8S_JOBS, merge, "application/yaml")["gpus"] == 64.0
    # JSON sent as YAML (a YAML superset) is read the same way
    as_json = json.dumps(
        {"spec": {"parallelism": 2, "template": {"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"nvidia.com/gpu": 4}}}]}}}}
    ).encode()  # fmt: skip
    assert _measured(secgate, K8S_JOBS, as_json, "application/yaml")["gpus"] == 8.0


def test_numeric_lookalikes_count_at_least_what_slurm_reads(secgate: SecGate) -> None:
    """``gres/gpu:1e400`` is one GPU of a type named "1e400" to Slurm: counted as one GPU of the
    most capable catalogued model (unknown model), never as zero."""
    body = _j('{"job": {"tres_per_job": "gres/gpu:1e400"}}')
    compute = _measured(secgate, SUBMIT, body, "application/json")
    assert compute["gpus"] == 1.0 and compute["controlled"] is True
