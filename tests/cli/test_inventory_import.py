"""``gatekeeper inventory import`` offline: saved slurmrestd answers of the conformance lab
(``tests/data/slurm/inventory``), variations of them, and hostile input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatekeeper.cli import main
from gatekeeper.config import parse_config_text
from gatekeeper.gpus import load_gpu_catalog
from gatekeeper.inventory import Inventory, build_inventory
from gatekeeper.inventory_import import parse_gres
from tests.cli.test_cli import gk
from tests.support import repo_root

DATA = repo_root() / "tests" / "data" / "slurm" / "inventory"
CATALOG = load_gpu_catalog(None)
LAB_SHARED = ("gpu", "small", "shared")  # the lab's partitions that are not OverSubscribe=EXCLUSIVE


def saved(what: str, version: str = "v0.0.38") -> dict[str, Any]:
    return dict(json.loads((DATA / f"{what}_{version}.json").read_text()))


def run_import(
    tmp: Path, nodes: Any, partitions: Any, *args: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Write the two answers, run the command in-process; (status, stdout, stderr)."""
    paths = []
    for name, doc in (("nodes", nodes), ("partitions", partitions)):
        path = tmp / f"{name}.json"
        path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
        paths.append(str(path))
    status = main(["inventory", "import", "--nodes-json", paths[0], "--partitions-json",
                   paths[1], *args])  # fmt: skip
    out = capsys.readouterr()
    return status, out.out, out.err


def loaded(text: str) -> Inventory:
    """The output through the gate's own configuration loader and inventory builder."""
    return build_inventory(parse_config_text(text).inventory, CATALOG)


def shared_args(*names: str) -> list[str]:
    return [a for n in names for a in ("--shared", n)]


@pytest.mark.parametrize("version", ["v0.0.37", "v0.0.38"])
def test_lab_answers_give_the_lab_inventory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    status, out, err = run_import(tmp_path, saved("nodes", version), saved("partitions", version),
                                  *shared_args(*LAB_SHARED), capsys=capsys)  # fmt: skip
    assert status == 0, err
    inv = loaded(out)
    got = {p.name: (p.nodes, p.model.name, p.per_node, p.shards_per_gpu, p.max_hours, p.exclusive)
           for p in inv.pools}  # fmt: skip
    assert got == {
        "gpu": (8, "H100-SXM", 8, 4, None, False),
        "small": (1, "H100-SXM", 8, 4, None, False),
        "shared": (2, "H100-SXM", 8, 4, None, False),
        "whole": (2, "H100-SXM", 8, 4, 36.0, True),
    }
    assert all(p.partitions == (p.name,) and p.scheduler == "slurm" for p in inv.pools)


def test_oversubscribe_unreported_is_taken_as_exclusive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_import(tmp_path, saved("nodes"), saved("partitions"), capsys=capsys)
    assert status == 0
    assert all(p.exclusive for p in loaded(out).pools)
    assert "--shared gpu" in out and "does not report OverSubscribe" in out
    status, out, err = run_import(tmp_path, saved("nodes"), saved("partitions"), "--shared",
                                  "gpus", capsys=capsys)  # fmt: skip
    assert status == 2 and "--shared gpus: no such partition" in err


def test_hidden_cloud_nodes_are_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_import(tmp_path, saved("nodes_hidden_cloud"), saved("partitions"),
                                  capsys=capsys)  # fmt: skip
    assert status == 2 and out == ""
    assert 'partition "gpu" has 8 nodes but the node listing shows 1' in err
    assert "PrivateData=cloud" in err and len(err.strip().splitlines()) == 1


def _with_gres(gres: dict[str, str]) -> dict[str, Any]:
    nodes = saved("nodes")
    for node in nodes["nodes"]:
        if node["name"] in gres:
            node["gres"] = gres[node["name"]]
    return nodes


def test_mixed_types_take_the_most_capable_and_the_largest_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = _with_gres({"c1": "gpu:a100:4(S:0-1),mps:400", "c2": "gpu:h100:2,shard:h100:64",
                        "n1": "gpu:l4:10"})  # fmt: skip
    status, out, err = run_import(tmp_path, nodes, saved("partitions"), capsys=capsys)
    assert status == 0, err
    gpu = loaded(out).entry("gpu")
    assert gpu is not None
    assert (gpu.model.name, gpu.per_node) == ("H100-SXM", 10)
    assert (gpu.shards_per_gpu, gpu.mps_per_gpu) == (32, 100)
    assert "nodes carry several types" in out and '"a100" -> A100' in out


