"""When requests arrive: a non-homogeneous intensity with daily and weekly seasonality.

Each region has its own intensity, following its *local* clock: quiet at night, rising through the
day, peaking in the evening, a little lower at weekends. The generation window is cut into
15-minute bins; the number of requests per bin is drawn once (multinomial on the summed
intensity), then requests are produced bin after bin, so output is chronological and memory stays
bounded. A request's region is drawn given its bin, which ties geography and time together the way
real traffic does (Tokyo is busy while New York sleeps).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BIN_MS = 15 * 60 * 1000
_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 86_400_000

# Relative traffic by local hour (value at the middle of the hour): evening peak, night trough.
DAILY_SHAPE = np.array(
    [0.55, 0.38, 0.27, 0.22, 0.22, 0.28, 0.45, 0.68, 0.85, 0.93, 0.97, 1.00,
     1.05, 1.02, 0.98, 0.98, 1.02, 1.10, 1.25, 1.45, 1.60, 1.60, 1.38, 0.95]
)  # fmt: skip
# Relative traffic by local weekday, Monday first.
WEEKLY_SHAPE = np.array([1.05, 1.05, 1.05, 1.05, 1.0, 0.85, 0.85])


def _local_intensity(local_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Traffic intensity at local times (epoch ms shifted by the UTC offset)."""
    hours = (local_ms % _MS_PER_DAY) / _MS_PER_HOUR
    # Linear interpolation between hour midpoints, wrapping around midnight.
    daily = np.interp(hours - 0.5, np.arange(-1, 25), np.concatenate([DAILY_SHAPE[-1:],
                      DAILY_SHAPE, DAILY_SHAPE[:1]]))  # fmt: skip
    # 1970-01-01 was a Thursday (weekday 3).
    weekday = (local_ms // _MS_PER_DAY + 3) % 7
    result: npt.NDArray[np.float64] = daily * WEEKLY_SHAPE[weekday]
    return result


@dataclass(frozen=True)
class Timeline:
    """Arrival times for ``total`` requests over a window, and each request's region given time."""

    start_ms: int
    end_ms: int
    total: int
    counts: npt.NDArray[np.int64]  # requests per bin
    cumulative_counts: npt.NDArray[np.int64]  # requests in bins 0..b inclusive
    bin_cdf: npt.NDArray[np.float64]  # cumulative share of traffic by bin
    region_cdf: npt.NDArray[np.float64]  # (bins, regions): cumulative P(region | bin)
    hourly_volume: npt.NDArray[np.float64]  # relative traffic by UTC hour, mean 1

    def draw(
        self, rng: np.random.Generator, first: int, count: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Timestamps (epoch ms, sorted) and region indices of requests ``first..first+count``.

        The j-th of a bin's c requests lands at a random point of the j-th c-th of the bin: times
        are as good as uniform, yet sorted across chunks even when a bin spans two of them.
        """
        positions = np.arange(first, first + count)
        bins = np.searchsorted(self.cumulative_counts, positions, side="right")
        in_bin = self.cumulative_counts[bins] - positions  # c - j: from c down to 1
        stratum = (self.counts[bins] - in_bin + rng.random(count)) / self.counts[bins]
        return self._place(rng, bins, stratum)

    def sample(
        self, rng: np.random.Generator, count: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``count`` requests drawn from the whole window's intensity (for calibration)."""
        bins = np.searchsorted(self.bin_cdf, rng.random(count), side="right")
        bins = np.minimum(bins, len(self.bin_cdf) - 1)
        return self._place(rng, bins, rng.random(count))

    def _place(
        self,
        rng: np.random.Generator,
        bins: npt.NDArray[np.intp],
        fraction: npt.NDArray[np.float64],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        bin_start = self.start_ms + bins.astype(np.int64) * BIN_MS
        width = np.minimum(BIN_MS, self.end_ms - bin_start)
        ts = bin_start + (fraction * width).astype(np.int64)
        order = np.argsort(ts, kind="stable")
        ts, bins = ts[order], bins[order]
        u = rng.random(len(bins))
        region = (u[:, None] > self.region_cdf[bins]).sum(axis=1).astype(np.int64)
        return ts, region


def build_timeline(
    rng: np.random.Generator,
    start: dt.datetime,
    days: int,
    total: int,
    region_weight: npt.NDArray[np.float64],
    region_utcoffset: npt.NDArray[np.int64],
) -> Timeline:
    """Draw how many of ``total`` requests fall in each 15-minute bin of ``days`` days."""
    start_ms = int(start.timestamp() * 1000)
    end_ms = start_ms + days * _MS_PER_DAY
    n_bins = -(-(end_ms - start_ms) // BIN_MS)
    mid = start_ms + np.arange(n_bins, dtype=np.int64) * BIN_MS + BIN_MS // 2
    local = mid[:, None] + region_utcoffset[None, :] * 60_000
    intensity = _local_intensity(local) * region_weight[None, :]  # (bins, regions)
    per_bin = intensity.sum(axis=1)
    region_cdf = np.cumsum(intensity, axis=1) / per_bin[:, None]
    region_cdf[:, -1] = 1.0
    share = per_bin / per_bin.sum()
    counts = rng.multinomial(total, share)
    hour = (mid // _MS_PER_HOUR) % 24
    hourly = np.bincount(hour, weights=per_bin, minlength=24) / np.bincount(hour, minlength=24)
    bin_cdf = np.cumsum(share)
    bin_cdf[-1] = 1.0
    return Timeline(
        start_ms=start_ms,
        end_ms=end_ms,
        total=total,
        counts=counts.astype(np.int64),
        cumulative_counts=np.cumsum(counts).astype(np.int64),
        bin_cdf=bin_cdf,
        region_cdf=region_cdf,
        hourly_volume=hourly / hourly.mean(),
    )
