"""OpenRTB 2.5/2.6 BidRequest: typed subset, strict parsing, location-agnostic accessors."""

from bidfilter.openrtb.errors import InvalidRequestError
from bidfilter.openrtb.model import BidRequest
from bidfilter.openrtb.parse import DEFAULT_LIMITS, ParseLimits, parse_bid_request

__all__ = [
    "DEFAULT_LIMITS",
    "BidRequest",
    "InvalidRequestError",
    "ParseLimits",
    "parse_bid_request",
]
