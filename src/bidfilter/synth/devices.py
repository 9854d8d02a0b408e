"""Devices behind the synthetic traffic: real-looking user agents with consistent device fields.

Each :class:`DeviceVariant` is one concrete device + software combination (a user-agent string
and the ``os``, ``osv``, ``make``, ``model``, ``devicetype`` an SSP would derive from it). A
variant belongs to one channel: desktop web, mobile web, iOS app, Android app or CTV app.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from bidfilter.synth.geography import COUNTRIES


class Channel(IntEnum):
    DESKTOP_WEB = 0
    MOBILE_WEB = 1
    IOS_APP = 2
    ANDROID_APP = 3
    CTV_APP = 4


N_CHANNELS = len(Channel)

# OpenRTB 2.6 list "Device Type": 1 mobile/tablet, 2 PC, 3 connected TV, 4 phone, 5 tablet,
# 6 connected device, 7 set top box.
PHONE, TABLET, PC, CONNECTED_TV, CONNECTED_DEVICE, SET_TOP_BOX = 4, 5, 2, 3, 6, 7
N_DEVICETYPES = 8  # codes 0..7 (0 unused) index policy tables directly
# OpenRTB "Connection Type": 0 unknown, 1 ethernet, 2 wifi, 3 cellular unknown, 4-7 2G..5G.
N_CONNECTION_TYPES = 8

OS_NAMES: tuple[str, ...] = (
    "iOS",
    "Android",
    "Windows",
    "macOS",
    "Linux",
    "Roku",
    "Fire OS",
    "Tizen",
    "webOS",
    "tvOS",
    "PlayStation",
)
OS_INDEX = {name: i for i, name in enumerate(OS_NAMES)}


@dataclass(frozen=True, slots=True)
class DeviceVariant:
    channel: Channel
    ua: str
    os: int  # index into OS_NAMES
    osv: str
    make: str  # "" when the SSP would not know it (desktops)
    model: str
    devicetype: int
    w: int
    h: int
    weight: float  # share within its channel, before country adjustments
    apple: bool  # Safari/WebKit: third-party cookies blocked (ITP), iOS share applies

    @property
    def os_name(self) -> str:
        return OS_NAMES[self.os]


_CHROME = "126.0.6478.122"


def _desktop() -> list[DeviceVariant]:
    web = Channel.DESKTOP_WEB
    win = OS_INDEX["Windows"]
    mac = OS_INDEX["macOS"]
    windows_nt = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"
    webkit = "AppleWebKit/537.36 (KHTML, like Gecko)"
    mac_os = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"
    variants = [
        DeviceVariant(
            web,
            f"{windows_nt} {webkit} Chrome/{major}.0.0.0 Safari/537.36",
            win,
            "10",
            "",
            "",
            PC,
            w,
            h,
            weight,
            apple=False,
        )
        for major, w, h, weight in (
            (124, 1920, 1080, 4.0),
            (125, 1536, 864, 5.0),
            (126, 1920, 1080, 9.0),
            (127, 2560, 1440, 3.0),
        )
    ]
    variants += [
        DeviceVariant(web, f"{windows_nt} {webkit} Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
                      win, "10", "", "", PC, 1920, 1080, 5.0, apple=False),
        DeviceVariant(web, f"{windows_nt[:-1]}; rv:127.0) Gecko/20100101 Firefox/127.0", win,
                      "10", "", "", PC, 1920, 1080, 2.5, apple=False),
        DeviceVariant(web, f"{mac_os} AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
                      "Safari/605.1.15", mac, "10.15.7", "Apple", "Macintosh", PC, 1440, 900,
                      5.0, apple=True),
        DeviceVariant(web, f"{mac_os} {webkit} Chrome/126.0.0.0 Safari/537.36", mac, "10.15.7",
                      "Apple", "Macintosh", PC, 1728, 1117, 4.0, apple=False),
        DeviceVariant(web, f"Mozilla/5.0 (X11; Linux x86_64) {webkit} Chrome/126.0.0.0 "
                      "Safari/537.36", OS_INDEX["Linux"], "", "", "", PC, 1920, 1080, 0.8,
                      apple=False),
    ]  # fmt: skip
    return variants


_IOS_VERSIONS = (("17.5.1", 2.0), ("17.6.1", 3.0), ("18.0.1", 3.0), ("18.1", 4.0))
_IPHONE_MODELS = (("iPhone14,5", 1170, 2532, 3.0), ("iPhone15,2", 1179, 2556, 3.0),
                  ("iPhone16,1", 1179, 2556, 2.0))  # fmt: skip
_ANDROID_PHONES = (
    ("Samsung", "SM-S911B", "14", 1080, 2340, 3.0),
    ("Samsung", "SM-S921U", "14", 1080, 2340, 2.0),
    ("Samsung", "SM-A546B", "14", 1080, 2340, 3.0),
    ("Samsung", "SM-A155F", "14", 1080, 2340, 2.0),
    ("Google", "Pixel 8", "14", 1080, 2400, 1.5),
    ("Google", "Pixel 7a", "14", 1080, 2400, 1.0),
    ("Xiaomi", "23021RAA2Y", "13", 1080, 2400, 2.5),
    ("OPPO", "CPH2451", "13", 1080, 2412, 1.5),
    ("Motorola", "moto g power 5G - 2024", "14", 1080, 2400, 1.0),
)
_ANDROID_TABLETS = (("Samsung", "SM-X710", "14", 1600, 2560, 1.0),)


def _ios(channel: Channel) -> list[DeviceVariant]:
    ios = OS_INDEX["iOS"]
    variants: list[DeviceVariant] = []
    for osv, version_weight in _IOS_VERSIONS:
        under = osv.replace(".", "_")
        safari = "Version/" + ".".join(osv.split(".")[:2]) + " Mobile/15E148 Safari/604.1"
        tail = safari if channel is Channel.MOBILE_WEB else "Mobile/15E148"
        ua = (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {under} like Mac OS X) "
            f"AppleWebKit/605.1.15 (KHTML, like Gecko) {tail}"
        )
        if channel is Channel.MOBILE_WEB:
            # Browsers cannot see the hardware model: SSPs report the family only.
            variants.append(DeviceVariant(channel, ua, ios, osv, "Apple", "iPhone", PHONE, 1170,
                                          2532, 8.0 * version_weight, apple=True))  # fmt: skip
        else:
            variants += [
                DeviceVariant(channel, ua, ios, osv, "Apple", model, PHONE, w, h,
                              weight * version_weight, apple=True)
                for model, w, h, weight in _IPHONE_MODELS
            ]  # fmt: skip
        ipad = (
            f"Mozilla/5.0 (iPad; CPU OS {under} like Mac OS X) "
            f"AppleWebKit/605.1.15 (KHTML, like Gecko) {tail}"
        )
        model = "iPad" if channel is Channel.MOBILE_WEB else "iPad13,18"
        variants.append(DeviceVariant(channel, ipad, ios, osv, "Apple", model, TABLET, 1640, 2360,
                                      1.0 * version_weight, apple=True))  # fmt: skip
    return variants


def _android(channel: Channel) -> list[DeviceVariant]:
    android = OS_INDEX["Android"]
    variants: list[DeviceVariant] = []
    for devices, devicetype in ((_ANDROID_PHONES, PHONE), (_ANDROID_TABLETS, TABLET)):
        for make, model, osv, w, h, weight in devices:
            mobile = " Mobile" if devicetype == PHONE else ""
            if channel is Channel.MOBILE_WEB:
                ua = (
                    f"Mozilla/5.0 (Linux; Android {osv}; {model}) AppleWebKit/537.36 "
                    f"(KHTML, like Gecko) Chrome/{_CHROME}{mobile} Safari/537.36"
                )
            else:
                ua = (
                    f"Mozilla/5.0 (Linux; Android {osv}; {model} Build/UP1A.231005.007; wv) "
                    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
                    f"Chrome/{_CHROME}{mobile} Safari/537.36"
                )
            variants.append(DeviceVariant(channel, ua, android, osv, make, model, devicetype, w,
                                          h, weight, apple=False))  # fmt: skip
    return variants


def _ctv() -> list[DeviceVariant]:
    ctv = Channel.CTV_APP
    fire_ua = (
        "Mozilla/5.0 (Linux; Android 9; {model} Build/PS7624.3337N; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/130.0.6723.102 Mobile Safari/537.36"
    )
    return [
        DeviceVariant(ctv, "Roku/DVP-13.0 (13.0.0.4190-46)", OS_INDEX["Roku"], "13.0", "Roku",
                      "3941X", SET_TOP_BOX, 1920, 1080, 5.0, apple=False),
        DeviceVariant(ctv, "Roku/DVP-12.5 (12.5.5.4174-46)", OS_INDEX["Roku"], "12.5", "TCL",
                      "Roku TV 55S455", CONNECTED_TV, 1920, 1080, 4.0, apple=False),
        DeviceVariant(ctv, fire_ua.format(model="AFTKA"), OS_INDEX["Fire OS"], "7.6", "Amazon",
                      "AFTKA", SET_TOP_BOX, 1920, 1080, 3.0, apple=False),
        DeviceVariant(ctv, fire_ua.format(model="AFTMM"), OS_INDEX["Fire OS"], "6.2", "Amazon",
                      "AFTMM", SET_TOP_BOX, 1920, 1080, 1.5, apple=False),
        DeviceVariant(ctv, "Mozilla/5.0 (SMART-TV; LINUX; Tizen 7.0) AppleWebKit/537.36 (KHTML, "
                      "like Gecko) 94.0.4606.31/7.0 TV Safari/537.36", OS_INDEX["Tizen"], "7.0",
                      "Samsung", "QN65Q80C", CONNECTED_TV, 1920, 1080, 3.5, apple=False),
        DeviceVariant(ctv, "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like "
                      "Gecko) Chrome/87.0.4280.88 Safari/537.36 WebAppManager", OS_INDEX["webOS"],
                      "23", "LG", "OLED55C3PUA", CONNECTED_TV, 1920, 1080, 2.0, apple=False),
        DeviceVariant(ctv, "AppleCoreMedia/1.0.0.21J354 (Apple TV; U; CPU OS 17_0 like Mac OS X; "
                      "en_us)", OS_INDEX["tvOS"], "17.0", "Apple", "AppleTV14,1", SET_TOP_BOX,
                      1920, 1080, 1.5, apple=True),
        DeviceVariant(ctv, "Mozilla/5.0 (Linux; Android 12; Chromecast Build/STTE.230319.008; wv) "
                      "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.122 "
                      "Safari/537.36", OS_INDEX["Android"], "12", "Google", "Chromecast",
                      SET_TOP_BOX, 1920, 1080, 1.0, apple=False),
        DeviceVariant(ctv, "Mozilla/5.0 (PlayStation; PlayStation 5/8.40) AppleWebKit/605.1.15 "
                      "(KHTML, like Gecko)", OS_INDEX["PlayStation"], "8.40", "Sony",
                      "PlayStation 5", CONNECTED_DEVICE, 1920, 1080, 0.5, apple=False),
    ]  # fmt: skip


DEVICE_VARIANTS: tuple[DeviceVariant, ...] = (
    *_desktop(),
    *_ios(Channel.MOBILE_WEB),
    *_android(Channel.MOBILE_WEB),
    *_ios(Channel.IOS_APP),
    *_android(Channel.ANDROID_APP),
    *_ctv(),
)


@dataclass(frozen=True)
class DeviceTable:
    """The variants' fields as arrays (index = variant), for vectorised draws and policies."""

    os: npt.NDArray[np.int64]
    devicetype: npt.NDArray[np.int64]
    channel: npt.NDArray[np.int64]
    apple: npt.NDArray[np.bool_]
    cdf: npt.NDArray[np.float64]  # cumulative P(variant | country, channel)


