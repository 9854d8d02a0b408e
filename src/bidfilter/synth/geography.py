"""Countries and regions the synthetic traffic comes from.

A small, hand-written world: enough countries (ISO-3166-1 alpha-3) to make geo targeting and
GDPR matter, and for each a few regions (ISO-3166-2 subdivision codes) with a city, a US DMA
metro code where one exists, a postal-code pattern and the local UTC offset (DST ignored).
Weights are rough shares of programmatic traffic; ``value`` scales floors and bid prices (what an
impression is worth there compared with the USA).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    city: str
    metro: str | None
    zip_prefix: str
    zip_digits: int  # random digits appended to ``zip_prefix``
    lat: float
    lon: float
    utcoffset: int  # minutes
    weight: float  # share within the country


@dataclass(frozen=True, slots=True)
class Country:
    alpha3: str
    weight: float
    gdpr: bool  # GDPR (or UK GDPR) applies
    euro: bool  # some publishers there set floors in EUR
    value: float  # CPM scale relative to the USA
    ios_share: float  # share of Apple devices among mobile and desktop browsers
    language: str
    ip_octets: tuple[int, ...]  # plausible first octets of IPv4 addresses
    regions: tuple[Region, ...]


def _r(
    code: str,
    city: str,
    zip_prefix: str,
    zip_digits: int,
    lat: float,
    lon: float,
    utcoffset: int,
    weight: float = 1.0,
    metro: str | None = None,
) -> Region:
    return Region(code, city, metro, zip_prefix, zip_digits, lat, lon, utcoffset, weight)


COUNTRIES: tuple[Country, ...] = (
    Country("USA", 0.36, False, False, 1.0, 0.55, "en", (23, 24, 66, 73, 98, 108, 174), (
        _r("CA", "Los Angeles", "900", 2, 34.05, -118.24, -480, 6, "803"),
        _r("CA", "San Francisco", "941", 2, 37.77, -122.42, -480, 3, "807"),
        _r("NY", "New York", "100", 2, 40.71, -74.01, -300, 8, "501"),
        _r("TX", "Houston", "770", 2, 29.76, -95.37, -360, 3, "618"),
        _r("TX", "Dallas", "752", 2, 32.78, -96.80, -360, 3, "623"),
        _r("IL", "Chicago", "606", 2, 41.88, -87.63, -360, 4, "602"),
        _r("FL", "Miami", "331", 2, 25.76, -80.19, -300, 3, "528"),
        _r("WA", "Seattle", "981", 2, 47.61, -122.33, -480, 2, "819"),
        _r("GA", "Atlanta", "303", 2, 33.75, -84.39, -300, 3, "524"),
        _r("AZ", "Phoenix", "850", 2, 33.45, -112.07, -420, 2, "753"),
        _r("PA", "Philadelphia", "191", 2, 39.95, -75.17, -300, 3, "504"),
        _r("MA", "Boston", "021", 2, 42.36, -71.06, -300, 2, "506"),
        _r("CO", "Denver", "802", 2, 39.74, -104.99, -420, 2, "751"),
        _r("OH", "Columbus", "432", 2, 39.96, -83.00, -300, 2, "535"),
        _r("MN", "Minneapolis", "554", 2, 44.98, -93.27, -360, 1.5, "613"),
    )),
    Country("CAN", 0.035, False, False, 0.75, 0.55, "en", (24, 70, 142, 184), (
        _r("ON", "Toronto", "M5V", 0, 43.65, -79.38, -300, 4),
        _r("QC", "Montreal", "H2X", 0, 45.50, -73.57, -300, 2),
        _r("BC", "Vancouver", "V6B", 0, 49.28, -123.12, -480, 2),
        _r("AB", "Calgary", "T2P", 0, 51.05, -114.07, -420, 1),
    )),
    Country("MEX", 0.025, False, False, 0.35, 0.2, "es", (187, 189, 201), (
        _r("CMX", "Mexico City", "06", 3, 19.43, -99.13, -360, 4),
        _r("JAL", "Guadalajara", "44", 3, 20.66, -103.35, -360, 2),
        _r("NLE", "Monterrey", "64", 3, 25.69, -100.32, -360, 2),
    )),
    Country("BRA", 0.045, False, False, 0.3, 0.12, "pt", (177, 179, 187, 189, 200), (
        _r("SP", "São Paulo", "01", 3, -23.55, -46.63, -180, 5),
        _r("RJ", "Rio de Janeiro", "20", 3, -22.91, -43.17, -180, 3),
        _r("MG", "Belo Horizonte", "30", 3, -19.92, -43.94, -180, 2),
    )),
    Country("ARG", 0.01, False, False, 0.25, 0.12, "es", (181, 186, 190), (
        _r("C", "Buenos Aires", "C10", 2, -34.60, -58.38, -180, 3),
        _r("X", "Córdoba", "X50", 2, -31.42, -64.18, -180, 1),
    )),
    Country("GBR", 0.07, True, False, 0.8, 0.5, "en", (2, 31, 51, 81, 86, 90), (
        _r("ENG", "London", "E", 1, 51.51, -0.13, 0, 6),
        _r("ENG", "Manchester", "M", 1, 53.48, -2.24, 0, 2),
        _r("ENG", "Birmingham", "B", 1, 52.49, -1.89, 0, 2),
        _r("ENG", "Leeds", "LS", 1, 53.80, -1.55, 0, 1),
        _r("SCT", "Glasgow", "G", 1, 55.86, -4.25, 0, 1),
    )),
    Country("DEU", 0.05, True, True, 0.75, 0.35, "de", (5, 31, 46, 62, 79, 84, 91), (
        _r("BE", "Berlin", "10", 3, 52.52, 13.40, 60, 3),
        _r("BY", "Munich", "80", 3, 48.14, 11.58, 60, 2),
        _r("HH", "Hamburg", "20", 3, 53.55, 9.99, 60, 2),
        _r("NW", "Cologne", "50", 3, 50.94, 6.96, 60, 2),
        _r("HE", "Frankfurt am Main", "60", 3, 50.11, 8.68, 60, 1.5),
    )),
    Country("FRA", 0.04, True, True, 0.65, 0.35, "fr", (2, 37, 78, 82, 90), (
        _r("IDF", "Paris", "750", 2, 48.86, 2.35, 60, 5),
        _r("ARA", "Lyon", "690", 2, 45.76, 4.84, 60, 2),
        _r("PAC", "Marseille", "130", 2, 43.30, 5.37, 60, 2),
    )),
    Country("ESP", 0.025, True, True, 0.5, 0.25, "es", (2, 37, 79, 83, 88), (
        _r("MD", "Madrid", "280", 2, 40.42, -3.70, 60, 3),
        _r("CT", "Barcelona", "080", 2, 41.39, 2.17, 60, 2),
    )),
    Country("ITA", 0.025, True, True, 0.5, 0.3, "it", (2, 5, 79, 87, 93), (
        _r("25", "Milan", "201", 2, 45.46, 9.19, 60, 3),
        _r("62", "Rome", "001", 2, 41.90, 12.50, 60, 3),
    )),
    Country("NLD", 0.015, True, True, 0.7, 0.4, "nl", (31, 77, 84, 145), (
        _r("NH", "Amsterdam", "10", 2, 52.37, 4.90, 60, 2),
        _r("ZH", "Rotterdam", "30", 2, 51.92, 4.48, 60, 1),
    )),
    Country("POL", 0.015, True, False, 0.35, 0.2, "pl", (31, 46, 83, 89), (
        _r("14", "Warsaw", "00", 3, 52.23, 21.01, 60, 2),
        _r("12", "Kraków", "30", 3, 50.06, 19.94, 60, 1),
    )),
    Country("SWE", 0.01, True, False, 0.75, 0.5, "sv", (78, 81, 90), (
        _r("AB", "Stockholm", "11", 3, 59.33, 18.07, 60, 2),
        _r("O", "Gothenburg", "41", 3, 57.71, 11.97, 60, 1),
    )),
    Country("IND", 0.06, False, False, 0.12, 0.05, "en", (49, 103, 106, 117, 122), (
        _r("MH", "Mumbai", "400", 3, 19.08, 72.88, 330, 3),
        _r("DL", "Delhi", "110", 3, 28.61, 77.21, 330, 3),
        _r("KA", "Bengaluru", "560", 3, 12.97, 77.59, 330, 2),
        _r("TN", "Chennai", "600", 3, 13.08, 80.27, 330, 1),
    )),
    Country("IDN", 0.02, False, False, 0.15, 0.08, "id", (36, 39, 103, 114), (
        _r("JK", "Jakarta", "10", 3, -6.21, 106.85, 420, 3),
        _r("JI", "Surabaya", "60", 3, -7.26, 112.75, 420, 1),
    )),
    Country("PHL", 0.01, False, False, 0.15, 0.12, "en", (49, 112, 120, 175), (
        _r("00", "Manila", "10", 2, 14.60, 120.98, 480, 1),
    )),
    Country("JPN", 0.04, False, False, 0.65, 0.65, "ja", (1, 27, 60, 106, 126, 153), (
        _r("13", "Tokyo", "100-", 4, 35.68, 139.69, 540, 4),
        _r("27", "Osaka", "530-", 4, 34.69, 135.50, 540, 2),
        _r("23", "Nagoya", "450-", 4, 35.18, 136.91, 540, 1),
    )),
    Country("KOR", 0.01, False, False, 0.55, 0.3, "ko", (1, 14, 58, 112, 175, 211), (
        _r("11", "Seoul", "0", 4, 37.57, 126.98, 540, 1),
    )),
    Country("AUS", 0.02, False, False, 0.7, 0.55, "en", (1, 14, 101, 110, 120, 203), (
        _r("NSW", "Sydney", "20", 2, -33.87, 151.21, 600, 3),
        _r("VIC", "Melbourne", "30", 2, -37.81, 144.96, 600, 3),
        _r("QLD", "Brisbane", "40", 2, -27.47, 153.03, 600, 1),
    )),
    Country("TUR", 0.01, False, False, 0.15, 0.15, "tr", (78, 85, 88, 176), (
        _r("34", "Istanbul", "34", 3, 41.01, 28.98, 180, 1),
    )),
    Country("ZAF", 0.005, False, False, 0.3, 0.2, "en", (41, 102, 105, 197), (
        _r("GP", "Johannesburg", "20", 2, -26.20, 28.05, 120, 1),
    )),
)  # fmt: skip


@dataclass(frozen=True)
class RegionTable:
    """The world flattened into arrays, one row per region, for vectorised draws."""

    country_of: npt.NDArray[np.int64]  # region -> country index
    weight: npt.NDArray[np.float64]  # share of all traffic (sums to 1)
    utcoffset: npt.NDArray[np.int64]  # minutes
    country_value: npt.NDArray[np.float64]  # per country
    country_gdpr: npt.NDArray[np.bool_]  # per country
    country_euro: npt.NDArray[np.bool_]  # per country
    country_ios_share: npt.NDArray[np.float64]  # per country
    regions: tuple[Region, ...]

    @property
    def n_regions(self) -> int:
        return len(self.regions)


def region_table() -> RegionTable:
    country_of: list[int] = []
    weights: list[float] = []
    regions: list[Region] = []
    for index, country in enumerate(COUNTRIES):
        total = sum(region.weight for region in country.regions)
        for region in country.regions:
            country_of.append(index)
            weights.append(country.weight * region.weight / total)
            regions.append(region)
    weight = np.array(weights)
    return RegionTable(
        country_of=np.array(country_of, dtype=np.int64),
        weight=weight / weight.sum(),
        utcoffset=np.array([region.utcoffset for region in regions], dtype=np.int64),
        country_value=np.array([country.value for country in COUNTRIES]),
        country_gdpr=np.array([country.gdpr for country in COUNTRIES]),
        country_euro=np.array([country.euro for country in COUNTRIES]),
        country_ios_share=np.array([country.ios_share for country in COUNTRIES]),
        regions=tuple(regions),
    )


COUNTRY_INDEX: dict[str, int] = {country.alpha3: i for i, country in enumerate(COUNTRIES)}
