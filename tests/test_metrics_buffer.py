"""Buffered metric children (``metrics.buffered``) expose exactly what direct updates would, and
``metrics.Flusher`` moves them to the shared metrics on time."""

from __future__ import annotations

import asyncio
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from gatekeeper import metrics
from gatekeeper.metrics import BufferedCounter, BufferedHistogram, Flusher

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
def test_a_buffered_histogram_flushes_to_what_direct_observations_give(
    rounds: list[list[float]],
) -> None:
    direct_registry, buffered_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "direct", buckets=BUCKETS, registry=direct_registry)
    buffered = BufferedHistogram(
        Histogram("h", "buffered", buckets=BUCKETS, registry=buffered_registry)
    )
    for values in rounds:  # observations between flushes, as between two idle moments
        for value in values:
            direct.observe(value)
            buffered.observe(value)
        buffered.flush()
        assert same(samples(buffered_registry), samples(direct_registry))
    buffered.flush()  # nothing pending: a second flush adds nothing
    assert same(samples(buffered_registry), samples(direct_registry))


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
        await asyncio.sleep(0.35)
        assert registry.get_sample_value("c_total") == 6
        assert flusher.flushes == len(gauge_sets) == 2  # the gauge is set before every flush
        await asyncio.sleep(0.05)
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
        await asyncio.sleep(0.35)
        assert 2 <= flusher.flushes <= 4
        assert registry.get_sample_value("c_total") == 1
        flusher.idle()  # flushed at 0.3 s at the latest, and idle_every_s is long: deferred
        flusher.close()  # cancels both timers and flushes once
        after_close = flusher.flushes
        buffered.inc()
        await asyncio.sleep(0.25)
        assert flusher.flushes == after_close  # no timer left running
        assert registry.get_sample_value("c_total") == 1
    finally:
        flusher.close()
