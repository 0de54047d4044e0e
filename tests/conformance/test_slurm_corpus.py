"""A generated corpus through the gate to the real slurmrestd (see ``test_slurm_real``).

hypothesis draws job descriptions over the fields of the v0.0.36-38 job properties that reach GPUs
(per-job, per-node, per-task and per-socket GPU counts, ``gres`` with GPUs or shards, tasks,
node counts and ranges, arrays, whole-node ``exclusive``, partitions), in the key case and
wrappers (``job``, ``jobs``, both) the older plugins accept. Each body is submitted through a real
gate to begin a day later (validated like any job, never scheduled); slurmctld's requested TRES for the job (see ``scheduler_gpus``) is the truth. Bodies
slurmrestd refuses are counted and not compared; bodies the gate refuses are safe and counted.

Two corpora: ``plain`` bodies (one GPU source, lower-case keys, ``job`` wrapper, explicit node
counts), which the gate must measure exactly, and ``all`` bodies, which it must never measure
below slurmctld. The counts are printed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conformance.slurm_gate import (
    BASE_JOB,
    LATER,
    SCRIPT,
    GateProbe,
    never_runs,
    scheduler_gpus,
)
from tests.conformance.slurm_lab import SlurmLabError

PLAIN_EXAMPLES = 1000
ALL_EXAMPLES = 1200
CANCEL_EVERY = 400  # pending jobs cancelled in batches (slurmctld keeps them cheaply meanwhile)


@dataclass
class Tally:
    """What a corpus run found."""

    tried: int = 0
    compared: int = 0
    slurm_refused: int = 0
    never_runs: int = 0
    rest_crashed: list[str] = field(default_factory=list)
    gate_refused: Counter[str] = field(default_factory=Counter)
    under: list[tuple[str, float, int]] = field(default_factory=list)
    unequal: list[tuple[str, float, int]] = field(default_factory=list)

    def line(self, name: str) -> str:
        return (
            f"slurm corpus {name}: {self.tried} bodies, {self.compared} compared, "
            f"{self.slurm_refused} refused by slurmrestd, "
            f"{self.never_runs} asking for more nodes than their partition has, "
            f"{len(self.rest_crashed)} crashed slurmrestd, "
            f"{sum(self.gate_refused.values())} refused by the gate {dict(self.gate_refused)}, "
            f"{len(self.under)} below slurmctld, {len(self.unequal)} plain not equal"
        )


def _count(n: int) -> st.SearchStrategy[int]:
    return st.integers(min_value=1, max_value=n)


GPU_SOURCES: dict[str, st.SearchStrategy[Any]] = {
    "gpus": _count(16),
    "gpus_per_node": _count(8),
    "gpus_per_task": _count(4),
    "gres": st.one_of(
        _count(8).map(lambda n: f"gpu:{n}"),
        _count(8).map(lambda n: f"gpu:h100:{n}"),
        _count(8).map(lambda n: f"gres:gpu:{n}"),
    ),
}
SHARES = _count(32).map(lambda n: f"shard:{n}")
NODE_COUNTS = st.one_of(
    _count(4),
    st.tuples(_count(2), _count(3)).map(lambda t: f"{t[0]}-{t[0] + t[1]}"),
)
ARRAYS = st.one_of(
    st.integers(0, 5).map(lambda k: f"0-{k}"),
    st.integers(1, 5).map(lambda k: f"0-{k}%2"),
    st.lists(st.integers(0, 9), min_size=1, max_size=4, unique=True).map(
        lambda xs: ",".join(map(str, sorted(xs)))
    ),
)


@st.composite
def plain_bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """One GPU source, an explicit node count, lower-case keys, the ``job`` wrapper."""
    source = draw(st.sampled_from(sorted(GPU_SOURCES)))
    desc: dict[str, Any] = {source: draw(GPU_SOURCES[source])}
    desc["nodes"] = draw(_count(4))
    if source == "gpus_per_task":
        desc["tasks"] = draw(_count(8))
    if draw(st.booleans()):
        desc["array"] = draw(ARRAYS)
    version = draw(st.sampled_from(["v0.0.37", "v0.0.38"]))
    return version, {"job": {**BASE_JOB, **desc, **LATER}, "script": SCRIPT}


def _recase(key: str, how: int) -> str:
    return [key, key.upper(), key.title(), key.capitalize()][how]


@st.composite
def any_bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """Any mix of the fields that reach GPUs, in any key case the plugins accept."""
    desc: dict[str, Any] = {}
    for source in draw(st.sets(st.sampled_from(sorted(GPU_SOURCES)), max_size=3)):
        desc[source] = draw(GPU_SOURCES[source])
    if "gres" not in desc and draw(st.integers(0, 3)) == 0:
        desc["gres"] = draw(SHARES)
    optional = {
        "nodes": NODE_COUNTS,
        "tasks": _count(16),
        "tasks_per_node": _count(4),
        "sockets_per_node": _count(2),
        "gpus_per_socket": _count(4),
        "array": ARRAYS,
        "exclusive": st.sampled_from(["exclusive", "user", "mcs", "oversubscribe"]),
        "partition": st.sampled_from(["gpu", "small", "shared"]),
    }
    for key in draw(st.sets(st.sampled_from(sorted(optional)), max_size=4)):
        desc[key] = draw(optional[key])
    # the older plugins read keys without regard to case
    if desc and draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(sorted(desc)))
        desc[_recase(key, draw(st.integers(1, 3)))] = desc.pop(key)
    job = {**BASE_JOB, **desc, **LATER}
    wrap = draw(st.sampled_from(["job", "job", "jobs", "both"]))
    version = draw(st.sampled_from(["v0.0.36", "v0.0.37", "v0.0.38"]))
    if wrap == "job":
        return version, {"job": job, "script": SCRIPT}
    other = {**BASE_JOB, **LATER, "gpus": draw(_count(4))}
    if wrap == "jobs":
        return version, {"jobs": [job, other], "script": SCRIPT}
    return version, {"job": job, "jobs": [other], "script": SCRIPT}


def _is_plain(body: dict[str, Any]) -> bool:
    return "jobs" not in body


def run_corpus(
    probe: GateProbe, strategy: st.SearchStrategy[Any], examples: int, *, plain: bool
) -> Tally:
    tally = Tally()
    lab = probe.lab

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same corpus on every run: CI reproduces what a developer saw
        phases=[Phase.generate],  # every body is recorded, none is asserted inside: no shrinking
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(drawn: tuple[str, dict[str, Any]]) -> None:
        version, body = drawn
        tally.tried += 1
        if tally.tried % CANCEL_EVERY == 0:
            lab.cancel_all()
        result = probe.submit(body, version)
        text = f"{version} {json.dumps(body, sort_keys=True)}"
        if result.status >= 500 and lab.restart_rest_if_dead():
            tally.rest_crashed.append(text)  # a slurmrestd bug: no job, nothing to compare
            return
        if result.refused and result.reasons and result.reasons[0].startswith("upstream"):
            # the gate measured and forwarded; slurmrestd was down (restarting after a crash)
            tally.rest_crashed.append(text)
            return
        if result.refused:
            tally.gate_refused[result.reasons[0] if result.reasons else "?"] += 1
            return
        if result.status != 200 or result.job_id is None:
            tally.slurm_refused += 1
            return
        try:
            granted = lab.granted(result.job_id)
        except SlurmLabError:
            tally.slurm_refused += 1  # accepted, then gone (e.g. refused at scheduling)
            return
        if never_runs(granted):
            tally.never_runs += 1  # slurmctld keeps it pending for ever: nothing is granted
            return
        slurm = scheduler_gpus(granted)
        tally.compared += 1
        gate = result.gate_gpus or 0.0
        if gate < slurm:
            tally.under.append((text, gate, slurm))
        elif plain and gate != slurm:
            tally.unequal.append((text, gate, slurm))

    one()
    lab.cancel_all()
    return tally


def _report(tally: Tally, name: str) -> str:
    lines = [tally.line(name)]
    for text, gate, slurm in (tally.under + tally.unequal)[:40]:
        lines.append(f"  gate {gate} slurmctld {slurm}: {text}")
    for text in tally.rest_crashed[:5]:
        lines.append(f"  crashed slurmrestd: {text}")
    return "\n".join(lines)


def test_corpus_plain_bodies_are_measured_exactly(
    slurm_probe: GateProbe, capsys: pytest.CaptureFixture[str]
) -> None:
    tally = run_corpus(slurm_probe, plain_bodies(), PLAIN_EXAMPLES, plain=True)
    with capsys.disabled():
        print("\n" + _report(tally, "plain"))
    assert tally.compared >= PLAIN_EXAMPLES // 2, _report(tally, "plain")
    assert not tally.under and not tally.unequal, _report(tally, "plain")


def test_corpus_any_body_is_never_measured_below_slurm(
    slurm_probe: GateProbe, capsys: pytest.CaptureFixture[str]
) -> None:
    tally = run_corpus(slurm_probe, any_bodies(), ALL_EXAMPLES, plain=False)
    with capsys.disabled():
        print("\n" + _report(tally, "all"))
    assert tally.compared >= ALL_EXAMPLES // 8, _report(tally, "all")
    assert not tally.under, _report(tally, "all")
