"""Draw the attributes of a chunk of bid requests, all at once, as columns.

:class:`Traffic` holds every request attribute that shapes the bid request *and* that partner
policies may react to (format, size, floor, geo, device, ids, privacy signals, deals...). It is
plain numpy arrays so that partner probabilities are computed for a whole chunk in a few
vectorised operations; :mod:`bidfilter.synth.requests` then writes each row as OpenRTB JSON.
Decorations that no policy reads (ip, ids' text, page path, ...) are drawn there, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bidfilter.synth.devices import PHONE, TABLET, Channel, DeviceTable
from bidfilter.synth.formats import (
    APP_INTERSTITIAL,
    AUDIO,
    AUDIO_FLOOR,
    BANNER,
    N_FORMATS,
    N_SIZES,
    NATIVE,
    NATIVE_FLOOR,
    VIDEO,
    banner_floor,
    banner_interstitial,
    size_cdf,
    video_floor,
    video_kind_cdf,
)
from bidfilter.synth.geography import COUNTRY_INDEX, RegionTable
from bidfilter.synth.inventory import SITE, Inventory

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

EUR_PER_USD = 1 / 1.08
LOCAL_AUDIENCE = 0.7  # share of a country's requests that go to properties based there
MAX_DEALS = 3
US_PRIVACY = ("1YNN", "1YYN", "1---")
US_PRIVACY_OPT_OUT = 1
TMAX_VALUES = np.array([120, 150, 200, 250, 300, 500, 800, 1000])
# connectiontype codes (OpenRTB list: 1 ethernet, 2 wifi, 3 cellular unknown, 4-7 2G..5G)
_CONNECTION_WEIGHTS = (
    (0, 0.35, 0.65, 0, 0, 0, 0, 0),  # desktop
    (0, 0, 0.50, 0.05, 0.01, 0.04, 0.33, 0.07),  # phones and tablets
    (0, 0.35, 0.65, 0, 0, 0, 0, 0),  # TVs
)
_TMAX_WEIGHTS = {
    Channel.DESKTOP_WEB: (0.10, 0.15, 0.15, 0.15, 0.20, 0.15, 0.05, 0.05),
    Channel.MOBILE_WEB: (0.10, 0.15, 0.15, 0.15, 0.20, 0.15, 0.05, 0.05),
    Channel.IOS_APP: (0, 0, 0.15, 0.20, 0.25, 0.25, 0.10, 0.05),
    Channel.ANDROID_APP: (0, 0, 0.15, 0.20, 0.25, 0.25, 0.10, 0.05),
    Channel.CTV_APP: (0, 0, 0, 0, 0.10, 0.40, 0.30, 0.20),
}


@dataclass(frozen=True)
class ImpColumns:
    """Per-imp columns (``m`` rows) and the per-request aggregates policies read."""

    offsets: IntArray  # n + 1: imps of request i are rows offsets[i]:offsets[i + 1]
    format: IntArray
    size: IntArray  # banner size index, -1 for other formats
    video_kind: IntArray  # -1 for other formats
    floor: FloatArray  # as written (in the request's floor currency); 0 = no floor
    instl: BoolArray
    eur_floor: BoolArray  # per request: bidfloorcur is EUR
    has_format: BoolArray  # (n, formats): some imp of the request has that media type
    first_size: IntArray  # per request: first banner's size, or N_SIZES when no banner
    primary_format: IntArray  # per request: media type of the first imp
    max_floor_usd: FloatArray  # per request


@dataclass(frozen=True)
class PrivacyColumns:
    """User identifiers and privacy signals, per request."""

    lmt: BoolArray
    has_buyeruid: BoolArray
    has_eids: BoolArray
    identified: BoolArray  # buyeruid, eids or a usable ifa
    gdpr: IntArray  # -1 when absent
    has_consent: BoolArray
    us_privacy: IntArray  # index into US_PRIVACY, -1 when absent
    gpp_sid: IntArray  # -1 when no GPP string
    coppa: BoolArray


@dataclass(frozen=True)
class Traffic:
    """One chunk of ``n`` requests as columns."""

    ts_ms: IntArray
    hour: IntArray  # UTC
    weekday: IntArray  # UTC, Monday = 0
    region: IntArray
    country: IntArray
    geo_mode: IntArray  # 0 full geo, 1 country and region only, 2 lat/lon only (type=1)
    seen_country: IntArray  # what the request says: the country, or n_countries if absent
    seen_region: IntArray  # the region, or n_regions if absent
    property: IntArray
    publisher: IntArray
    is_app: BoolArray
    channel: IntArray
    legacy: BoolArray  # 2.5 ``ext`` locations for gdpr, us_privacy, consent, eids, schain
    variant: IntArray
    devicetype: IntArray  # as written in the request
    os: IntArray
    connectiontype: IntArray
    imps: ImpColumns
    privacy: PrivacyColumns
    deals: IntArray  # (n, MAX_DEALS) deal indices, -1 padded
    private_auction: BoolArray
    schain_nodes: IntArray
    tmax: IntArray

    def __len__(self) -> int:
        return len(self.ts_ms)


def _pick(cdf_rows: FloatArray, u: FloatArray) -> IntArray:
    """Inverse-CDF draw where every row has its own cumulative distribution."""
    picked: IntArray = (u[:, None] > cdf_rows).sum(axis=1).astype(np.int64)
    return picked


def _cdf(rows: list[list[float]] | tuple[tuple[float, ...], ...]) -> FloatArray:
    table = np.cumsum(np.array(rows, dtype=np.float64), axis=1)
    table /= table[:, -1:]
    table[:, -1] = 1.0
    return table


class TrafficModel:
    """Draws :class:`Traffic` for given arrival times and regions, from one synthetic world."""

    def __init__(self, inventory: Inventory, regions: RegionTable, devices: DeviceTable) -> None:
        self.inventory = inventory
        self.regions = regions
        self.devices = devices
        self._global_cdf = np.cumsum(inventory.property_weight)
        self._global_cdf[-1] = 1.0
        self._home: list[tuple[IntArray, FloatArray]] = []
        for country in range(len(regions.country_value)):
            members = np.flatnonzero(inventory.property_home == country)
            weights = np.cumsum(inventory.property_weight[members])
            self._home.append((members, weights / weights[-1] if len(weights) else weights))
        self._size_cdf = size_cdf()
        self._video_kind_cdf = video_kind_cdf()
        self._banner_floor = banner_floor()
        self._banner_instl = banner_interstitial()
        self._video_floor = video_floor()
        self._connection_cdf = _cdf(_CONNECTION_WEIGHTS)
        self._tmax_cdf = _cdf([list(_TMAX_WEIGHTS[Channel(c)]) for c in range(len(Channel))])
        self._deal_count = np.diff(inventory.publisher_deal_offsets)
        self._usa = COUNTRY_INDEX["USA"]
        self._california = np.array([r.code == "CA" for r in regions.regions]) & (
            regions.country_of == self._usa
        )

    def draw(self, rng: np.random.Generator, ts_ms: IntArray, region: IntArray) -> Traffic:
        inv, regions = self.inventory, self.regions
        n = len(ts_ms)
        country = regions.country_of[region]

        prop = self._draw_property(rng, country)
        publisher = inv.property_publisher[prop]
        kind = inv.property_kind[prop]
        is_app = kind != SITE
        desktop = rng.random(n) < inv.property_desktop_share[prop]
        site_channel = np.where(desktop, Channel.DESKTOP_WEB, Channel.MOBILE_WEB)
        channel = np.where(is_app, inv.property_channel[prop], site_channel).astype(np.int64)
        legacy = inv.property_legacy[prop]

        variant = _pick(self.devices.cdf[country, channel], rng.random(n))
        true_devicetype = self.devices.devicetype[variant]
        # Older integrations only know "1 = mobile/tablet" from OpenRTB 2.2.
        handheld = (true_devicetype == PHONE) | (true_devicetype == TABLET)
        devicetype = np.where(legacy & handheld & (rng.random(n) < 0.5), 1, true_devicetype)
        device_class = np.where(
            channel == Channel.DESKTOP_WEB, 0, np.where(channel == Channel.CTV_APP, 2, 1)
        )
        connectiontype = _pick(self._connection_cdf[device_class], rng.random(n))
        connectiontype[legacy & (rng.random(n) < 0.05)] = 0

        mobile_app = (channel == Channel.IOS_APP) | (channel == Channel.ANDROID_APP)
        u = rng.random(n)
        geo_mode = np.where(mobile_app & (u < 0.15), 2, np.where(u > 0.78, 1, 0))
        seen = geo_mode != 2
        seen_country = np.where(seen, country, len(regions.country_value))
        seen_region = np.where(seen, region, regions.n_regions)

        imps = self._draw_imps(rng, prop, channel, country)
        privacy = self._draw_privacy(rng, prop, channel, country, region, is_app, variant)
        deals, private_auction = self._draw_deals(rng, publisher)

        schain_nodes = np.where(
            rng.random(n) < 0.8, inv.property_schain[prop], rng.integers(1, 4, n)
        )
        tmax = TMAX_VALUES[_pick(self._tmax_cdf[channel], rng.random(n))]
        hour_index = ts_ms // 3_600_000
        return Traffic(
            ts_ms=ts_ms,
            hour=hour_index % 24,
            weekday=(hour_index // 24 + 3) % 7,
            region=region,
            country=country,
            geo_mode=geo_mode,
            seen_country=seen_country,
            seen_region=seen_region,
            property=prop,
            publisher=publisher,
            is_app=is_app,
            channel=channel,
            legacy=legacy,
            variant=variant,
            devicetype=devicetype,
            os=self.devices.os[variant],
            connectiontype=connectiontype,
            deals=deals,
            private_auction=private_auction,
            schain_nodes=schain_nodes,
            tmax=tmax,
            imps=imps,
            privacy=privacy,
        )

    def _draw_property(self, rng: np.random.Generator, country: IntArray) -> IntArray:
        n = len(country)
        prop = np.searchsorted(self._global_cdf, rng.random(n), side="right").astype(np.int64)
        local = rng.random(n) < LOCAL_AUDIENCE
        u = rng.random(n)
        for c, (members, cdf) in enumerate(self._home):
            rows = np.flatnonzero(local & (country == c))
            if len(rows) and len(members):
                prop[rows] = members[np.searchsorted(cdf, u[rows], side="right")]
        return np.minimum(prop, self.inventory.n_properties - 1)

    def _draw_imps(
        self, rng: np.random.Generator, prop: IntArray, channel: IntArray, country: IntArray
    ) -> ImpColumns:
        inv = self.inventory
        n = len(prop)
        multi = rng.random(n) < inv.property_multi_imp[prop]
        count = 1 + multi * rng.integers(1, 4, n)
        offsets = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
        m = int(offsets[-1])
        request = np.repeat(np.arange(n), count)
        first = np.zeros(m, dtype=np.bool_)
        first[offsets[:-1]] = True

        # Extra imps mostly repeat the first one's media type (a page of banners, a video pod).
        fmt = _pick(inv.property_format_cdf[prop[request]], rng.random(m))
        same = ~first & (rng.random(m) < 0.6)
        fmt[same] = fmt[offsets[:-1]][request[same]]
        imp_channel = channel[request]
        is_banner, is_video = fmt == BANNER, fmt == VIDEO
        size = np.where(is_banner, _pick(self._size_cdf[imp_channel], rng.random(m)), -1)
        kind = np.where(is_video, _pick(self._video_kind_cdf[imp_channel], rng.random(m)), -1)
        instl = (is_banner & self._banner_instl[size]) | (kind == APP_INTERSTITIAL)

        typical = np.select(
            [is_banner, is_video, fmt == NATIVE, fmt == AUDIO],
            [self._banner_floor[size], self._video_floor[kind], NATIVE_FLOOR, AUDIO_FLOOR],
        )
        floor_usd = (
            typical
            * self.regions.country_value[country[request]]
            * inv.property_floor_scale[prop[request]]
            * np.exp(rng.normal(0.0, 0.4, m))
        )
        floor_usd = np.where(rng.random(m) < 0.12, 0.0, np.maximum(floor_usd, 0.01))
        eur = inv.property_eur_floors[prop] & self.regions.country_euro[country]
        eur_imp = eur[request]
        written = np.where(eur_imp, floor_usd * EUR_PER_USD, floor_usd).round(2)
        # Partners compare in USD: the EUR floor converted back (EUR is worth more than USD,
        # so this is always >= the written number, and a price above it clears both).
        usd_equivalent = np.where(eur_imp, written / EUR_PER_USD, written)

        has_format = np.bincount(request * N_FORMATS + fmt, minlength=n * N_FORMATS) > 0
        first_size = np.full(n, N_SIZES, dtype=np.int64)
        banner_request = request[is_banner]
        first_banner = np.concatenate([[True], banner_request[1:] != banner_request[:-1]])
        first_size[banner_request[first_banner]] = size[is_banner][first_banner]
        return ImpColumns(
            offsets=offsets,
            format=fmt,
            size=size,
            video_kind=kind,
            floor=written,
            instl=instl,
            eur_floor=eur,
            has_format=has_format.reshape(n, N_FORMATS),
            first_size=first_size,
            primary_format=fmt[offsets[:-1]],
            max_floor_usd=np.maximum.reduceat(usd_equivalent, offsets[:-1]),
        )

    def _draw_privacy(
        self,
        rng: np.random.Generator,
        prop: IntArray,
        channel: IntArray,
        country: IntArray,
        region: IntArray,
        is_app: BoolArray,
        variant: IntArray,
    ) -> PrivacyColumns:
        inv = self.inventory
        n = len(prop)
        in_gdpr = self.regions.country_gdpr[country]
        u = rng.random(n)
        # Mostly right: geo-IP mistakes leave some EU traffic at gdpr=0; outside the EU, many
        # SSPs omit the flag.
        gdpr = np.where(in_gdpr, np.where(u < 0.93, 1, 0), np.where(u < 0.6, 0, -1))
        has_consent = (gdpr == 1) & (rng.random(n) < inv.property_consent_rate[prop])
        coppa = inv.property_coppa[prop]

        usa = country == self._usa
        u = rng.random(n)
        us_privacy = np.where(
            usa & (u < 0.7), np.where(u < 0.6, 0, np.where(u < 0.67, US_PRIVACY_OPT_OUT, 2)), -1
        )
        u = rng.random(n)
        gpp_sid = np.where(
            usa & (u < 0.4),
            np.where(self._california[region], 8, 7),
            np.where((gdpr == 1) & (u < 0.3), 2, -1),
        )

        lmt_rate = np.select(
            [
                channel == Channel.IOS_APP,
                channel == Channel.ANDROID_APP,
                channel == Channel.CTV_APP,
            ],
            [0.7, 0.08, 0.15],
            0.0,
        )
        lmt = rng.random(n) < lmt_rate
        # Safari's ITP blocks third-party cookies: fewer synced buyer ids on Apple browsers.
        apple_web = ~is_app & self.devices.apple[variant]
        buyeruid_rate = np.where(is_app, 0.25, np.where(apple_web, 0.25, 0.5))
        eids_rate = np.where(channel == Channel.CTV_APP, 0.1, np.where(apple_web, 0.2, 0.3))
        # Without consent (or for children) the SSP must not pass user identifiers on.
        may_identify = ~((gdpr == 1) & ~has_consent) & ~coppa
        has_buyeruid = may_identify & (rng.random(n) < buyeruid_rate)
        has_eids = may_identify & (rng.random(n) < eids_rate)
        identified = has_buyeruid | has_eids | (is_app & ~lmt)
        return PrivacyColumns(
            lmt=lmt,
            has_buyeruid=has_buyeruid,
            has_eids=has_eids,
            identified=identified,
            gdpr=gdpr,
            has_consent=has_consent,
            us_privacy=us_privacy,
            gpp_sid=gpp_sid,
            coppa=coppa,
        )

    def _draw_deals(
        self, rng: np.random.Generator, publisher: IntArray
    ) -> tuple[IntArray, BoolArray]:
        inv = self.inventory
        n = len(publisher)
        available = self._deal_count[publisher]
        pmp = rng.random(n) < inv.publisher_pmp_rate[publisher]
        wanted = np.minimum(available, rng.integers(1, MAX_DEALS + 1, n))
        # Consecutive deals (wrapping) from a random start: distinct without a per-row shuffle.
        start = (rng.random(n) * available).astype(np.int64)
        step = np.arange(MAX_DEALS)[None, :]
        within = (start[:, None] + step) % np.maximum(available, 1)[:, None]
        deals = inv.publisher_deal_offsets[publisher][:, None] + within
        deals = np.where(pmp[:, None] & (step < wanted[:, None]), deals, -1)
        private_auction = pmp & (rng.random(n) < 0.3)
        return deals.astype(np.int64), private_auction
