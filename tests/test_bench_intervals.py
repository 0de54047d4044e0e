"""The benchmarks' interval for a median (bench/intervals.py): the benchmark reports rest on it."""

from __future__ import annotations

import importlib.util
import math
import random
import statistics
from pathlib import Path
from types import ModuleType

from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    # bench/ is a folder of scripts, not a package: load the module from its file.
    spec = importlib.util.spec_from_file_location(
        "bench_intervals", ROOT / "bench" / "intervals.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


median_interval = _load().median_interval


def coverage(n: int, k: int) -> float:
    """P(x[k] <= median <= x[n-1-k]) for n values drawn from any continuous distribution."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def test_twelve_pairs_give_the_third_and_tenth_values() -> None:
    values = [float(v) for v in range(1, 13)]
    random.Random(7).shuffle(values)
    assert median_interval(values) == (3.0, 10.0)  # x[2] and x[9]: k = 2
    assert coverage(12, 2) >= 0.95  # 96.1%
    assert coverage(12, 3) < 0.95  # the next pair inwards would cover only 85.4%


def test_the_interval_is_the_narrowest_with_95_percent_coverage() -> None:
    for n in range(6, 41):
        values = [float(v) for v in range(n)]
        lo, hi = median_interval(values)
        k = int(lo)
        assert hi == n - 1 - k
        assert coverage(n, k) >= 0.95, (n, k)
        assert coverage(n, k + 1) < 0.95, (n, k)


def test_too_few_values_give_the_range_and_none_give_nan() -> None:
    assert median_interval([2.0, 1.0, 3.0]) == (1.0, 3.0)
    lo, hi = median_interval([])
    assert math.isnan(lo) and math.isnan(hi)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60))
def test_the_interval_holds_the_median_and_lies_within_the_values(values: list[float]) -> None:
    lo, hi = median_interval(values)
    assert min(values) <= lo <= statistics.median(values) <= hi <= max(values)