def test_untyped_and_uncatalogued_types_name_their_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = _with_gres({"c1": "gpu:8", "c2": "gpu:tesla:8", "c3": "gpu:tesla:8"})
    status, out, err = run_import(tmp_path, nodes, saved("partitions"), capsys=capsys)
    assert status == 2 and out == ""
    assert "untyped GPUs on c1" in err and 'type "tesla" is not in the GPU catalog on c2, c3' in err
    status, out, err = run_import(tmp_path, nodes, saved("partitions"), "--model", "tesla=A100",
                                  "--default-model", "L4", capsys=capsys)  # fmt: skip
    assert status == 0, err
    assert loaded(out).entry("gpu").model.name == "H100-SXM"  # type: ignore[union-attr]
    only = _with_gres({"c3": "gpu:tesla:8", "c4": "gpu:8"})
    status, out, err = run_import(tmp_path, only, saved("partitions"), "--model", "tesla=A100",
                                  "--default-model", "L4", capsys=capsys)  # fmt: skip
    assert status == 0, err
    whole = loaded(out).entry("whole")
    assert whole is not None and whole.model.name == "A100"  # A100 outranks L4
    status, _, err = run_import(tmp_path, nodes, saved("partitions"), "--model", "tesla=K9000",
                                capsys=capsys)  # fmt: skip
    assert status == 2 and "'K9000' is not in the GPU catalog" in err


def test_partitions_without_gpus_are_left_out_and_strays_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = _with_gres({"c5": "(null)", "c6": ""})
    stray = copy.deepcopy(nodes["nodes"][0])
    stray.update(name="x9", partitions=[], gres="gpu:b200:8")  # in no partition: ignored
    nodes["nodes"].append(stray)
    status, out, err = run_import(tmp_path, nodes, saved("partitions"), capsys=capsys)
    assert status == 0, err
    assert [p.name for p in loaded(out).pools] == ["gpu", "small", "whole"]
    assert '# partition "shared": no GPU on any of its nodes; left out' in out
    assert "B200" not in out


