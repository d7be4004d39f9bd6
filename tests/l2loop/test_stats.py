"""Window statistics: Wilson intervals and mergeable latency histograms."""

from __future__ import annotations

import pytest

from l2loop.stats import (
    bucket_value,
    latency_bucket,
    merge_histograms,
    quantiles,
    wilson,
)


# Wilson 95 % intervals, against values published with the method (Newcombe 1998, table I)
@pytest.mark.parametrize(
    ("hits", "total", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(
    hits: int, total: int, low: float, high: float
) -> None:
    interval = wilson(hits, total)
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


def test_latency_buckets_bound_the_relative_error() -> None:
    for value in (0.01, 0.37, 1.0, 4.99, 5.0, 123.4, 86_400_000.0):
        estimate = bucket_value(latency_bucket(value))
        assert abs(estimate - value) / value < 0.045


def test_histogram_quantiles_and_merge() -> None:
    values = [float(v) for v in range(1, 1001)]  # 1..1000 ms
    whole: dict[int, int] = {}
    halves: list[dict[int, int]] = [{}, {}]
    for i, value in enumerate(values):
        bucket = latency_bucket(value)
        whole[bucket] = whole.get(bucket, 0) + 1
        halves[i % 2][bucket] = halves[i % 2].get(bucket, 0) + 1
    assert merge_histograms(*halves) == whole
    q = quantiles(whole)
    assert q.count == 1000
    for got, exact in ((q.p50, 500), (q.p95, 950), (q.p99, 990)):
        assert got is not None and abs(got - exact) / exact < 0.045
    assert quantiles({}).p95 is None
