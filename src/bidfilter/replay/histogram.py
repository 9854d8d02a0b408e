"""A latency histogram in the HDR style: log-linear buckets, fixed memory, mergeable.

Values are whole microseconds. Each power-of-two range ``[2^k, 2^(k+1))`` is cut into
``sub_buckets / 2`` equal buckets (below ``sub_buckets`` every microsecond has its own), so a
bucket is never wider than ``1 / (sub_buckets / 2)`` of the values it holds: with 2 significant
digits, 256 sub-buckets, a reported percentile is within 0.79 % of the true sample. Recording
is a few integer operations and a list increment, with no allocation; values above
``highest_us`` count in the last bucket (``max`` stays exact).

This is the layout of Gil Tene's HdrHistogram (``bucket index = bit length - magnitude``), so
its percentiles mean the same thing: the value at percentile ``q`` is the highest value of the
bucket holding the sample of rank ``ceil(q / 100 * count)``, capped by the exact ``max``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

DEFAULT_HIGHEST_US = 60_000_000
"""One minute: no latency worth reporting is longer."""


class LatencyHistogram:
    """Counts of latencies in microseconds, ``significant_digits`` precise up to ``highest_us``.

    ``record`` one value at a time (or ``record_many`` an array), ``merge`` another histogram of
    the same layout (another process's), then read ``percentile(q)``, ``count``, ``min``,
    ``max`` and ``mean``. Pickles small (a list of ints), for multiprocessing.
    """

    __slots__ = (
        "_counts",
        "_half_magnitude",
        "_max",
        "_min",
        "_sub_buckets",
        "_sum",
        "_unit_shift",
        "count",
        "highest_us",
        "significant_digits",
    )

    def __init__(self, highest_us: int = DEFAULT_HIGHEST_US, significant_digits: int = 2) -> None:
        if not 1 <= significant_digits <= 5:
            raise ValueError(f"significant_digits must be in 1..5, not {significant_digits}")
        if highest_us < 2:
            raise ValueError(f"highest_us must be at least 2, not {highest_us}")
        self.highest_us = highest_us
        self.significant_digits = significant_digits
        # The smallest power of two holding 2 * 10^digits values: one decade of exact buckets.
        sub_buckets = 1 << math.ceil(math.log2(2 * 10**significant_digits))
        self._sub_buckets = sub_buckets
        self._half_magnitude = sub_buckets.bit_length() - 2  # log2(sub_buckets / 2)
        # Bucket k (k >= 0) covers [sub_buckets / 2 * 2^k, sub_buckets * 2^k) with a step of 2^k;
        # bucket 0 also covers [0, sub_buckets / 2).
        self._unit_shift = sub_buckets.bit_length() - 1  # log2(sub_buckets)
        buckets = max(highest_us.bit_length() - self._unit_shift, 0) + 1
        self._counts = [0] * ((buckets + 1) * (sub_buckets // 2))
        self.count = 0
        self._sum = 0
        self._min = 0
        self._max = 0

    def _index(self, value: int) -> int:
        # bucket = bit length beyond the exact range; the index is bucket * half + value >> bucket,
        # which is HdrHistogram's (bucket + 1) * half + (sub - half) rearranged.
        bucket = (value | (self._sub_buckets - 1)).bit_length() - self._unit_shift
        return (bucket << self._half_magnitude) + (value >> bucket)

    def _highest_in(self, index: int) -> int:
        """The highest value counted at ``index`` (the bucket's upper edge, inclusive)."""
        half_magnitude = self._half_magnitude
        bucket = (index >> half_magnitude) - 1
        sub = (index & ((1 << half_magnitude) - 1)) + (1 << half_magnitude)
        if bucket < 0:
            bucket, sub = 0, sub - (1 << half_magnitude)
        return ((sub + 1) << bucket) - 1

    def record(self, us: float) -> None:
        """Count one latency of ``us`` microseconds (negative counts as 0, fractions truncate)."""
        value = int(us) if us > 0 else 0
        if self.count == 0 or value < self._min:
            self._min = value
        if value > self._max:
            self._max = value
        self.count += 1
        self._sum += value
        self._counts[self._index(min(value, self.highest_us))] += 1

    def record_many(self, values_us: Iterable[float] | np.ndarray) -> None:
        """Count many latencies at once (vectorised; same rules as ``record``)."""
        values = np.asarray(values_us, dtype=np.float64)
        if values.size == 0:
            return
        whole = np.clip(values, 0, None).astype(np.int64)
        low, high = int(whole.min()), int(whole.max())
        if self.count == 0 or low < self._min:
            self._min = low
        self._max = max(self._max, high)
        self.count += int(whole.size)
        self._sum += int(whole.sum())
        capped = np.minimum(whole, self.highest_us)
        bits = np.frexp((capped | (self._sub_buckets - 1)).astype(np.float64))[1]
        bucket = bits.astype(np.int64) - self._unit_shift
        index = (bucket << self._half_magnitude) + (capped >> bucket)
        added = np.bincount(index, minlength=len(self._counts))
        self._counts = (np.asarray(self._counts, dtype=np.int64) + added).tolist()

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s counts to these (the two must have the same layout)."""
        if (other.highest_us, other.significant_digits) != (
            self.highest_us,
            self.significant_digits,
        ):
            raise ValueError("only histograms of the same highest_us and significant_digits merge")
        if other.count == 0:
            return
        if self.count == 0 or other._min < self._min:
            self._min = other._min
        self._max = max(self._max, other._max)
        self.count += other.count
        self._sum += other._sum
        self._counts = [a + b for a, b in zip(self._counts, other._counts, strict=True)]

    def copy(self) -> LatencyHistogram:
        twin = LatencyHistogram(self.highest_us, self.significant_digits)
        twin.merge(self)
        return twin

    @property
    def max(self) -> int:
        """The largest value recorded, exact (0 when empty)."""
        return self._max

    @property
    def min(self) -> int:
        """The smallest value recorded, exact (0 when empty)."""
        return self._min

    @property
    def mean(self) -> float:
        """The mean of the values recorded, exact (0.0 when empty)."""
        return self._sum / self.count if self.count else 0.0

    def percentile(self, q: float) -> int:
        """The value below or at which ``q`` percent of the recorded values lie (0 when empty).

        Precisely: the highest value of the bucket holding the sample of rank
        ``max(1, ceil(q / 100 * count))``, kept within the exact ``min`` and ``max`` (which
        are the answer for the first and the last rank).
        """
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"a percentile is in 0..100, not {q}")
        if self.count == 0:
            return 0
        # Float noise must not push a rank up by one: 99.9% of 1000 is 999, not 999.0000001.
        rank = max(1, math.ceil(round(q / 100.0 * self.count, 9)))
        if rank >= self.count:
            return self._max  # the last sample is the max, known exactly
        if rank == 1:
            return self._min
        cumulative = np.cumsum(np.asarray(self._counts, dtype=np.int64))
        index = int(np.searchsorted(cumulative, rank))
        return min(max(self._highest_in(index), self._min), self._max)

    def percentiles(self, qs: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, int]:
        """``{"p50": ..., "p99.9": ...}`` for each ``q`` (one pass over the counts)."""
        return {f"p{q:g}": self.percentile(q) for q in qs}

    def __repr__(self) -> str:
        return (
            f"LatencyHistogram(count={self.count}, p50={self.percentile(50)}, "
            f"p99={self.percentile(99)}, max={self._max})"
        )
