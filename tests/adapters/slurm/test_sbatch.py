"""The ``#SBATCH`` reader (sbatch's rules) and the host-list counter, on ordinary and hostile input."""

from __future__ import annotations

import pytest

from gatekeeper.adapters.slurm.gres import GpuSpec, count_hosts, parse_gpus_option, parse_tres
from gatekeeper.adapters.slurm.sbatch import block_arguments, read_options, read_script
from gatekeeper.errors import BadRequest

READ: list[tuple[str, list[tuple[str, str | None]]]] = [
    ("#SBATCH -N 4\n", [("nodes", "4")]),
    ("#SBATCH -n8 -c 2\n", [("ntasks", "8"), ("cpus-per-task", "2")]),
    ("#SBATCH --gpus-per-nod=8\n", [("gpus-per-node", "8")]),
    ("#SBATCH --gpus-per-node 8\n", [("gpus-per-node", "8")]),
    ("#SBATCH --mem=4G\n", [("mem", "4G")]),  # an exact name wins over --mem-bind etc.
    ("#SBATCH --exclusive\n", [("exclusive", None)]),
    ("#SBATCH --exclusive=user\n", [("exclusive", "user")]),
    ("#SBATCH -HvN2\n", [("hold", None), ("verbose", None), ("nodes", "2")]),
    ("#SBATCH -wgpu[1-2]\n", [("nodelist", "gpu[1-2]")]),
    ("#SBATCH --job-name 'a b' # --gpus=9\n", [("job-name", "a b")]),
    ('#SBATCH --comment="x # y"\n', [("comment", "x # y")]),
    ("#SBATCH --comment=a\\ b\n", [("comment", "a b")]),
    ("#SBATCH --comment=a#b --gpus=9\n", [("comment", "a")]),
    ("#SBATCH -t\n#SBATCH 10\n", [("time", "10")]),
    ("#SBATCH --gres=gpu:1 --\n", [("gres", "gpu:1")]),
    ("#!/bin/sh\n\n# x\n#SBATCH -G1\necho\n#SBATCH -G8\n", [("gpus", "1")]),
    ("#!/bin/sh\n  #SBATCH -G8\n#SBATCH -G2\n", [("gpus", "2")]),
    ("#SLURM -G3\n", [("gpus", "3")]),
    ("#SBATCH\n#SBATCH   \n", []),
    ("#!/bin/sh\nsrun x\n", []),
    ("#SBATCH -N 2\r\n#SBATCH -G 1\r\n", [("nodes", "2"), ("gpus", "1")]),
]


@pytest.mark.parametrize(("script", "options"), READ, ids=[r[0][:30] for r in READ])
def test_read(script: str, options: list[tuple[str, str | None]]) -> None:
    assert read_script(script) == ([options] if options else [])


def test_hetjob_separators_start_components() -> None:
    script = "#SBATCH -G1\n#SBATCH hetjob -G 8\n#SBATCH -N 2\n#SBATCH packjob\n#SBATCH -n 3\n"
    assert read_script(script) == [
        [("gpus", "1")],
        [("gpus", "8"), ("nodes", "2")],
        [("ntasks", "3")],
    ]
    assert read_script("#SBATCH hetjob\n#SBATCH -G 2\n") == [[], [("gpus", "2")]]
    with pytest.raises(BadRequest) as exc:
        read_script("#SBATCH hetjob\n" * 129)
    assert exc.value.detail == "more than 128 job components"


BAD: list[tuple[str, str]] = [
    ("#SBATCH --foo=1\n", "script:#SBATCH --foo: unknown sbatch option"),
    ("#SBATCH -Z\n", "script:#SBATCH -Z: unknown sbatch option"),
    ("#SBATCH --gpus-per=1\n", "script:#SBATCH --gpus-per: ambiguous prefix of gpus-per-node, "
     "gpus-per-socket, gpus-per-task"),
    ("#SBATCH --ntasks-per=1\n", "ambiguous prefix"),
    ("#SBATCH --hold=yes\n", "script:#SBATCH --hold=yes: option takes no value"),
    ("#SBATCH --gpus\n", "script:#SBATCH --gpus: missing value"),
    ("#SBATCH -N\n", "script:#SBATCH -N: missing value"),
    ("#SBATCH gpus\n", "script:#SBATCH gpus: not an option (sbatch refuses it)"),
    ("#SBATCH -\n", "script:#SBATCH -: not an option"),
    ("#SBATCH -G 1 -- -G 8\n", "script:#SBATCH -G: argument after the end of options"),
    ("#SBATCH --comment='x\n", "script:#SBATCH --comment='x: unmatched '"),
    ("#SBATCH --=1\n", "script:#SBATCH --: unknown sbatch option"),
]  # fmt: skip


