"""Ad formats of the synthetic traffic: media types, IAB banner sizes, video placements, floors.

Only what shapes the traffic's statistics lives here (which sizes appear where, what a floor
typically is); the JSON objects themselves are assembled in :mod:`bidfilter.synth.requests`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bidfilter.synth.devices import N_CHANNELS, Channel

BANNER, VIDEO, NATIVE, AUDIO = 0, 1, 2, 3
FORMAT_NAMES = ("banner", "video", "native", "audio")
N_FORMATS = len(FORMAT_NAMES)

# (w, h, typical floor in USD CPM in the USA, interstitial)
BANNER_SIZES: tuple[tuple[int, int, float, bool], ...] = (
    (300, 250, 0.50, False),
    (728, 90, 0.40, False),
    (160, 600, 0.30, False),
    (300, 600, 0.80, False),
    (970, 250, 1.20, False),
    (320, 50, 0.15, False),
    (320, 100, 0.20, False),
    (336, 280, 0.50, False),
    (970, 90, 0.60, False),
    (468, 60, 0.15, False),
    (300, 50, 0.12, False),
    (320, 480, 1.00, True),
    (480, 320, 1.00, True),
    (768, 1024, 1.50, True),
    (120, 600, 0.20, False),
)
N_SIZES = len(BANNER_SIZES)

# Sizes a publisher also accepts in the same slot (banner.format lists them after the main one).
ALTERNATE_SIZES: dict[int, tuple[int, ...]] = {
    0: (7,),
    1: (8, 9),
    2: (14, 3),
    3: (2,),
    4: (8, 1),
    5: (10,),
    6: (5,),
    11: (12,),
    13: (11,),
}

# P(size | channel); CTV never asks for banners.
_SIZE_WEIGHTS: dict[Channel, dict[int, float]] = {
    Channel.DESKTOP_WEB: {0: 35, 1: 20, 2: 8, 3: 10, 4: 7, 7: 5, 8: 5, 9: 2, 14: 2},
    Channel.MOBILE_WEB: {5: 35, 0: 35, 6: 12, 10: 5, 11: 8, 7: 5},
    Channel.IOS_APP: {5: 45, 0: 25, 11: 15, 12: 3, 1: 7, 13: 5},
    Channel.ANDROID_APP: {5: 45, 0: 25, 11: 15, 12: 3, 1: 7, 13: 5},
    Channel.CTV_APP: {0: 1},
}

# Video placements: (name, OpenRTB 2.6 plcmt, typical floor in USD CPM in the USA)
VIDEO_KINDS: tuple[tuple[str, int, float], ...] = (
    ("ctv_instream", 1, 12.0),
    ("web_instream", 1, 6.0),
    ("outstream", 4, 2.5),
    ("app_interstitial", 3, 7.0),
)
CTV_INSTREAM, WEB_INSTREAM, OUTSTREAM, APP_INTERSTITIAL = 0, 1, 2, 3
N_VIDEO_KINDS = len(VIDEO_KINDS)

_VIDEO_KIND_WEIGHTS: dict[Channel, tuple[float, float, float, float]] = {
    Channel.DESKTOP_WEB: (0, 0.6, 0.4, 0),
    Channel.MOBILE_WEB: (0, 0.4, 0.6, 0),
    Channel.IOS_APP: (0, 0.3, 0.1, 0.6),
    Channel.ANDROID_APP: (0, 0.3, 0.1, 0.6),
    Channel.CTV_APP: (1, 0, 0, 0),
}

NATIVE_FLOOR = 0.60
AUDIO_FLOOR = 2.50


def _cdf(rows: list[list[float]]) -> npt.NDArray[np.float64]:
    table = np.cumsum(np.array(rows, dtype=np.float64), axis=1)
    table /= table[:, -1:]
    table[:, -1] = 1.0
    return table


def size_cdf() -> npt.NDArray[np.float64]:
    """Cumulative P(banner size | channel), shape (channels, sizes)."""
    rows = [[0.0] * N_SIZES for _ in range(N_CHANNELS)]
    for channel, weights in _SIZE_WEIGHTS.items():
        for size, weight in weights.items():
            rows[channel][size] = weight
    return _cdf(rows)


def video_kind_cdf() -> npt.NDArray[np.float64]:
    """Cumulative P(video kind | channel), shape (channels, kinds)."""
    return _cdf([list(_VIDEO_KIND_WEIGHTS[Channel(c)]) for c in range(N_CHANNELS)])


def banner_floor() -> npt.NDArray[np.float64]:
    return np.array([size[2] for size in BANNER_SIZES])


def banner_interstitial() -> npt.NDArray[np.bool_]:
    return np.array([size[3] for size in BANNER_SIZES])


def video_floor() -> npt.NDArray[np.float64]:
    return np.array([kind[2] for kind in VIDEO_KINDS])
