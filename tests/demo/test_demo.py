"""``gatekeeper demo`` runs end to end and every scenario line has its decision."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from gatekeeper.demo import SCENARIO
from tests.support import repo_root


def test_demo_prints_every_expected_decision(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=repo_root(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if re.match(r"^\s*\d+\s{2}", line)]
    assert len(lines) == len(SCENARIO)
    for step, line in zip(SCENARIO, lines, strict=True):
        assert step.title in line
        assert f" {step.expect_action} " in line, line
        assert line.rstrip().endswith(f"{step.expect_status}  ok"), line
    assert "audit verify:     ok:" in proc.stdout
    assert (out / "audit.jsonl").stat().st_size > 0
    metrics = (out / "metrics.prom").read_text()
    assert "gatekeeper_requests_total" in metrics
