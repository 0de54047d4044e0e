"""The gate's histograms (``metrics.LocalHistogram``) and buffered counters (``metrics.buffered``)
expose exactly what prometheus-client's direct updates would, in one process and across worker
processes, and ``flusher.Flusher`` moves them to the shared metrics on time."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from gatekeeper import metrics
from gatekeeper.flusher import Flusher
from gatekeeper.metrics import BufferedCounter, LocalHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
# Values on the bounds themselves too: a bound belongs to its own bucket (le = less or equal).
VALUES = st.one_of(st.sampled_from(BUCKETS), st.floats(min_value=0, max_value=100))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(registry: CollectorRegistry) -> Samples:
    """Every sample but ``_created``."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def same(a: Samples, b: Samples) -> bool:
    """The same samples: counts and buckets exactly, sums to the last bits (a buffered sum adds
    the same values in another order; rounding both to fixed digits is not enough, a value near a
    rounding boundary lands on either side)."""
    return a.keys() == b.keys() and all(
        math.isclose(v, b[k], rel_tol=1e-12, abs_tol=1e-12) if k[0].endswith("_sum") else v == b[k]
        for k, v in a.items()
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(VALUES, max_size=6), max_size=6))
def test_a_local_histogram_exposes_what_direct_observations_give(
    rounds: list[list[float]],
) -> None:
    direct_registry, local_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", ["route"], buckets=BUCKETS, registry=direct_registry)
    local = LocalHistogram("h", "h", ["route"], buckets=BUCKETS, registry=local_registry)
    plain_direct = Histogram("p", "p", buckets=BUCKETS, registry=direct_registry)
    plain_local = LocalHistogram("p", "p", buckets=BUCKETS, registry=local_registry)
    assert same(samples(local_registry), samples(direct_registry))  # unlabelled: zero at once
    for values in rounds:
        for value in values:
            direct.labels("r").observe(value)
            local.labels("r").observe(value)
            plain_direct.observe(value)
            plain_local.observe(value)
        assert same(samples(local_registry), samples(direct_registry))
    created = {s.name for m in local_registry.collect() for s in m.samples}
    assert "p_created" in created  # as prometheus-client gives in one process


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), VALUES, max_size=3), max_size=6))
def test_observe_each_gives_what_one_observation_per_label_gives(
    rounds: list[dict[str, float]],
) -> None:
    direct_registry, local_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", ["stage"], buckets=BUCKETS, registry=direct_registry)
    local = LocalHistogram("h", "h", ["stage"], buckets=BUCKETS, registry=local_registry)
    for times in rounds:
        for stage, value in times.items():
            direct.labels(stage).observe(value)
        local.observe_each(times)
        assert same(samples(local_registry), samples(direct_registry))


def test_a_buffered_counter_flushes_its_sum_once() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", registry=registry)
    buffered = BufferedCounter(counter)
    buffered.inc()
    buffered.inc(2.5)
    assert registry.get_sample_value("c_total") == 0
    buffered.flush()
    buffered.flush()
    assert registry.get_sample_value("c_total") == 3.5


def _counted() -> tuple[BufferedCounter, CollectorRegistry]:
    """A counter of its own registry, buffered like the gate's (``metrics.flush`` moves it)."""
    registry = CollectorRegistry()
    buffered: BufferedCounter = metrics.buffered(Counter("c", "c", registry=registry))
    return buffered, registry


