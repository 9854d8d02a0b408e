"""The privacy, identity, supply-chain and location signals, wherever the request carries them.

OpenRTB 2.6 moved ``gdpr``, ``us_privacy``, ``gpp``, ``consent``, ``eids`` and ``schain`` out of
the ``ext`` objects where 2.5 senders put them. Each accessor reads the 2.6 location first, then
the 2.5 one, so features never ask which version a request is. The ``ext`` objects stay raw JSON
in the parsed request (:mod:`bidfilter.openrtb.model`) and are decoded here, only when the 2.6
field is absent.
"""

from __future__ import annotations

from typing import NamedTuple, TypeVar

import msgspec

from bidfilter.openrtb.model import (
    BidRequest,
    Eid,
    Geo,
    RegsExt,
    SourceExt,
    SupplyChain,
    UserExt,
)

_ExtT = TypeVar("_ExtT", RegsExt, UserExt, SourceExt)


def _ext(raw: msgspec.Raw, kind: type[_ExtT]) -> _ExtT | None:
    """Decode an ``ext`` object leniently: one that is absent or malformed counts as absent."""
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.MsgspecError:
        return None


class RegsSignals(NamedTuple):
    gdpr: int | None
    us_privacy: str | None
    gpp: str | None


class UserSignals(NamedTuple):
    consent: str | None
    eids: list[Eid]


_NO_REGS = RegsSignals(None, None, None)
_NO_USER = UserSignals(None, [])


def regs_signals(request: BidRequest) -> RegsSignals:
    """gdpr, us_privacy and gpp together: ``regs.ext`` is decoded at most once for the three."""
    regs = request.regs
    if regs is None:
        return _NO_REGS
    if regs.gdpr is not None and regs.us_privacy is not None and regs.gpp is not None:
        return RegsSignals(regs.gdpr, regs.us_privacy, regs.gpp)
    ext = _ext(regs.ext, RegsExt)
    if ext is None:
        return RegsSignals(regs.gdpr, regs.us_privacy, regs.gpp)
    return RegsSignals(
        regs.gdpr if regs.gdpr is not None else ext.gdpr if ext.gdpr in (0, 1) else None,
        regs.us_privacy if regs.us_privacy is not None else ext.us_privacy,
        regs.gpp if regs.gpp is not None else ext.gpp,
    )


def user_signals(request: BidRequest) -> UserSignals:
    """consent and eids together: ``user.ext`` is decoded at most once for both."""
    user = request.user
    if user is None:
        return _NO_USER
    if user.consent is not None and user.eids is not None:
        return UserSignals(user.consent, user.eids)
    ext = _ext(user.ext, UserExt)
    if ext is None:
        return UserSignals(user.consent, user.eids or [])
    return UserSignals(
        user.consent if user.consent is not None else ext.consent,
        user.eids if user.eids is not None else (ext.eids or []),
    )


def gdpr(request: BidRequest) -> int | None:
    return regs_signals(request).gdpr


def us_privacy(request: BidRequest) -> str | None:
    return regs_signals(request).us_privacy


def gpp(request: BidRequest) -> str | None:
    return regs_signals(request).gpp


def consent(request: BidRequest) -> str | None:
    return user_signals(request).consent


def eids(request: BidRequest) -> list[Eid]:
    return user_signals(request).eids


def schain(request: BidRequest) -> SupplyChain | None:
    source = request.source
    if source is None:
        return None
    if source.schain is not None:
        return source.schain
    ext = _ext(source.ext, SourceExt)
    return ext.schain if ext is not None else None


def geo(request: BidRequest) -> Geo | None:
    """The device's geo, else the user's home geo (OpenRTB puts location in either)."""
    if request.device is not None and request.device.geo is not None:
        return request.device.geo
    return request.user.geo if request.user is not None else None