@pytest.mark.parametrize(("script", "message"), BAD, ids=[b[0][:30] for b in BAD])
def test_refused(script: str, message: str) -> None:
    with pytest.raises(BadRequest) as exc:
        read_script(script)
    assert exc.value.reason == "unmeasurable-request"
    assert message in exc.value.detail, exc.value.detail


def test_oversized_blocks_are_refused() -> None:
    with pytest.raises(BadRequest) as exc:
        read_script("#SBATCH " + "-H " * 2001 + "\n")
    assert (exc.value.reason, exc.value.detail) == (
        "bad-script",
        "more than 2000 #SBATCH arguments",
    )
    with pytest.raises(BadRequest) as exc:
        block_arguments("#SBATCH " + "x" * 70_000)  # one line
    assert exc.value.detail.endswith("directive line too long")
    # A long script whose block ends early is read only up to its end.
    assert read_script("#SBATCH -G 1\nsrun x\n" + "#SBATCH --nope\n" * 100_000) == [[("gpus", "1")]]


def test_options_are_read_across_lines_like_one_command_line() -> None:
    assert read_options(["--nodes", "2", "-G", "1"]) == [("nodes", "2"), ("gpus", "1")]


GPU_STRINGS: list[tuple[str, list[GpuSpec]]] = [
    ("gres/gpu:h100:8", [GpuSpec(8, "h100")]),
    ("gres/gpu=8,cpu=4", [GpuSpec(8)]),
    ("gres/gpu:a100=2", [GpuSpec(2, "a100")]),
    ("gres:gpu:2", [GpuSpec(2)]),
    ("gpu", [GpuSpec(1)]),
    ("gres/shard:4", [GpuSpec(4, None, "shard")]),
    ("mps:100", [GpuSpec(100, None, "mps")]),
    ("gres/gpu:2,gres/shard:1,license/x:1,gres/nic:1", [GpuSpec(2), GpuSpec(1, None, "shard")]),
    ("gpu:1k", [GpuSpec(1024)]),
    ("none", []),
]


@pytest.mark.parametrize(("text", "specs"), GPU_STRINGS, ids=[g[0] for g in GPU_STRINGS])
def test_tres_strings(text: str, specs: list[GpuSpec]) -> None:
    assert parse_tres(text) == specs


@pytest.mark.parametrize("text", ["gres/gpu:a:b:c", "gpu:x=y=z", "gpu:1:2:3", "gpu=x"])
def test_bad_tres_strings(text: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_tres(text)
    assert exc.value.reason == "unknown-gpu-syntax"


def test_gpus_option() -> None:
    assert parse_gpus_option("gpu:h100:2,a100:1") == [GpuSpec(2, "h100"), GpuSpec(1, "a100")]
    with pytest.raises(BadRequest) as exc:
        parse_gpus_option("h100")
    assert exc.value.detail == "GPU count missing in 'h100'"
    with pytest.raises(BadRequest) as exc:
        parse_gpus_option("1," * 3000)
    assert exc.value.detail == "GPU request too long"


HOSTS = [
    ("gpu01", 1),
    ("gpu[01-04,07]", 5),
    ("a,b,c[1-3]", 5),
    ("r[1-2]n[1-3]", 6),
    ("gpu[1-1]", 1),
    ("a,,b", 2),
]


@pytest.mark.parametrize(("text", "count"), HOSTS, ids=[h[0] for h in HOSTS])
def test_host_counts(text: str, count: int) -> None:
    assert count_hosts(text, "job.required_nodes") == count


HOSTILE = [
    ("gpu[01-", "job.required_nodes: unbalanced host list"),
    ("gpu]", "job.required_nodes: unbalanced host list"),
    ("gpu[[1]]", "job.required_nodes: nested brackets in host list"),
    ("gpu[4-1]", "job.required_nodes: bad host range '4-1'"),
    ("gpu[a-b]", "job.required_nodes: cannot read host list 'gpu[a-b]'"),
    ("/etc/hosts", "job.required_nodes: cannot read host list '/etc/hosts'"),
    ("n[0-999999999]", "job.required_nodes: host list too long"),
    ("n[1-9]" * 1000, "job.required_nodes: cannot read host list"),
]


@pytest.mark.parametrize(("text", "message"), HOSTILE, ids=[h[0][:20] for h in HOSTILE])
def test_hostile_host_lists(text: str, message: str) -> None:
    with pytest.raises(BadRequest) as exc:
        count_hosts(text, "job.required_nodes")
    assert exc.value.reason == "unmeasurable-request"
    assert exc.value.detail.startswith(message), exc.value.detail