async def test_idle_flushes_at_once_then_at_most_once_per_interval() -> None:
    buffered, registry = _counted()
    gauge_sets: list[int] = []
    flusher = Flusher(lambda: gauge_sets.append(1), every_s=60, idle_every_s=0.2)
    try:
        buffered.inc()
        flusher.idle()  # first idle moment: flushed at once
        assert registry.get_sample_value("c_total") == 1 and flusher.flushes == 1
        for _ in range(5):  # idle again and again within the interval: one deferred flush
            buffered.inc()
            flusher.idle()
        assert registry.get_sample_value("c_total") == 1 and flusher.flushes == 1
        # The deferred flush comes ``idle_every_s`` later (later still on a loaded machine).
        for _ in range(600):  # up to 30 s
            if flusher.flushes == 2:
                break
            await asyncio.sleep(0.05)
        assert registry.get_sample_value("c_total") == 6
        assert flusher.flushes == len(gauge_sets) == 2  # the gauge is set before every flush
        # The last flush happened before the check above, so after this sleep the whole
        # interval has passed, however late the timer fired.
        await asyncio.sleep(0.25)
        buffered.inc()
        flusher.idle()  # the interval has passed: at once again
        assert registry.get_sample_value("c_total") == 7 and flusher.flushes == 3
    finally:
        flusher.close()


async def test_busy_flushes_periodically_and_close_stops_the_timers() -> None:
    buffered, registry = _counted()
    flusher = Flusher(lambda: None, every_s=0.1, idle_every_s=60)
    try:
        buffered.inc()
        flusher.busy()
        flusher.busy()  # one timer, however many requests start
        started = time.monotonic()
        while flusher.flushes < 3 and time.monotonic() - started < 30:
            await asyncio.sleep(0.01)
        # One timer needs three intervals for three flushes; two would need a little over one.
        assert flusher.flushes == 3
        assert time.monotonic() - started >= 3 * 0.1 * 0.9
        assert registry.get_sample_value("c_total") == 1
        flusher.idle()  # flushed just now, and idle_every_s is long: deferred
        flusher.close()  # cancels both timers and flushes once
        after_close = flusher.flushes
        buffered.inc()
        await asyncio.sleep(0.25)
        assert flusher.flushes == after_close  # no timer left running
        assert registry.get_sample_value("c_total") == 1
    finally:
        flusher.close()


_WORKER = """
from gatekeeper import metrics
from gatekeeper.metrics import LocalHistogram

h = LocalHistogram("h", "h", ["route"], buckets=BUCKETS, registry=None)
plain = LocalHistogram("p", "p", buckets=BUCKETS, registry=None)
for i, value in enumerate(VALUES):
    h.labels("r").observe(value)
    plain.observe(value)
    if i % 3 == 2:
        metrics.flush()
metrics.flush()
metrics.flush()  # nothing changed: writes nothing more
"""


def test_observations_of_worker_processes_add_up_in_the_multiprocess_files(
    tmp_path: Path,
) -> None:
    """With ``workers > 1`` each process writes its own files; the aggregate over two worker
    processes equals one process observing every value directly."""
    per_worker = [[0.0005, 0.001, 0.001, 0.05, 7.0, 99.0, 0.3], [0.01, 0.1, 1.0, 10.0, 10.5]]
    for values in per_worker:
        code = f"BUCKETS = {BUCKETS!r}\nVALUES = {values!r}\n" + _WORKER
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    # This process reads the files as ``render()`` does, knowing the same histograms.
    LocalHistogram("h", "h", ["route"], buckets=BUCKETS, registry=None)
    LocalHistogram("p", "p", buckets=BUCKETS, registry=None)
    aggregated = CollectorRegistry()
    aggregated.register(metrics.multiprocess_collector(str(tmp_path)))
    direct_registry = CollectorRegistry()
    direct = Histogram("h", "h", ["route"], buckets=BUCKETS, registry=direct_registry)
    plain = Histogram("p", "p", buckets=BUCKETS, registry=direct_registry)
    for values in per_worker:
        for value in values:
            direct.labels("r").observe(value)
            plain.observe(value)
    # The workers imported gatekeeper.metrics, whose own metrics are in the files too.
    ours = {k: v for k, v in samples(aggregated).items() if k[0][:2] in ("h_", "p_")}
    assert same(ours, samples(direct_registry))
    assert aggregated.get_sample_value("h_count", {"route": "r"}) == 12
    assert aggregated.get_sample_value("p_count") == 12
