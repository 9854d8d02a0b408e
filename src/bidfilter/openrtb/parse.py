"""Strict, fast BidRequest decoding with errors that name the offending field.

Decoding is one msgspec pass into the typed subset of :mod:`bidfilter.openrtb.model` (whose
integers are 64-bit); the checks that types cannot express (non-empty ids and imps, a media object
per imp, no negative sizes, floors from 0 to ``MAX_BIDFLOOR``, flag values) follow in a short
loop. The fields that OpenRTB 2.6 moved out of ``ext`` are read by :mod:`bidfilter.openrtb.signals`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

from bidfilter.openrtb.errors import InvalidRequestError
from bidfilter.openrtb.model import LENIENT_FIELDS, BidRequest, Imp


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on what the parser accepts; anything larger is refused before decoding."""

    max_bytes: int = 1 << 20
    max_imps: int = 100


DEFAULT_LIMITS = ParseLimits()

MAX_BIDFLOOR = 1e9
"""A CPM floor above this, in any currency, is a mistake; features would overflow float32."""

_DECODER = msgspec.json.Decoder(BidRequest)
# msgspec reports "<what> - at `$.imp[0].id`"; the path is the field we name on the wire.
_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")


def _validation_error(exc: msgspec.ValidationError) -> InvalidRequestError:
    match = _PATH.match(str(exc))
    message, path = (match.group("message"), match.group("path") or "") if match else (str(exc), "")
    missing = _MISSING.match(message)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
        message = "required field is missing"
    return InvalidRequestError(path or "$", message)


def parse_bid_request(raw: bytes | str, limits: ParseLimits = DEFAULT_LIMITS) -> BidRequest:
    """Decode and validate one OpenRTB 2.5/2.6 BidRequest (UTF-8 JSON)."""
    if len(raw) > limits.max_bytes:
        raise InvalidRequestError(
            "$", f"request is {len(raw)} bytes, over the {limits.max_bytes} limit"
        )
    if isinstance(raw, bytes | bytearray | memoryview) and not bytes(raw).isascii():
        # msgspec checks UTF-8 only in the strings it keeps; skipped fields must be valid too.
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError("$", f"invalid UTF-8 at byte {exc.start}") from None
    try:
        request = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        request = _without_malformed_targeting_fields(raw, exc)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError("$", str(exc)) from None
    except RecursionError:
        raise InvalidRequestError("$", "JSON is nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequestError("$", f"invalid UTF-8 at byte {exc.start}") from None
    except UnicodeEncodeError as exc:  # a str holding a lone surrogate
        raise InvalidRequestError("$", f"not encodable as UTF-8 at character {exc.start}") from None
    _check(request, limits)
    return request


_PATH_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_MAX_DROPPED = 16


def _without_malformed_targeting_fields(
    raw: bytes | str, error: msgspec.ValidationError
) -> BidRequest:
    """The request with each malformed field of ``LENIENT_FIELDS`` removed (slow path: only
    requests that fail the typed decode come here); any other invalid field is refused."""
    try:
        document = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        # The typed decode stopped at its first invalid field; what follows may be worse.
        raise _validation_error(error) from None
    for _ in range(_MAX_DROPPED):
        refusal = _validation_error(error)
        if not _drop(document, refusal.field):
            raise refusal from None
        try:  # re-encoded, not converted: convert cannot fill the ``ext`` fields kept raw
            decoded: BidRequest = _DECODER.decode(msgspec.json.encode(document))
            return decoded
        except msgspec.ValidationError as again:
            error = again
    raise _validation_error(error) from None


def _drop(document: object, path: str) -> bool:
    """Remove the innermost lenient field on ``path`` (``site.content.cat[2]``) from
    ``document``; False when the path holds none."""
    steps = [name if name else int(index) for name, index in _PATH_STEP.findall(path)]
    lenient = [
        i for i, step in enumerate(steps) if isinstance(step, str) and step in LENIENT_FIELDS
    ]
    if not lenient:
        return False
    parent: object = document
    for step in steps[: lenient[-1]]:
        try:
            parent = parent[step]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return False
    if not isinstance(parent, dict) or steps[lenient[-1]] not in parent:
        return False
    del parent[steps[lenient[-1]]]
    return True


def _check(request: BidRequest, limits: ParseLimits) -> None:
    if not request.id:
        raise InvalidRequestError("id", "must not be empty")
    if not request.imp:
        raise InvalidRequestError("imp", "must hold at least one impression")
    if len(request.imp) > limits.max_imps:
        raise InvalidRequestError(
            "imp", f"{len(request.imp)} impressions, over the {limits.max_imps} limit"
        )
    if request.tmax is not None and request.tmax < 0:
        raise InvalidRequestError("tmax", "must not be negative")
    for index, imp in enumerate(request.imp):
        _check_imp(imp, index)
    regs = request.regs
    if regs is not None:
        for where, flag in (("regs.gdpr", regs.gdpr), ("regs.coppa", regs.coppa)):
            if flag not in (None, 0, 1):
                raise InvalidRequestError(where, f"must be 0 or 1, not {flag}")


def _check_imp(imp: Imp, index: int) -> None:
    # Field names are only formatted once something is wrong: this runs on every request.
    if not imp.id:
        raise InvalidRequestError(f"imp[{index}].id", "must not be empty")
    banner, video = imp.banner, imp.video
    if banner is None and video is None and imp.audio is None and imp.native is None:
        raise InvalidRequestError(f"imp[{index}]", "needs one of banner, video, audio or native")
    if not 0 <= imp.bidfloor <= MAX_BIDFLOOR:
        if imp.bidfloor < 0:
            raise InvalidRequestError(f"imp[{index}].bidfloor", "must not be negative")
        raise InvalidRequestError(f"imp[{index}].bidfloor", f"over the {MAX_BIDFLOOR:g} limit")
    if banner is not None:
        if _negative(banner.w, banner.h):
            raise _negative_size(f"imp[{index}].banner", banner.w)
        for k, fmt in enumerate(banner.format or ()):
            if _negative(fmt.w, fmt.h):
                raise _negative_size(f"imp[{index}].banner.format[{k}]", fmt.w)
    if video is not None and _negative(video.w, video.h):
        raise _negative_size(f"imp[{index}].video", video.w)


def _negative(w: int | None, h: int | None) -> bool:
    return (w is not None and w < 0) or (h is not None and h < 0)


def _negative_size(where: str, w: int | None) -> InvalidRequestError:
    """The error for a size with a negative width (named first) or height."""
    name = "w" if w is not None and w < 0 else "h"
    return InvalidRequestError(f"{where}.{name}", "must not be negative")
