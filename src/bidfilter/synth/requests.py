"""Write each row of :class:`~bidfilter.synth.traffic.Traffic` as an OpenRTB 2.6 BidRequest (JSON).

This is the only per-request Python in the generator, so it is written for speed: every object
that does not vary per request (publisher, app, banner/video/native/audio objects, deal lists,
user-agent strings) is built once and shared between requests (msgspec encodes a shared object
like any other); random decorations no policy reads (ids, ip, page path, lat/lon, consent text)
are drawn in bulk per chunk; the loop only picks and assembles.

Requests from ``legacy`` properties put the fields OpenRTB 2.6 promoted out of ``ext`` in their
2.5 places (``regs.ext.gdpr``, ``regs.ext.us_privacy``, ``user.ext.consent``, ``user.ext.eids``,
``source.ext.schain``) and describe video with the 2.5 ``placement``; the others use 2.6.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from bidfilter.synth.devices import DEVICE_VARIANTS, Channel
from bidfilter.synth.geography import COUNTRIES, RegionTable
from bidfilter.synth.identifiers import base64url_tokens, hex_tokens, uuids
from bidfilter.synth.inventory import SITE, TOPICS, Inventory
from bidfilter.synth.templates import media_templates, template_choices
from bidfilter.synth.traffic import US_PRIVACY, Traffic

JsonObject = dict[str, Any]

SSP_DOMAIN = "bidfilter-ssp.com"
_RESELLERS = (
    "pubmatic.com", "rubiconproject.com", "openx.com", "indexexchange.com", "sovrn.com",
    "33across.com", "sharethrough.com", "triplelift.com", "media.net", "adform.com",
)  # fmt: skip
_EID_SOURCES = (
    ("liveramp.com", 3),
    ("id5-sync.com", 1),
    ("uidapi.com", 3),
    ("criteo.com", 1),
    ("pubcid.org", 1),
    ("adserver.org", 1),
)
_GPP_STRINGS = {7: "DBABLA~BVQqAAAAAgA.QA", 8: "DBABBg~BVoYYZoI.QA"}
_BLOCKED_CATEGORIES = (
    ["IAB25", "IAB26"],
    ["IAB25-3", "IAB26", "IAB7-39", "IAB8-18"],
    ["IAB11-4", "IAB23", "IAB25", "IAB26"],
)
_SECTIONS = ("article", "news", "story", "video", "gallery", "guide", "review", "live")
MAX_EIDS = 3
_ZERO_IFA = "00000000-0000-0000-0000-000000000000"
_FORMAT_KEYS = ("banner", "video", "native", "audio")
_CURRENCY = ["USD"]
_APP_CHANNELS = (Channel.IOS_APP, Channel.ANDROID_APP, Channel.CTV_APP)


class RequestBuilder:
    """Builds BidRequest JSON for chunks of traffic; holds the shared, pre-built objects."""

    def __init__(
        self, inventory: Inventory, regions: RegionTable, rng: np.random.Generator
    ) -> None:
        """``rng`` draws the fixed decorations (resellers in supply chains, GPP strings)."""
        self.inventory = inventory
        self.regions = regions
        self._templates = media_templates()
        publishers = [
            {"id": pid, "name": name}
            for pid, name in zip(inventory.publisher_id, inventory.publisher_name, strict=True)
        ]
        self._publishers = [publishers[p] for p in inventory.property_publisher.tolist()]
        self._categories = [list(TOPICS[topic][1]) for topic in inventory.property_topic.tolist()]
        # App objects never change between requests: build each once.
        self._apps: list[JsonObject | None] = [
            None
            if kind == SITE
            else {
                "id": inventory.property_id[p],
                "name": inventory.property_name[p],
                "bundle": inventory.property_domain[p],
                "storeurl": inventory.property_storeurl[p],
                "cat": self._categories[p],
                "publisher": self._publishers[p],
            }
            for p, kind in enumerate(inventory.property_kind.tolist())
        ]
        self._deals: list[JsonObject] = [
            {"id": deal, "bidfloor": floor, "bidfloorcur": "USD", "at": 1}
            for deal, floor in zip(inventory.deal_id, inventory.deal_floor.tolist(), strict=True)
        ]
        self._regions = [
            (COUNTRIES[c].alpha3, region, 10**region.zip_digits)
            for c, region in zip(regions.country_of.tolist(), regions.regions, strict=True)
        ]
        self._region_latlon = np.array([[region.lat, region.lon] for region in regions.regions])
        self._languages = [country.language for country in COUNTRIES]
        self._ip_octets = [country.ip_octets for country in COUNTRIES]
        self._apple = np.array([variant.apple for variant in DEVICE_VARIANTS])
        self._chains = self._supply_chains(rng)
        # GPP strings carrying a TCF section (gpp_sid 2): a few, reused.
        self._tcf_gpp = [f"DBABMA~CQ{token}AAAA" for token in base64url_tokens(rng, 64, 40)]
        self._regs_cache: dict[tuple[bool, bool, int, int, int, int], JsonObject] = {}
        self._encoder = msgspec.json.Encoder()

    def build(self, traffic: Traffic, rng: np.random.Generator) -> tuple[list[str], list[str]]:
        """The request ids and the BidRequest JSON text of every row of ``traffic``."""
        n = len(traffic)
        request_ids = uuids(rng, n)
        geos = self._geos(traffic, rng)
        devices = self._devices(traffic, geos, rng)
        imps = self._imps(traffic, rng)
        users = self._users(traffic, rng)
        sources = self._sources(traffic, rng)
        regs = self._regs(traffic, rng)
        sections = rng.integers(0, len(_SECTIONS), n).tolist()
        slugs = rng.integers(10_000, 999_999, n).tolist()
        u = rng.random((n, 4))
        auction_types = np.where(u[:, 0] < 0.92, 1, 2).tolist()
        # A third of requests carry no bcat; the rest one of a few block lists.
        bcats = (u[:, 1] * len(_BLOCKED_CATEGORIES) * 1.5).astype(np.int64).tolist()
        referred = (u[:, 2] < 0.3).tolist()

        encode = self._encoder.encode
        inv = self.inventory
        requests: list[str] = []
        for i, (prop, channel, tmax) in enumerate(
            zip(
                traffic.property.tolist(),
                traffic.channel.tolist(),
                traffic.tmax.tolist(),
                strict=True,
            )
        ):
            request: JsonObject = {"id": request_ids[i], "imp": imps[i]}
            app = self._apps[prop]
            if app is not None:
                request["app"] = app
            else:
                domain = inv.property_domain[prop]
                site: JsonObject = {
                    "id": inv.property_id[prop],
                    "name": inv.property_name[prop],
                    "domain": domain,
                    "page": f"https://www.{domain}/{_SECTIONS[sections[i]]}/{slugs[i]}",
                    "cat": self._categories[prop],
                    "publisher": self._publishers[prop],
                }
                if channel == Channel.MOBILE_WEB:
                    site["mobile"] = 1
                if referred[i]:
                    site["ref"] = "https://www.google.com/"
                request["site"] = site
            request["device"] = devices[i]
            user = users[i]
            if user:
                request["user"] = user
            request["at"] = auction_types[i]
            request["tmax"] = tmax
            request["cur"] = _CURRENCY
            if bcats[i] < len(_BLOCKED_CATEGORIES):
                request["bcat"] = _BLOCKED_CATEGORIES[bcats[i]]
            request["source"] = sources[i]
            request["regs"] = regs[i]
            requests.append(encode(request).decode())
        return request_ids, requests

    def _supply_chains(self, rng: np.random.Generator) -> list[list[JsonObject]]:
        """Per publisher, its schain object by number of nodes (index 1..3).

        A publisher reaches this SSP through the same resellers every time: upstream sellers
        first, this SSP (the one talking to the partners) last.
        """
        chains: list[list[JsonObject]] = []
        for publisher in self.inventory.publisher_id:
            picks = rng.choice(len(_RESELLERS), size=2, replace=False).tolist()
            upstream = [
                {"asi": _RESELLERS[pick], "sid": str(rng.integers(1000, 99_999)), "hp": 1}
                for pick in picks
            ]
            ours = {"asi": SSP_DOMAIN, "sid": publisher, "hp": 1}
            by_length: list[JsonObject] = [{}]
            for nodes in (1, 2, 3):
                path = [*upstream[: nodes - 1], ours]
                by_length.append({"ver": "1.0", "complete": 1, "nodes": path})
            chains.append(by_length)
        return chains

    def _geos(self, traffic: Traffic, rng: np.random.Generator) -> list[JsonObject]:
        n = len(traffic)
        latlon = self._region_latlon[traffic.region] + rng.normal(0.0, 0.05, (n, 2))
        zips = rng.integers(0, 10_000, n).tolist()
        precise = (rng.random(n) < 0.3).tolist()
        geos: list[JsonObject] = []
        for region, mode, (lat, lon), zip_draw, with_latlon in zip(
            traffic.region.tolist(),
            traffic.geo_mode.tolist(),
            np.round(latlon, 4).tolist(),
            zips,
            precise,
            strict=True,
        ):
            country, place, zip_range = self._regions[region]
            if mode == 2:
                # GPS from the app SDK, no IP lookup: coordinates only (type 1 = GPS).
                geos.append({"lat": lat, "lon": lon, "type": 1, "accuracy": 20})
                continue
            if mode == 1:
                geos.append({"country": country, "region": place.code, "type": 2})
                continue
            geo: JsonObject = {"country": country, "region": place.code, "city": place.city}
            if place.metro is not None:
                geo["metro"] = place.metro
            digits = place.zip_digits
            geo["zip"] = (
                place.zip_prefix + str(zip_draw % zip_range).zfill(digits)
                if digits
                else (place.zip_prefix)
            )
            geo["utcoffset"] = place.utcoffset
            geo["type"] = 2
            if with_latlon:
                geo["lat"] = lat
                geo["lon"] = lon
            geos.append(geo)
        return geos

    def _devices(
        self, traffic: Traffic, geos: list[JsonObject], rng: np.random.Generator
    ) -> list[JsonObject]:
        n = len(traffic)
        ifas = uuids(rng, n)
        ip_first = rng.integers(0, 64, n).tolist()
        ip_rest = rng.integers(1, 255, (n, 3)).tolist()
        dnt = (rng.random(n) < 0.08).tolist()
        devices: list[JsonObject] = []
        for i, (variant, devicetype, connection, country, channel, gdpr, lmt) in enumerate(
            zip(
                traffic.variant.tolist(),
                traffic.devicetype.tolist(),
                traffic.connectiontype.tolist(),
                traffic.country.tolist(),
                traffic.channel.tolist(),
                traffic.privacy.gdpr.tolist(),
                traffic.privacy.lmt.tolist(),
                strict=True,
            )
        ):
            v = DEVICE_VARIANTS[variant]
            octets = self._ip_octets[country]
            second, third, fourth = ip_rest[i]
            # Under GDPR the SSP truncates the IP address (last octet zeroed).
            ip = (
                f"{octets[ip_first[i] % len(octets)]}.{second}.{third}.{0 if gdpr == 1 else fourth}"
            )
            device: JsonObject = {"ua": v.ua, "ip": ip, "geo": geos[i], "devicetype": devicetype}
            if v.make:
                device["make"] = v.make
                device["model"] = v.model
            device["os"] = v.os_name
            if v.osv:
                device["osv"] = v.osv
            device["w"] = v.w
            device["h"] = v.h
            device["language"] = self._languages[country]
            device["connectiontype"] = connection
            if channel in _APP_CHANNELS:
                # Apple reports its advertising id in upper case; a zeroed id means tracking is
                # limited (ATT denied).
                ifa = _ZERO_IFA if lmt else (ifas[i].upper() if v.apple else ifas[i])
                device["ifa"] = ifa
                device["lmt"] = 1 if lmt else 0
            else:
                device["js"] = 1
                device["dnt"] = 1 if dnt[i] else 0
            devices.append(device)
        return devices

    def _imps(self, traffic: Traffic, rng: np.random.Generator) -> list[list[JsonObject]]:
        imps = traffic.imps
        m = len(imps.format)
        template, rewarded = template_choices(traffic, rng)
        secure = (rng.random(m) < 0.97).tolist()
        formats = imps.format.tolist()
        floors = imps.floor.tolist()
        instl = imps.instl.tolist()

        result: list[list[JsonObject]] = []
        offsets = imps.offsets.tolist()
        for i, (prop, eur, deals, private) in enumerate(
            zip(
                traffic.property.tolist(),
                imps.eur_floor.tolist(),
                traffic.deals.tolist(),
                traffic.private_auction.tolist(),
                strict=True,
            )
        ):
            pmp: JsonObject | None = None
            if deals[0] >= 0:
                chosen = [self._deals[d] for d in deals if d >= 0]
                pmp = {"private_auction": 1 if private else 0, "deals": chosen}
            tag_prefix = self.inventory.property_id[prop]
            currency = "EUR" if eur else "USD"
            items: list[JsonObject] = []
            for j in range(offsets[i], offsets[i + 1]):
                number = str(j - offsets[i] + 1)
                fmt = formats[j]
                imp: JsonObject = {
                    "id": number,
                    _FORMAT_KEYS[fmt]: self._templates[fmt][template[j]],
                    "tagid": f"{tag_prefix}-{number}",
                }
                if floors[j] > 0:
                    imp["bidfloor"] = floors[j]
                    imp["bidfloorcur"] = currency
                imp["secure"] = 1 if secure[j] else 0
                if instl[j]:
                    imp["instl"] = 1
                if rewarded[j]:
                    imp["rwdd"] = 1
                if pmp is not None:
                    imp["pmp"] = pmp
                items.append(imp)
            result.append(items)
        return result

    def _users(self, traffic: Traffic, rng: np.random.Generator) -> list[JsonObject]:
        n = len(traffic)
        privacy = traffic.privacy
        apple_web = ~traffic.is_app & self._apple[traffic.variant]
        # The SSP's own (first-party) id: rarer where cookies are restricted, never for kids.
        rate = np.where(traffic.is_app, 0.5, np.where(apple_web, 0.55, 0.85))
        has_user_id = (rng.random(n) < rate) & ~privacy.coppa
        # Draw only as many tokens as rows need them, and hand them out in order.
        user_ids = iter(hex_tokens(rng, int(has_user_id.sum()), 32))
        buyeruids = iter(base64url_tokens(rng, int(privacy.has_buyeruid.sum()), 22))
        consents = iter(base64url_tokens(rng, int(privacy.has_consent.sum()), 72))
        eid_ids = iter(base64url_tokens(rng, int(privacy.has_eids.sum()) * MAX_EIDS, 26))
        eid_count = rng.integers(1, MAX_EIDS + 1, n).tolist()
        eid_first = rng.integers(0, len(_EID_SOURCES), n).tolist()
        users: list[JsonObject] = []
        for i, (legacy, with_id, with_buyeruid, with_eids, with_consent) in enumerate(
            zip(
                traffic.legacy.tolist(),
                has_user_id.tolist(),
                privacy.has_buyeruid.tolist(),
                privacy.has_eids.tolist(),
                privacy.has_consent.tolist(),
                strict=True,
            )
        ):
            user: JsonObject = {}
            if with_id:
                user["id"] = next(user_ids)
            if with_buyeruid:
                user["buyeruid"] = next(buyeruids)
            moved: JsonObject = {}  # fields 2.6 moved out of user.ext
            if with_consent:
                moved["consent"] = "CQ" + next(consents) + "AAAA.YAAAAAAAAAAA"
            if with_eids:
                first = eid_first[i]
                ids = [next(eid_ids) for _ in range(MAX_EIDS)]
                eids = []
                for j in range(eid_count[i]):
                    source, atype = _EID_SOURCES[(first + j) % len(_EID_SOURCES)]
                    eids.append({"source": source, "uids": [{"id": ids[j], "atype": atype}]})
                moved["eids"] = eids
            if moved:
                if legacy:
                    user["ext"] = moved
                else:
                    user.update(moved)
            users.append(user)
        return users

    def _sources(self, traffic: Traffic, rng: np.random.Generator) -> list[JsonObject]:
        tids = uuids(rng, len(traffic))
        chains = self._chains
        return [
            {"tid": tid, "ext": {"schain": chains[publisher][nodes]}}
            if legacy
            else {"tid": tid, "schain": chains[publisher][nodes]}
            for tid, legacy, nodes, publisher in zip(
                tids,
                traffic.legacy.tolist(),
                traffic.schain_nodes.tolist(),
                traffic.publisher.tolist(),
                strict=True,
            )
        ]

    def _regs(self, traffic: Traffic, rng: np.random.Generator) -> list[JsonObject]:
        privacy = traffic.privacy
        # Regs objects repeat a lot: build each distinct one once and share it.
        variant = rng.integers(0, len(self._tcf_gpp), len(traffic)).tolist()
        cache = self._regs_cache
        result: list[JsonObject] = []
        for key in zip(
            traffic.legacy.tolist(),
            privacy.coppa.tolist(),
            privacy.gdpr.tolist(),
            privacy.us_privacy.tolist(),
            privacy.gpp_sid.tolist(),
            variant,
            strict=True,
        ):
            regs = cache.get(key)
            if regs is None:
                regs = cache[key] = self._regs_object(*key)
            result.append(regs)
        return result

    def _regs_object(
        self, legacy: bool, coppa: bool, gdpr: int, us_privacy: int, gpp_sid: int, variant: int
    ) -> JsonObject:
        moved: JsonObject = {}  # fields 2.6 moved out of regs.ext
        if gdpr >= 0:
            moved["gdpr"] = gdpr
        if us_privacy >= 0:
            moved["us_privacy"] = US_PRIVACY[us_privacy]
        if gpp_sid >= 0:
            moved["gpp"] = _GPP_STRINGS.get(gpp_sid) or self._tcf_gpp[variant]
            moved["gpp_sid"] = [gpp_sid]
        regs: JsonObject = {"coppa": 1 if coppa else 0}
        if legacy:
            if moved:
                regs["ext"] = moved
        else:
            regs.update(moved)
        return regs
