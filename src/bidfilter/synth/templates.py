"""Pre-built media objects of imps (banner, video, native, audio), shared between requests.

Only a few hundred distinct media objects exist (size x alternates x position for banners,
placement x durations for video, ...), so each is built once and requests point at it; the
vectorised :func:`template_choices` picks one per imp for a whole chunk.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

from bidfilter.synth.formats import (
    ALTERNATE_SIZES,
    APP_INTERSTITIAL,
    BANNER,
    BANNER_SIZES,
    CTV_INSTREAM,
    N_VIDEO_KINDS,
    NATIVE,
    OUTSTREAM,
    VIDEO,
    VIDEO_KINDS,
    WEB_INSTREAM,
)
from bidfilter.synth.traffic import Traffic

JsonObject = dict[str, Any]

# Banner pos (OpenRTB "Placement Positions"): unknown (omitted), above the fold, below the fold.
_BANNER_POSITIONS = (0, 1, 3)


def _banner_templates() -> list[JsonObject]:
    """Index ((size * 2 + alternates) * 3 + position) * 2 + is_app."""
    templates = []
    for size, (w, h, _, _) in enumerate(BANNER_SIZES):
        for alternates in (0, 1):
            sizes = [size, *ALTERNATE_SIZES.get(size, ())] if alternates else [size]
            formats = [{"w": BANNER_SIZES[s][0], "h": BANNER_SIZES[s][1]} for s in sizes]
            for pos in _BANNER_POSITIONS:
                for is_app in (0, 1):
                    banner: JsonObject = {"w": w, "h": h, "format": formats}
                    if pos:
                        banner["pos"] = pos
                    if is_app:
                        banner["api"] = [3, 5, 6, 7]  # MRAID 1-3, OMID
                    templates.append(banner)
    return templates


# Per video kind: (w, h) choices and (minduration, maxduration, startdelay) choices.
_VIDEO_SHAPES = {
    CTV_INSTREAM: (((1920, 1080),), ((5, 30, 0), (15, 30, -1), (15, 60, -2))),
    WEB_INSTREAM: (((640, 360), (1280, 720), (640, 480)), ((5, 30, 0), (0, 15, 0), (6, 30, -1))),
    OUTSTREAM: (((640, 360), (400, 225), (320, 180)), ((5, 30, 0), (0, 15, 0), (6, 30, 0))),
    APP_INTERSTITIAL: (((320, 480), (360, 640), (1080, 1920)), ((5, 30, 0), (15, 30, 0),
                                                                 (5, 60, 0))),
}  # fmt: skip
# 2.5 "placement" for each kind: 1 in-stream, 3 in-article (outstream), 5 interstitial.
_LEGACY_PLACEMENT = {CTV_INSTREAM: 1, WEB_INSTREAM: 1, OUTSTREAM: 3, APP_INTERSTITIAL: 5}
VIDEO_VARIANTS = 3


def _video_templates() -> list[JsonObject]:
    """Index (kind * VIDEO_VARIANTS + variant) * 2 + legacy."""
    templates = []
    for kind in range(N_VIDEO_KINDS):
        sizes, durations = _VIDEO_SHAPES[kind]
        for variant in range(VIDEO_VARIANTS):
            w, h = sizes[variant % len(sizes)]
            minimum, maximum, startdelay = durations[variant]
            for legacy in (0, 1):
                mimes = ["video/mp4", "video/webm"]
                if kind in (WEB_INSTREAM, OUTSTREAM):
                    mimes.append("application/javascript")  # VPAID
                video: JsonObject = {
                    "mimes": mimes,
                    "minduration": minimum,
                    "maxduration": maximum,
                    "protocols": [2, 3, 5, 6, 7, 8],
                    "w": w,
                    "h": h,
                    "startdelay": startdelay,
                    "linearity": 1,
                }
                if legacy:
                    video["placement"] = _LEGACY_PLACEMENT[kind]
                else:
                    video["plcmt"] = VIDEO_KINDS[kind][1]
                if kind == CTV_INSTREAM:
                    video["skip"] = 0
                    video["pos"] = 7  # full screen
                else:
                    video["skip"] = 1
                    video["skipafter"] = 5
                    video["api"] = [1, 2, 7]
                video["playbackmethod"] = [6] if kind == OUTSTREAM else [1]
                templates.append(video)
    return templates


def _native_templates() -> list[JsonObject]:
    """Index variant * 2 + legacy: 1.2 requests, or 1.1 wrapped in ``{"native": ...}``."""
    templates = []
    for context, plcmttype, image in ((1, 1, (1200, 627)), (2, 4, (300, 250))):
        assets = [
            {"id": 1, "required": 1, "title": {"len": 90}},
            {"id": 2, "required": 1, "img": {"type": 3, "wmin": image[0], "hmin": image[1]}},
            {"id": 3, "required": 0, "img": {"type": 1, "w": 50, "h": 50}},
            {"id": 4, "required": 1, "data": {"type": 2, "len": 140}},
            {"id": 5, "required": 0, "data": {"type": 12}},
        ]
        modern = {
            "ver": "1.2",
            "context": context,
            "plcmttype": plcmttype,
            "assets": assets,
            "eventtrackers": [{"event": 1, "methods": [1, 2]}],
        }
        legacy = {"native": {"ver": "1.1", "context": context, "plcmttype": plcmttype,
                             "assets": assets}}  # fmt: skip
        templates.append({"request": json.dumps(modern, separators=(",", ":")), "ver": "1.2"})
        templates.append({"request": json.dumps(legacy, separators=(",", ":")), "ver": "1.1"})
    return templates


_AUDIO_TEMPLATES: tuple[JsonObject, ...] = tuple(
    {
        "mimes": ["audio/mp4", "audio/mpeg"],
        "minduration": 5,
        "maxduration": maximum,
        "protocols": [2, 3, 5, 6, 7, 8],
        "startdelay": 0,
        "feed": feed,  # 1 music service, 2 FM/AM broadcast, 3 podcast
        "stitched": stitched,
    }
    for feed, maximum, stitched in ((1, 30, 0), (2, 60, 1), (3, 60, 1))
)


def media_templates() -> tuple[list[JsonObject], ...]:
    """The media objects by format (banner, video, native, audio), indexed as documented."""
    return (
        _banner_templates(),
        _video_templates(),
        _native_templates(),
        list(_AUDIO_TEMPLATES),
    )


def template_choices(traffic: Traffic, rng: np.random.Generator) -> tuple[list[int], list[bool]]:
    """Per imp: the index of its media object within its format, and whether it is rewarded."""
    imps = traffic.imps
    m = len(imps.format)
    request_of_imp = np.repeat(np.arange(len(traffic)), np.diff(imps.offsets))
    legacy = traffic.legacy[request_of_imp].astype(np.int64)
    u = rng.random((m, 3))
    alternates = (u[:, 0] < 0.35).astype(np.int64)
    position = (u[:, 1] * len(_BANNER_POSITIONS)).astype(np.int64)
    banner = (np.maximum(imps.size, 0) * 2 + alternates) * len(_BANNER_POSITIONS) + position
    banner = banner * 2 + traffic.is_app[request_of_imp]
    variant = (u[:, 2] * VIDEO_VARIANTS).astype(np.int64)
    video = (np.maximum(imps.video_kind, 0) * VIDEO_VARIANTS + variant) * 2 + legacy
    native = (u[:, 2] < 0.5) * 2 + legacy
    audio = (u[:, 2] * len(_AUDIO_TEMPLATES)).astype(np.int64)
    template: npt.NDArray[np.int64] = np.select(
        [imps.format == BANNER, imps.format == VIDEO, imps.format == NATIVE],
        [banner, video, native],
        audio,
    )
    # 2.6 imp.rwdd marks rewarded placements: about half of app interstitial video.
    rewarded = (imps.video_kind == APP_INTERSTITIAL) & (u[:, 0] < 0.5) & (legacy == 0)
    return template.tolist(), rewarded.tolist()
