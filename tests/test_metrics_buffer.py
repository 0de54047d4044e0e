"""Buffered metric children (``metrics.buffered``) expose exactly what direct updates would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from gatekeeper.metrics import BufferedCounter, BufferedHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
# Values on the bounds themselves too: a bound belongs to its own bucket (le = less or equal).
VALUES = st.one_of(st.sampled_from(BUCKETS), st.floats(min_value=0, max_value=100))


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample; sums rounded (a buffered sum adds the same values in another order)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): round(s.value, 9)
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


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
        assert samples(buffered_registry) == samples(direct_registry)
    buffered.flush()  # nothing pending: a second flush adds nothing
    assert samples(buffered_registry) == samples(direct_registry)


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
