"""Re-screening: a new version of the entity data in which one holding ends and one listing
appears. A real ``gatekeeper serve`` reloads it (SIGHUP, then ``POST /v1/reload``); the audit
file, the metric, the admin API and ``gatekeeper entities diff`` all name exactly those entities.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from gatekeeper.audit.verify import verify_files
from gatekeeper.ownership.screening import diff
from tests.e2e.gate import Gate, Upstream, base_config
from tests.support import repo_root

from .helpers import company, owns, registry, write_ftm


def _v1() -> list[dict[str, Any]]:
    return [
        company("x", topics=["sanction"], jurisdiction=["ru"]),
        company("a", jurisdiction=["sg"]),  # 60% held by X: affiliated, X its parent
        company("b", jurisdiction=["ae"]),  # clean
        company("c", jurisdiction=["us"]),  # clean, untouched
        owns("o1", "x", "a", "60"),
    ]


def _v2() -> list[dict[str, Any]]:
    records = _v1()
    records[2] = company("b", jurisdiction=["ae"], topics=["export.control"])  # listed now
    records[4]["properties"]["endDate"] = ["2020-06"]  # the holding ended
    return records


EXPECTED = {
    "ftm:a": (
        ["affiliated", "ultimate_parent", "parent_hq_country"],
        {"affiliated": True, "ultimate_parent": "ftm:x", "parent_hq_country": "RU"},
        {"affiliated": False, "ultimate_parent": "ftm:a", "parent_hq_country": "SG"},
    ),
    "ftm:b": (
        ["listed", "affiliated", "flags"],
        {"listed": False, "affiliated": False, "flags": []},
        {"listed": True, "affiliated": True, "flags": ["entity_list"]},
    ),
}


def _check(records: list[dict[str, Any]]) -> None:
    assert [r["entity"] for r in records] == sorted(EXPECTED)
    for r in records:
        fields, before, after = EXPECTED[r["entity"]]
        assert r["type"] == "screening"
        assert r["changes"] == fields
        for key, want in before.items():
            assert r["before"][key] == want, (r["entity"], key)
        for key, want in after.items():
            assert r["after"][key] == want, (r["entity"], key)
        assert r["entities_version"]["before"] != r["entities_version"]["after"]


def test_diff_names_exactly_the_changed_entities(tmp_path: Path) -> None:
    path = tmp_path / "e.ftm.json"
    write_ftm(path, _v1())
    old = registry((str(path), "ftm"))
    write_ftm(path, _v2())
    new = registry((str(path), "ftm"))
    _check([c.record_body(old.version, new.version) for c in diff(old, new)])
    assert diff(new, new) == []


def test_diff_added_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "e.ftm.json"
    write_ftm(path, [company("a"), company("b")])
    old = registry((str(path), "ftm"))
    write_ftm(path, [company("a"), company("n", topics=["sanction"])])
    new = registry((str(path), "ftm"))
    got = [(c.entity, c.changes, c.before is None, c.after is None) for c in diff(old, new)]
    assert got == [("ftm:b", ("removed",), False, True), ("ftm:n", ("added",), True, False)]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str) -> Any:
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _metric(admin: str, change: str) -> float:
    with urllib.request.urlopen(admin + "/metrics", timeout=10) as r:
        text = r.read().decode()
    prefix = f'gatekeeper_screening_changes_total{{change="{change}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def _screening(audit: Path) -> list[dict[str, Any]]:
    out = []
    for line in audit.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "screening":
            out.append(rec)
    return out


def _wait(cond: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def served(tmp_path: Path) -> Any:
    up = Upstream(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    write_ftm(data / "entities.ftm.json", _v1())
    cfg = base_config(tmp_path, up.url)
    cfg["entities"] = {"sources": [{"path": str(data / "entities.ftm.json"), "format": "ftm"}]}
    gate = Gate(tmp_path, cfg)
    try:
        yield gate, data / "entities.ftm.json", tmp_path / "audit.jsonl"
    finally:
        gate.stop()
        up.stop()


def test_reload_writes_counts_and_lists_the_changes(served: Any, tmp_path: Path) -> None:
    gate, entities, audit = served
    old_copy = tmp_path / "before"
    old_copy.mkdir()
    (old_copy / entities.name).write_bytes(entities.read_bytes())
    first = _get(gate.admin_url + "/v1/screening")
    assert first["reloads"] == [] and first["data_version"].startswith("sha256:")

    # A decision names the data version it used.
    with urllib.request.urlopen(gate.url + "/hello", timeout=10) as r:
        assert r.status == 200
    _wait(
        lambda: any(json.loads(ln).get("decision") for ln in audit.read_text().splitlines()),
        "a decision",
    )
    decision = next(
        json.loads(ln)["decision"]
        for ln in audit.read_text().splitlines()
        if json.loads(ln).get("decision")
    )
    assert decision["data_version"] == first["data_version"]

    write_ftm(entities, _v2())
    gate.signal(signal.SIGHUP)
    _wait(lambda: len(_screening(audit)) == 2, "two screening records")
    records = _screening(audit)
    _check(records)
    for key in ("seq", "ts", "replica", "prev_hash", "hash"):
        assert all(key in r for r in records)  # chained like any record
    assert verify_files([str(audit)]).ok
    assert _metric(gate.admin_url, "affiliated") == 2
    assert _metric(gate.admin_url, "listed") == 1
    assert _metric(gate.admin_url, "ultimate_parent") == 1
    assert _metric(gate.admin_url, "flags") == 1
    assert _metric(gate.admin_url, "added") == 0
    listed = _get(gate.admin_url + "/v1/screening")
    (reload,) = listed["reloads"]
    assert reload["changed"] == 2 and reload["audit_records"] == 2
    _check(reload["changes"])
    assert listed["data_version"] != first["data_version"]
    # the records name the data versions decisions carried before and after the change
    assert {r["data_version"]["before"] for r in records} == {first["data_version"]}
    assert {r["data_version"]["after"] for r in records} == {listed["data_version"]}
    assert reload["data_version"]["after"] == listed["data_version"]

    # The same data again: nothing changed, nothing written.
    assert _post(gate.admin_url + "/v1/reload")["reloaded"] is True
    assert len(_get(gate.admin_url + "/v1/screening")["reloads"]) == 2
    assert len(_screening(audit)) == 2

    # Offline: the same changes, as JSON lines.
    out = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "entities", "diff", "--config", str(gate.path),
         "--before", str(old_copy)],
        cwd=repo_root(), capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [orjson.loads(ln) for ln in out.stdout.splitlines()]
    _check(lines)
    assert [(x["before"], x["after"]) for x in lines] == [
        (r["before"], r["after"]) for r in records
    ]


def test_entities_diff_cli_errors(tmp_path: Path) -> None:
    data = tmp_path / "e.ftm.json"
    write_ftm(data, _v1())
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        orjson.dumps({"entities": {"sources": [{"path": str(data), "format": "ftm"}]}}).decode()
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gatekeeper", "entities", "diff", "--config", str(cfg), *args],
            cwd=repo_root(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    same = run("--before", str(data))
    assert same.returncode == 0 and same.stdout == ""
    missing = run("--before", str(tmp_path / "nowhere.json"))
    assert missing.returncode == 2
    assert "nowhere.json: --before: no such file" in missing.stderr
    for name in ("one.json", "two.json"):
        (tmp_path / name).write_bytes(data.read_bytes())
    renamed = run("--before", str(tmp_path / "one.json"))  # one file for one source: by order
    assert renamed.returncode == 0 and renamed.stdout == ""
    two = run("--before", str(tmp_path / "one.json"), str(tmp_path / "two.json"))
    assert two.returncode == 2 and "give a directory or one file per source" in two.stderr
    bad_day = run("--before", str(data), "--as-of", "yesterday")
    assert bad_day.returncode == 2 and "'yesterday' is not a date" in bad_day.stderr
    broken = tmp_path / "old"
    broken.mkdir()
    (broken / data.name).write_text("{not json\n")
    assert run("--before", str(broken)).returncode == 2


async def test_watcher_reloads_once_a_change_settles(tmp_path: Path) -> None:
    import asyncio

    from gatekeeper.ownership.watch import watch_sources

    path = tmp_path / "e.json"
    path.write_text("v1")
    calls: list[str] = []

    async def reload() -> bool:
        calls.append(path.read_text() if path.exists() else "<gone>")
        return True

    task = asyncio.create_task(watch_sources([str(path)], 0.05, reload))
    try:
        await asyncio.sleep(0.3)
        assert calls == []  # nothing changed
        path.write_text("v2 longer")
        for _ in range(200):
            if calls:
                break
            await asyncio.sleep(0.05)
        assert calls == ["v2 longer"]
        path.unlink()
        for _ in range(200):
            if len(calls) == 2:
                break
            await asyncio.sleep(0.05)
        assert calls == ["v2 longer", "<gone>"]  # a vanished source is a change too
    finally:
        task.cancel()


def test_config_watch_interval(tmp_path: Path) -> None:
    from gatekeeper.config import load_config
    from gatekeeper.errors import ConfigError

    cfg = tmp_path / "g.yaml"
    cfg.write_text("entities:\n  watch_interval_s: -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(cfg))
    assert "g.yaml:2: entities.watch_interval_s: must be between 0 and 86400 (got -1.0)" in str(
        err.value
    )


def test_changed_files_are_reloaded_and_rescreened(tmp_path: Path) -> None:
    """No SIGHUP: the gate sees the file change (entities.watch_interval_s) and re-screens."""
    up = Upstream(tmp_path)
    path = tmp_path / "entities.ftm.json"
    write_ftm(path, _v1())
    cfg = base_config(tmp_path, up.url)
    cfg["entities"] = {
        "sources": [{"path": str(path), "format": "ftm"}],
        "watch_interval_s": 0.2,
    }
    gate = Gate(tmp_path, cfg)
    try:
        tmp = tmp_path / "next.json"
        write_ftm(tmp, _v2())
        tmp.replace(path)  # dropped into place, as a cron job would
        audit = tmp_path / "audit.jsonl"
        try:
            _wait(lambda: len(_screening(audit)) == 2, "two screening records")
        except AssertionError:
            raise AssertionError(gate.stderr()) from None
        _check(_screening(audit))
        assert _metric(gate.admin_url, "listed") == 1
    finally:
        gate.stop()
        up.stop()


def test_audit_tail_shows_screening_records() -> None:
    from gatekeeper.audit.tail import action_of, format_record

    rec = {
        "type": "screening",
        "seq": 7,
        "ts": "2026-11-25T20:01:02.345678Z",
        "entity": "ftm:b\x1b[2J",
        "changes": ["listed", "affiliated\x07"],
    }
    assert action_of(rec) == "screening"
    line = format_record(rec)
    assert line.startswith("2026-11-25T20:01:02.345Z  screening        listed,affiliated")
    assert line.endswith("entity=ftm:b[2J") and "\x1b" not in line and "\x07" not in line
    assert "entity=-" in format_record({"type": "screening", "changes": "x"})


def test_entities_show_prints_unknown_holdings(tmp_path: Path) -> None:
    data = tmp_path / "e.ftm.json"
    write_ftm(
        data,
        [
            company("x", topics=["sanction"]),
            company("a"),
            owns("o1", "x", "a"),  # no percentage: a holding of unknown size
        ],
    )
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        orjson.dumps({"entities": {"sources": [{"path": str(data), "format": "ftm"}]}}).decode()
    )
    out = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "entities", "show", "--config", str(cfg), "ftm:a"],
        cwd=repo_root(), capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    shown = orjson.loads(out.stdout)
    assert shown["affiliated"] is False and shown["possibly_affiliated"] is True
    assert shown["unknown_share_edges"] == [{"owner": "ftm:x"}]


def test_serve_with_published_csl(tmp_path: Path) -> None:
    """One unreadable CSL row: reported and skipped, the gate serves; a file that is not CSL at
    all stops it with a configuration error (exit 2) naming the file."""
    up = Upstream(tmp_path)
    good = (repo_root() / "tests" / "data" / "entities" / "csl_current.csv").read_bytes()
    csl = tmp_path / "csl.csv"
    csl.write_bytes(good + b"broken,row\n")
    cfg = base_config(tmp_path, up.url)
    cfg["entities"] = {"sources": [{"path": str(csl), "format": "csl"}]}
    try:
        gate = Gate(tmp_path, cfg)
        try:
            assert _get(gate.admin_url + "/healthz")["status"] == "ok"
        finally:
            assert gate.stop() == 0
        csl.write_text("name,country\nAcme,CN\n")
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(cfg))
        out = subprocess.run(
            [sys.executable, "-m", "gatekeeper", "serve", "--config", str(bad)],
            cwd=repo_root(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 2
        assert f"{csl}:1: header lacks column(s): source" in out.stderr
    finally:
        up.stop()
