"""Browser and operating system from ``device.ua``, by ua-parser (the uap-core regexes).

Parsing one user agent costs tens of microseconds, far more than the rest of a request's
features; real traffic repeats a few thousand user agents, so each process keeps the answers
for the most recent ones (an LRU cache keyed by the UA string).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from ua_parser import parse_os, parse_user_agent

_CACHE_SIZE = 8192
_MAX_UA_CHARS = 1024  # longer ones are not a browser's: not worth the regexes' time


class Software(NamedTuple):
    browser: str | None  # lower-cased family: "chrome mobile", "mobile safari", "samsung internet"
    browser_major: float
    os: str | None  # lower-cased family: "android", "ios", "windows"
    os_major: float


NOTHING = Software(None, float("nan"), None, float("nan"))


@lru_cache(maxsize=_CACHE_SIZE)
def software(ua: str) -> Software:
    if len(ua) > _MAX_UA_CHARS:
        return NOTHING
    agent, system = parse_user_agent(ua), parse_os(ua)
    return Software(
        agent.family.lower() if agent is not None and agent.family != "Other" else None,
        _major(agent.major if agent is not None else None),
        system.family.lower() if system is not None and system.family != "Other" else None,
        _major(system.major if system is not None else None),
    )


@lru_cache(maxsize=1024)
def major_version(version: str | None) -> float:
    """``"17.4.1"`` -> 17.0; NaN when there is no leading number."""
    return _major(version.split(".", 1)[0] if version else None)


def _major(text: str | None) -> float:
    if text is None or not text.isdigit() or len(text) > 6:
        return float("nan")
    return float(text)
