"""From a request and its candidates to per-partner decisions: score, threshold, explore."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from bidfilter.openrtb.model import BidRequest
from bidfilter.scoring.serving_model import ServingModel

# Decisions are built as the wire struct itself: no copy between scoring and encoding.
from bidfilter.thrift.types import PartnerDecision

UNKNOWN_PARTNER_PROBABILITY = -1.0
_CRC_SPAN = float(1 << 32)


def exploration_draw(request_id: str, partner: str) -> float:
    """A number in [0, 1) fixed by (request id, partner): a retried request gets the same answer,
    and different partners of one request are explored independently."""
    return zlib.crc32(partner.encode(), zlib.crc32(request_id.encode() + b"\x00")) / _CRC_SPAN


def decide(
    model: ServingModel,
    request: BidRequest,
    candidates: Sequence[str] | None,
    now_ms: int,
    exploration_rate: float = 0.01,
) -> list[PartnerDecision]:
    """One decision per candidate, in candidate order (all the model's partners when None).

    A partner the model does not know is sent (fail open for that partner) with probability -1.
    Below-threshold pairs are sent anyway, flagged ``explore``, for a hash-chosen share
    ``exploration_rate`` of them, so the logs keep showing what filtered traffic would have got.
    """
    partners = model.partners if candidates is None else candidates
    codes = model.encoder.partner_codes
    known = [p for p in partners if p in codes]
    scores: dict[str, float] = {}
    if known:
        rows = model.encoder.rows(request, now_ms, known)
        for partner, score in zip(known, model.predict(rows), strict=True):
            scores[partner] = float(score)
    decisions = []
    for partner in partners:
        code = codes.get(partner)
        if code is None:
            decisions.append(
                PartnerDecision(partner, UNKNOWN_PARTNER_PROBABILITY, True, False, 0.0)
            )
            continue
        score = scores[partner]
        threshold = float(model.thresholds[code])
        send = score >= threshold
        explore = (
            not send
            and exploration_rate > 0
            and exploration_draw(request.id, partner) < exploration_rate
        )
        decisions.append(PartnerDecision(partner, score, send or explore, explore, threshold))
    return decisions


def fail_open(
    candidates: Sequence[str] | None, model: ServingModel | None
) -> list[PartnerDecision]:
    """Every candidate sent: the answer when the filter cannot (or must not) decide."""
    partners: Sequence[str] = (
        candidates if candidates is not None else (model.partners if model is not None else ())
    )
    thresholds = model.thresholds if model is not None else np.empty(0)
    codes = model.encoder.partner_codes if model is not None else {}
    return [
        PartnerDecision(
            partner,
            UNKNOWN_PARTNER_PROBABILITY,
            True,
            False,
            float(thresholds[codes[partner]]) if partner in codes else 0.0,
        )
        for partner in partners
    ]
