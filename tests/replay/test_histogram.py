"""The latency histogram against numpy's exact percentiles, within the bucket precision."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bidfilter.replay.histogram import LatencyHistogram

# 2 significant digits: 256 sub-buckets, a bucket is at most 1/128 of the values it holds.
PRECISION = 1 / 128
QUANTILES = st.sampled_from([0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0])
LATENCIES = st.lists(st.integers(min_value=0, max_value=60_000_000), min_size=1, max_size=400)


def assert_close_to_numpy(histogram: LatencyHistogram, values: np.ndarray, q: float) -> None:
    # numpy's rank for q can be off by one from the exact one (q / 100 in floating point), so
    # the histogram's answer must lie within precision of numpy's at q nudged either way.
    low = np.percentile(values, max(q - 1e-9, 0.0), method="inverted_cdf")
    high = np.percentile(values, min(q + 1e-9, 100.0), method="inverted_cdf")
    got = histogram.percentile(q)
    assert low * (1 - PRECISION) - 1 <= got <= high * (1 + PRECISION) + 1, (q, low, high, got)


@given(values=LATENCIES, q=QUANTILES)
def test_percentiles_match_numpy_within_bucket_precision(values: list[int], q: float) -> None:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    assert_close_to_numpy(histogram, np.array(values), q)


@given(values=LATENCIES)
def test_count_min_max_mean_are_exact(values: list[int]) -> None:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    assert histogram.count == len(values)
    assert histogram.max == max(values)
    assert histogram.min == min(values)
    assert histogram.mean == pytest.approx(float(np.mean(values)))
    assert histogram.percentile(100) == max(values)
    assert min(values) <= histogram.percentile(0) <= min(values) * (1 + PRECISION) + 1


@given(first=LATENCIES, second=LATENCIES, q=QUANTILES)
def test_merging_is_recording_both(first: list[int], second: list[int], q: float) -> None:
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for value in first:
        a.record(value)
        both.record(value)
    for value in second:
        b.record(value)
        both.record(value)
    a.merge(b)
    assert (a.count, a.min, a.max, a.mean) == (both.count, both.min, both.max, both.mean)
    assert a.percentile(q) == both.percentile(q)


@given(values=st.lists(st.floats(min_value=0, max_value=1e8), min_size=1, max_size=200))
def test_record_many_is_record_one_by_one(values: list[float]) -> None:
    one, many = LatencyHistogram(), LatencyHistogram()
    for value in values:
        one.record(value)
    many.record_many(np.array(values))
    for q in (0, 50, 99, 100):
        assert one.percentile(q) == many.percentile(q)
    assert (one.count, one.min, one.max) == (many.count, many.min, many.max)


def test_large_lognormal_sample() -> None:
    values = np.random.default_rng(0).lognormal(7, 2, 50_000).astype(np.int64)
    histogram = LatencyHistogram()
    histogram.record_many(values)
    for q in (50, 90, 99, 99.9, 99.99):
        assert_close_to_numpy(histogram, values, q)


def test_fixed_memory_and_clamping() -> None:
    histogram = LatencyHistogram(highest_us=1_000_000)
    size = len(histogram._counts)
    histogram.record(5e9)  # far above the highest: counted in the last bucket
    histogram.record(-3)  # a clock step backwards: counted as 0
    assert len(histogram._counts) == size
    assert histogram.max == 5_000_000_000
    assert histogram.min == 0
    assert histogram.percentile(100) == 5_000_000_000


def test_empty_and_bad_arguments() -> None:
    histogram = LatencyHistogram()
    assert (histogram.count, histogram.percentile(99), histogram.mean, histogram.max) == (
        0,
        0,
        0,
        0,
    )
    with pytest.raises(ValueError, match="percentile"):
        histogram.percentile(101)
    with pytest.raises(ValueError, match="same"):
        histogram.merge(LatencyHistogram(highest_us=1000))
    with pytest.raises(ValueError, match="significant_digits"):
        LatencyHistogram(significant_digits=0)
