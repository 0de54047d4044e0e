"""Rules reading an attribute no configured source provides: ``policy validate`` names them with
their file and line (exit 0, or 1 with ``--strict``), and ``gatekeeper serve`` logs them."""

from __future__ import annotations

from pathlib import Path

import yaml

from gatekeeper.config import GeoConfig
from gatekeeper.policy import load_policy_set
from gatekeeper.policy.sources import unprovided_reads
from tests.cli.test_cli import gk
from tests.e2e.gate import Gate, Upstream, base_config

POLICY = """\
version: 1
rules:
  - id: asn
    when: {geo.asn: {in: [64500]}}
    action: deny
  - id: vpn
    when:
      any:
        - {geo.vpn: true}
        - {geo.tor: true}
    action: deny
  - id: claims-are-fine
    when: {principal.claims.team: red}
    action: flag
"""


def _files(tmp_path: Path) -> tuple[Path, Path]:
    pol = tmp_path / "p.yaml"
    pol.write_text(POLICY)
    cfg = tmp_path / "gk.yaml"
    cfg.write_text(yaml.safe_dump({"policy": {"files": [str(pol)]}}))
    return pol, cfg


def _expected(pol: Path) -> list[str]:
    return [
        f"{pol}:4: warning: geo.asn has no source (geoip.asn_db is not configured); "
        "it is unknown on every request",
        f"{pol}:9: warning: geo.vpn has no source (geoip.anonymous_db is not configured); "
        "it is false on every request",
        f"{pol}:10: warning: geo.tor has no source (geoip.anonymous_db is not configured); "
        "it is false on every request",
    ]


def test_unprovided_reads_name_file_line_and_key(tmp_path: Path) -> None:
    pol, _ = _files(tmp_path)
    policy = load_policy_set([str(pol)])
    assert unprovided_reads(policy, GeoConfig()) == _expected(pol)
    assert unprovided_reads(policy, GeoConfig(asn_db="asn.mmdb")) == _expected(pol)[1:]
    both = GeoConfig(asn_db="asn.mmdb", anonymous_db="anon.mmdb")
    assert unprovided_reads(policy, both) == []


def test_shipped_packs_read_no_unprovided_attribute_with_both_databases() -> None:
    policy = load_policy_set(["policies/us-remote-access.yaml", "policies/cn-dual-use-japan.yaml"])
    both = GeoConfig(asn_db="asn.mmdb", anonymous_db="anon.mmdb")
    assert unprovided_reads(policy, both) == []
    lines = unprovided_reads(policy, GeoConfig())
    assert len(lines) == 5 and all("geoip.anonymous_db" in line for line in lines)


def test_validate_warns_with_exit_0_and_fails_with_strict(tmp_path: Path) -> None:
    pol, cfg = _files(tmp_path)
    proc = gk("policy", "validate", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:3] == _expected(pol)
    assert lines[3].startswith("ok: 1 file(s), 3 rule(s), version sha256:")
    assert lines[3].endswith(", 3 warning(s)")
    strict = gk("policy", "validate", "--strict", "--config", str(cfg))
    assert strict.returncode == 1
    assert strict.stdout.splitlines() == _expected(pol)
    assert strict.stderr.strip() == "3 warning(s), --strict"
    # Files without a config: the deployment's sources are not known, nothing to report.
    bare = gk("policy", "validate", str(pol))
    assert bare.returncode == 0 and "warning" not in bare.stdout


def test_serve_logs_unprovided_reads_at_start_up(tmp_path: Path) -> None:
    pol, _ = _files(tmp_path)
    upstream = Upstream(tmp_path)
    try:
        cfg = base_config(tmp_path, upstream.url)
        cfg["policy"] = {"files": [str(pol)], "default_action": "allow"}
        gate = Gate(tmp_path, cfg)
        try:
            err = gate.stderr()
        finally:
            gate.stop()
    finally:
        upstream.stop()
    for line in _expected(pol):
        assert line in err, err
