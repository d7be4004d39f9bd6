"""Summary statistics shared across the loop: percentiles of measured samples (the live line
of ``l2loop up`` and the benchmarks), rates with their Wilson intervals, and mergeable latency
histograms (the windows and the rollout's comparison count latencies into the same buckets).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from l2loop.schemas.windows import Interval, LatencyQuantiles, Rate


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values`` (no interpolation); 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Z_95 = 1.959963984540054

# ---------------------------------------------------------------------------------------
# Mergeable latency histogram: fixed logarithmic buckets, ~4.4 % relative error.
# Bucket i holds values in (GAMMA**(i-1), GAMMA**i] ms; the same bucket edges everywhere,
# so histograms of two workers or two windows merge by adding counts (HINCRBY in Redis).
# ---------------------------------------------------------------------------------------
GAMMA = 2.0 ** (1.0 / 8.0)
_LOG_GAMMA = math.log(GAMMA)
MIN_BUCKET = math.ceil(math.log(1e-3) / _LOG_GAMMA)  # 1 µs and below
MAX_BUCKET = math.ceil(math.log(1e9) / _LOG_GAMMA)  # ~11.6 days and above


def latency_bucket(ms: float) -> int:
    if not ms > 0:  # zero, negative (clock skew) and NaN
        return MIN_BUCKET
    return max(MIN_BUCKET, min(MAX_BUCKET, math.ceil(math.log(ms) / _LOG_GAMMA - 1e-9)))


def bucket_value(index: int) -> float:
    """The bucket's representative: its geometric middle."""
    return math.pow(GAMMA, index - 0.5)


def merge_histograms(*histograms: Mapping[int, int]) -> dict[int, int]:
    merged: dict[int, int] = defaultdict(int)
    for histogram in histograms:
        for index, count in histogram.items():
            merged[index] += count
    return dict(merged)


def quantiles(histogram: Mapping[int, int]) -> LatencyQuantiles:
    total = sum(histogram.values())
    if total == 0:
        return LatencyQuantiles(count=0)
    ordered = sorted(histogram.items())

    def at(q: float) -> float:
        rank = max(1, math.ceil(q * total))
        seen = 0
        for index, count in ordered:
            seen += count
            if seen >= rank:
                return round(bucket_value(index), 6)
        raise AssertionError("unreachable: rank <= total")

    return LatencyQuantiles(count=total, p50=at(0.50), p95=at(0.95), p99=at(0.99))


def wilson(hits: int, total: int, z: float = Z_95) -> Interval:
    """Wilson score interval of ``hits / total`` (total > 0)."""
    p = hits / total
    z2 = z * z
    denominator = 1.0 + z2 / total
    centre = (p + z2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denominator
    return Interval(low=max(0.0, centre - half), high=min(1.0, centre + half))


def rate(hits: int, total: int) -> Rate:
    if total <= 0:
        return Rate(hits=hits, total=0)
    hits = min(hits, total)
    return Rate(hits=hits, total=total, value=hits / total, interval=wilson(hits, total))