def as_data_parser(nodes: dict[str, Any], partitions: dict[str, Any], version: str,
                   oversubscribe: dict[str, int]) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The lab's v0.0.38 answers rewritten in the data_parser shape of v0.0.40+ (no daemon of
    those versions here): only the fields the importer reads, at the paths of SchedMD's
    ``src/plugins/data_parser/v0.0.41/parsers.c`` (slurm-24-05-4-1): node ``name``, ``gres``,
    ``partitions``; partition ``name``, ``nodes/total``, ``maximums/time`` as
    ``{set, infinite, number}``, ``maximums/oversubscribe/jobs`` (``max_share`` without FORCE)."""
    meta = {"plugin": {"type": "openapi/slurmctld", "data_parser": f"data_parser/{version}"}}
    new_nodes = [{"name": n["name"], "gres": n["gres"], "partitions": n["partitions"]}
                 for n in nodes["nodes"]]  # fmt: skip
    new_parts = []
    for p in partitions["partitions"]:
        limit = p["max_time_limit"]
        time = {"set": True, "infinite": limit == -1, "number": max(limit, 0)}
        new_parts.append({"name": p["name"], "nodes": {"total": p["total_nodes"]},
                          "maximums": {"time": time, "oversubscribe":
                                       {"jobs": oversubscribe[p["name"]], "flags": []}}})  # fmt: skip
    return ({"meta": meta, "errors": [], "nodes": new_nodes},
            {"meta": meta, "errors": [], "partitions": new_parts})  # fmt: skip


@pytest.mark.parametrize("version", ["v0.0.40", "v0.0.41", "v0.0.42"])
def test_data_parser_versions_read_oversubscribe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    # max_share: OverSubscribe=NO is 1, YES:4 is 4, EXCLUSIVE is 0
    nodes, parts = as_data_parser(saved("nodes"), saved("partitions"), version,
                                  {"gpu": 1, "small": 1, "shared": 4, "whole": 0})  # fmt: skip
    status, out, err = run_import(tmp_path, nodes, parts, capsys=capsys)
    assert status == 0, err
    inv = loaded(out)
    assert {p.name: p.exclusive for p in inv.pools} == {
        "gpu": False, "small": False, "shared": False, "whole": True}  # fmt: skip
    assert inv.entry("whole").max_hours == 36.0  # type: ignore[union-attr]
    assert "does not report OverSubscribe" not in out
    status, _, err = run_import(tmp_path, nodes, parts, "--shared", "whole", capsys=capsys)
    assert status == 2 and "reports OverSubscribe=EXCLUSIVE" in err
    parts["partitions"][3]["maximums"]["time"] = "Infinity"  # slurmrestd's complex mode
    parts["partitions"][2]["maximums"]["time"] = 90
    status, out, err = run_import(tmp_path, nodes, parts, capsys=capsys)
    assert status == 0, err
    assert loaded(out).entry("whole").max_hours is None  # type: ignore[union-attr]
    assert loaded(out).entry("shared").max_hours == 1.5  # type: ignore[union-attr]
    parts["partitions"][2]["maximums"]["time"] = "soon"
    status, _, err = run_import(tmp_path, nodes, parts, capsys=capsys)
    assert status == 2 and "maximums.time is not a number" in err
    parts["partitions"][2]["maximums"]["time"] = None
    del parts["partitions"][0]["maximums"]["oversubscribe"]  # not said: exclusive
    status, out, err = run_import(tmp_path, nodes, parts, capsys=capsys)
    assert status == 0 and loaded(out).entry("gpu").exclusive  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "gpus", "types", "shards", "mps"),
    [
        ("gpu:h100:8(S:0-1)", 8, {"h100": 8}, 0, 0),
        ("gpu:8", 8, {"": 8}, 0, 0),
        ("gpu:a100:4,shard:16", 4, {"a100": 4}, 16, 0),
        ("gpu:a100:2(S:0),gpu:h100:2(S:1),mps:400", 4, {"a100": 2, "h100": 2}, 0, 400),
        ("gpu:h100:8(S:0-1),shard:h100:32(S:0,1)", 8, {"h100": 8}, 32, 0),
        ("(null)", 0, {}, 0, 0),
        ("craynetwork:4", 0, {}, 0, 0),
    ],
)
def test_gres_strings(text: str, gpus: int, types: dict[str, int], shards: int, mps: int) -> None:
    got = parse_gres(text, "n1")
    assert (got.gpus, got.types, got.shards, got.mps) == (gpus, types, shards, mps)


def _break(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


NODES = saved("nodes")
PARTS = saved("partitions")


@pytest.mark.parametrize(
    ("nodes", "partitions", "message"),
    [
        (b"<html>", PARTS, "not JSON"),
        (NODES, b'{"partitions": ', "not JSON"),
        ([], PARTS, "nodes: not a JSON object"),
        (_break(NODES, ["nodes"], KeyError), PARTS, "'nodes' missing or not a list"),
        (_break(NODES, ["nodes", 0, "name"], KeyError), PARTS, "nodes[0]: 'name' missing"),
        (_break(NODES, ["nodes", 0, "name"], 7), PARTS, "nodes[0]: 'name' missing"),
        (_break(NODES, ["nodes", 1, "gres"], 8), PARTS, "'gres' is not a string"),
        (_break(NODES, ["nodes", 1, "gres"], "gpu:h100:99999"), PARTS, "99999 GPUs, more than"),
        (
            _break(NODES, ["nodes", 1, "gres"], "gpu:h100:8\ninventory: []"),
            PARTS,
            "unreadable gres",
        ),
        (
            _break(NODES, ["nodes", 1, "gres"], "gpu:h100:1,shard:9999999"),
            PARTS,
            "more than 1000000 shares per GPU",
        ),
        (_break(NODES, ["nodes", 1, "gres"], "shard:4"), PARTS, "shards or MPS without GPUs"),
        (_break(NODES, ["nodes", 1, "partitions"], [1]), PARTS, "not a list of names"),
        (_break(NODES, ["nodes", 1, "partitions"], None), PARTS, "not a list or str"),
        (_break(NODES, ["nodes", 1], NODES["nodes"][0]), PARTS, "listed twice"),
        (
            _break(NODES, ["errors"], [{"description": "Access denied"}]),
            PARTS,
            'slurmrestd answered with an error: "Access denied"',
        ),
        (NODES, _break(PARTS, ["partitions", 0, "total_nodes"], "8"), "total_nodes"),
        (NODES, _break(PARTS, ["partitions", 0, "total_nodes"], 10**9), "not 0 to 10000000"),
        (NODES, _break(PARTS, ["partitions", 0, "max_time_limit"], -5), "not a duration"),
        (NODES, _break(PARTS, ["partitions", 0, "max_time_limit"], True), "max_time_limit"),
        (NODES, _break(PARTS, ["meta", "plugin", "type"], "openapi/v0.0.37"), "not v0.0.38"),
        (
            _break(NODES, ["meta", "plugin", "type"], "openapi/v0.0.39"),
            PARTS,
            "version v0.0.39 not supported",
        ),
    ],
)
def test_hostile_answers_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], nodes: Any, partitions: Any, message: str
) -> None:
    status, out, err = run_import(tmp_path, nodes, partitions, capsys=capsys)
    assert status == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_hostile_names_cannot_break_out_of_the_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = 'yes: [1]\n- name: "x'
    nodes = copy.deepcopy(NODES)
    parts = copy.deepcopy(PARTS)
    for node in nodes["nodes"]:
        node["partitions"] = [name if p == "gpu" else p for p in node["partitions"]]
    parts["partitions"][0]["name"] = name
    status, _, err = run_import(tmp_path, nodes, parts, capsys=capsys)
    assert status == 2 and "not a partition name" in err
    parts["partitions"][0]["name"] = nodes["nodes"][0]["partitions"][0] = "on"
    for node in nodes["nodes"]:
        node["partitions"] = ["on" if p == name else p for p in node["partitions"]]
    status, out, err = run_import(tmp_path, nodes, parts, capsys=capsys)
    assert status == 0, err
    assert loaded(out).slurm_partition("on") is not None
    assert yaml.safe_load(out)["inventory"][0]["partitions"] == ["on"]


def test_nodes_are_never_fewer_than_the_listing_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = _break(PARTS, ["partitions", 0, "total_nodes"], 0)  # "gpu" says it has none
    status, out, err = run_import(tmp_path, NODES, parts, capsys=capsys)
    assert status == 0, err
    assert loaded(out).entry("gpu").nodes == 8  # type: ignore[union-attr]


def test_command_line_errors(tmp_path: Path) -> None:
    """As a real process: usage errors and an unreachable server are exit 2, one line."""
    proc = gk("inventory", "import")
    assert proc.returncode == 2 and "give --slurmrestd URL" in proc.stderr
    proc = gk("inventory", "import", "--slurmrestd", "http://127.0.0.1:9", "--version", "v0.0.39")
    assert proc.returncode == 2 and "v0.0.39" in proc.stderr and "not supported" in proc.stderr
    proc = gk("inventory", "import", "--slurmrestd", "file:///etc/passwd")
    assert proc.returncode == 2 and "not an http(s) URL" in proc.stderr
    proc = gk("inventory", "import", "--slurmrestd", "http://127.0.0.1:9")
    assert proc.returncode == 2 and "unreachable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = gk("inventory", "import", "--nodes-json", str(tmp_path / "none.json"),
              "--partitions-json", str(DATA / "partitions_v0.0.38.json"))  # fmt: skip
    assert proc.returncode == 2 and "No such file" in proc.stderr
    out = tmp_path / "inventory.yaml"
    proc = gk("inventory", "import", "--nodes-json", str(DATA / "nodes_v0.0.38.json"),
              "--partitions-json", str(DATA / "partitions_v0.0.38.json"), "--out", str(out),
              "--model", "bad")  # fmt: skip
    assert proc.returncode == 2 and "TYPE=CATALOG_MODEL" in proc.stderr
    proc = gk("inventory", "import", "--nodes-json", str(DATA / "nodes_v0.0.38.json"),
              "--partitions-json", str(DATA / "partitions_v0.0.38.json"), "--out", str(out))  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert len(loaded(out.read_text())) == 4