def device_table() -> DeviceTable:
    """Arrays of :data:`DEVICE_VARIANTS`, with the per-country variant distribution.

    Apple hardware is re-weighted per country so the iOS share of browsers follows the market
    (high in the USA and Japan, low in India or Brazil; Macs are about half as common on desktop
    as iPhones on mobile). App channels hold one platform each, so they are left as written.
    """
    n_variants = len(DEVICE_VARIANTS)
    weights = np.zeros((len(COUNTRIES), N_CHANNELS, n_variants))
    is_apple_hw = np.array([variant.make == "Apple" for variant in DEVICE_VARIANTS])
    for v, variant in enumerate(DEVICE_VARIANTS):
        weights[:, variant.channel, v] = variant.weight
    for channel, scale in ((Channel.DESKTOP_WEB, 0.45), (Channel.MOBILE_WEB, 1.0)):
        block = weights[:, channel, :]
        apple_total = block[:, is_apple_hw].sum(axis=1, keepdims=True)
        other_total = block[:, ~is_apple_hw].sum(axis=1, keepdims=True)
        for c, country in enumerate(COUNTRIES):
            share = scale * country.ios_share
            block[c, is_apple_hw] *= share / apple_total[c]
            block[c, ~is_apple_hw] *= (1.0 - share) / other_total[c]
    cumulative = np.cumsum(weights, axis=2)
    cumulative /= cumulative[:, :, -1:]
    cumulative[:, :, -1] = 1.0  # guard against rounding: every uniform draw lands somewhere
    return DeviceTable(
        os=np.array([variant.os for variant in DEVICE_VARIANTS], dtype=np.int64),
        devicetype=np.array([variant.devicetype for variant in DEVICE_VARIANTS], dtype=np.int64),
        channel=np.array([variant.channel for variant in DEVICE_VARIANTS], dtype=np.int64),
        apple=np.array([variant.apple for variant in DEVICE_VARIANTS]),
        cdf=cumulative,
    )
