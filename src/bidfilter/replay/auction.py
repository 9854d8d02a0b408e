"""The SSP's auction, as the simulator settles it: who wins, what is paid, from which floor.

Prices are CPM (per thousand impressions), as OpenRTB and the logs give them; an auction's
revenue is its clearing price / 1000 (one impression per request). Logged bids are taken as
valid bids, as the log recorded them (a bid below the floor is not thrown out).

Clearing price, with ``floor`` the highest ``imp[].bidfloor`` of the request (0 when none):

- ``first_price``: the highest bid;
- ``second_price`` with two bids or more: the second-highest bid, raised to the floor, never
  above the highest bid: ``min(highest, max(second, floor))``;
- ``second_price`` with a single bid: the floor when there is one (never above the bid),
  else the bid itself (there is no second price to fall back on, and charging nothing would
  make a lone bidder free);
- no bid: the auction is not filled, nothing is paid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

import msgspec

AuctionKind = Literal["second_price", "first_price"]
AUCTION_KINDS: Final[tuple[AuctionKind, ...]] = ("second_price", "first_price")


class _Imp(msgspec.Struct):
    bidfloor: float = 0.0


class _FloorsOnly(msgspec.Struct):
    imp: list[_Imp] = []


_floors_decoder: Final = msgspec.json.Decoder(_FloorsOnly)


def floor_of(openrtb: bytes) -> float:
    """The request's highest ``imp[].bidfloor`` (CPM); 0 when it has none, or does not parse
    (the filter server is where requests are validated, not the simulator)."""
    try:
        request = _floors_decoder.decode(openrtb)
    except msgspec.DecodeError:
        return 0.0
    return max((imp.bidfloor for imp in request.imp), default=0.0)


def clearing_price(bids: Sequence[float], floor: float, auction: AuctionKind) -> float:
    """What the winner pays (CPM) given the ``bids`` received; 0 when there is none."""
    if not bids:
        return 0.0
    if auction == "first_price":
        return max(bids)
    if auction != "second_price":
        raise ValueError(f"auction must be one of {AUCTION_KINDS}, not {auction!r}")
    if len(bids) == 1:
        (bid,) = bids
        return min(floor, bid) if floor > 0 else bid
    highest, second = sorted(bids, reverse=True)[:2]
    return min(highest, max(second, floor))


def revenue(bids: Sequence[float], floor: float, auction: AuctionKind) -> float:
    """One auction's revenue: the clearing price for one impression (CPM / 1000)."""
    return clearing_price(bids, floor, auction) / 1000.0
