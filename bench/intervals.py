"""Small statistics for the benchmarks: a distribution-free interval for a median.

Kept apart from the scripts that measure (and import the whole stack) so that tests can check it.
"""

from __future__ import annotations

import math


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median: the order statistics ``(x[k], x[n-1-k])``
    of the sorted values, with the largest ``k`` for which the interval still covers the median
    with probability ``confidence`` whatever the distribution (sign test: the coverage is
    ``1 - 2 P(B <= k)`` for ``B ~ Binomial(n, 1/2)``). n=12: the 3rd and 10th values (96.1%;
    the 4th and 9th would cover only 85.4%); n=8: the range (99.2%). Fewer than 6 values: the
    range, which then covers less than asked (n=5: 93.8%)."""
    xs = sorted(values)
    n = len(xs)
    if not n:
        return (math.nan, math.nan)
    best = 0
    tail = 0.0
    for k in range((n + 1) // 2):
        tail += math.comb(n, k) / 2**n  # P(B <= k)
        if 2 * tail > 1 - confidence:
            break
        best = k
    return (xs[best], xs[n - 1 - best])
