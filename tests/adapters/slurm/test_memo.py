"""The Slurm adapter's memos change no answer: each memoised reading (GPU strings, host lists,
``#SBATCH`` blocks, request paths) agrees with the plain parser on first sight and on every
repeat, refusals included, and what a memo holds cannot be changed through what it hands out."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.adapters import measure
from gatekeeper.adapters.slurm import (
    _BLOCKS,
    _BY_SCRIPT,
    _endpoint,
    _read_blocks,
    _read_path,
    _script_asks,
)
from gatekeeper.adapters.slurm.gres import (
    count_hosts,
    gpus_option_specs,
    host_count,
    parse_gpus_option,
    parse_tres,
    tres_specs,
)
from gatekeeper.adapters.slurm.sbatch import block_text, read_script
from gatekeeper.errors import BadRequest
from gatekeeper.memo import Memo

from ..helpers import CATALOG
from .cases import ENV, INVENTORY, PLAIN, V41

# Text built from the pieces these parsers read, so that most examples parse and many do not.
GPU_TEXT = st.lists(
    st.sampled_from(
        ["gres/", "gres:", "gpu", "shard", "mps", ":", "=", ",", "h100", "8", "2k", "cpu=4", "x"]
    ),
    max_size=8,
).map("".join)
HOST_TEXT = st.lists(
    st.sampled_from(["gpu", "n", "[", "]", "01", "-", "04", ",", "7", "x.y", " "]), max_size=10
).map("".join)
SCRIPT_LINES = [
    "#SBATCH --gres=gpu:h100:8",
    "#SBATCH -N 4",
    "#SBATCH --exclusive",
    "#SBATCH --gpus-per-nod=2",
    "#SBATCH -w gpu[01-02] --ntasks-per-gpu=2 -n8",
    "#SBATCH hetjob",
    "#SBATCH --time=1-00:00:00 --array=0-3",
    "#SBATCH --nope",
    "#SBATCH --cluster=far",
    "#SBATCH -N",
    "# a comment",
    "",
    "srun train",
    "  # an indented comment",
    " \t ",
    "\r",
    "\tsrun other",
    " #SBATCH -N 64",
    "#SBATCH -G 2\r",
    "#SBATCH --gpus=9 # trailing comment",
    "\u00a0srun x",  # Unicode spaces: what str.lstrip strips, and line breaks Python knows
    "\u2003",
    "\x0b#SBATCH -N 3",
    "#SBATCH -N 1\x85cmd",
    "#SBATCH -N 1\u2028-G 4",
]
SCRIPT = st.lists(st.sampled_from(SCRIPT_LINES), max_size=6).map(
    lambda lines: "#!/bin/bash\n" + "\n".join(lines) + "\n"
)
PATH = st.builds(
    lambda version, rest: f"/slurm/{version}/{rest}",
    st.sampled_from(["v0.0.37", "v0.0.39", "v0.0.41", "v0.0.42", "v0.0.99", "v1"]),
    st.sampled_from(["job/submit", "job/allocate", "job/17", "job/17/", "jobs", "job/submit?x=1"]),
)


def outcome(fn: Callable[[], Any]) -> Any:
    """What a call returns, or the refusal it raises (reason and message)."""
    try:
        return ("ok", fn())
    except BadRequest as e:
        return ("refused", e.reason, str(e))


def agree(plain: Callable[[], Any], memoised: Callable[[], Any]) -> None:
    expected = outcome(plain)
    assert outcome(memoised) == expected  # first sight (a miss, unless seen before)
    assert outcome(memoised) == expected  # a repeat (a hit when it parsed)


@settings(max_examples=300, deadline=None)
@given(GPU_TEXT)
def test_gpu_strings_agree(text: str) -> None:
    agree(lambda: tuple(parse_tres(text)), lambda: tres_specs(text))
    agree(lambda: tuple(parse_gpus_option(text)), lambda: gpus_option_specs(text))


@settings(max_examples=300, deadline=None)
@given(HOST_TEXT)
def test_host_lists_agree(text: str) -> None:
    agree(
        lambda: count_hosts(text, "job.required_nodes"),
        lambda: host_count(text, "job.required_nodes"),
    )
    # a refusal names the caller's field, never one remembered from an earlier call
    agree(lambda: count_hosts(text, "job.nodelist"), lambda: host_count(text, "job.nodelist"))


@settings(max_examples=200, deadline=None)
@given(SCRIPT)
def test_script_blocks_agree(text: str) -> None:
    agree(lambda: _read_blocks(text), lambda: _script_asks(text, "script")[1])


@settings(max_examples=300, deadline=None)
@given(SCRIPT)
def test_block_text_holds_all_sbatch_reads(text: str) -> None:
    block = block_text(text)
    assert text.startswith(block)
    agree(lambda: read_script(text), lambda: read_script(block))


def test_block_text_stops_before_the_first_command() -> None:
    assert block_text("#!/bin/sh\n#SBATCH -N 2\n\n  # x\nsrun a\n#SBATCH -G 8\n") == (
        "#!/bin/sh\n#SBATCH -N 2\n\n  # x"
    )
    assert block_text("srun a\n#SBATCH -G 8") == ""
    assert block_text("#SBATCH -G 8") == "#SBATCH -G 8"
    assert block_text("") == ""


@settings(max_examples=100, deadline=None)
@given(st.integers(4070, 4110), st.sampled_from(["srun x", "   x", " ", "#SBATCH -G 3", "\n"]))
def test_long_scripts_agree(size: int, tail: str) -> None:
    # a block near the memo's text limit, with the line after it cut anywhere by the limit
    head = "#!/bin/bash\n#SBATCH -N 2\n"
    text = head + "#" * (size - len(head)) + "\n" + tail + "\n#SBATCH --gpus=7\n"
    agree(lambda: _read_blocks(text), lambda: _script_asks(text, "script")[1])


@settings(max_examples=200, deadline=None)
@given(PATH)
def test_paths_agree(path: str) -> None:
    agree(lambda: _read_path(path), lambda: _endpoint(path))


def test_measuring_never_changes_a_remembered_block() -> None:
    # the memo hands out its own readings: measurement only reads them (overlay copies)
    scripts = [
        "#!/bin/bash\n#SBATCH --gres=gpu:8 -N 2\n",
        "#!/bin/bash\n#SBATCH --exclusive -p a100\n#SBATCH hetjob -G 2\nsrun x\n",
        "#!/bin/bash\n#SBATCH --gpus-per-task=1 -n 4 --ntasks-per-gpu=2\n",
    ]
    jobs = [{"partition": "gpu", "tres_per_node": "gres/gpu:4", "nodes": "3"}, {}]
    for script in scripts:
        for job in jobs:
            for body in (
                {"job": {**ENV, **job, "script": script}},
                {"jobs": [job, job], "script": script},
            ):
                with contextlib.suppress(BadRequest):
                    measure(PLAIN, "POST", V41, {}, json.dumps(body).encode(), CATALOG, INVENTORY)
    for script in scripts:
        block, held = _BY_SCRIPT[script]
        assert held == _read_blocks(script) == _BLOCKS.cache[block]
    assert _script_asks(scripts[0], "script") == (scripts[0], _read_blocks(scripts[0]))


def test_memo_stays_bounded_and_skips_long_texts() -> None:
    memo = Memo(len, max_text=4, max_entries=3)
    for text in ("a", "b", "c", "d", "eeeee"):
        assert memo(text) == len(text)
    assert memo.cache == {"d": 1}  # full at three: emptied before the fourth; "eeeee" too long
