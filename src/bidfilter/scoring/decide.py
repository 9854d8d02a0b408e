"""From a request and its candidates to per-partner decisions: score, threshold, explore."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bidfilter.openrtb.model import BidRequest
from bidfilter.scoring.serving_model import ServingModel

# Decisions are built as the wire struct itself: no copy between scoring and encoding.
from bidfilter.thrift.types import PartnerDecision

try:
    from bidfilter.scoring._forest import decide as _compiled_choose
except ImportError:  # installed without a C compiler: choose() below does it
    _compiled_choose = None  # type: ignore[assignment]

UNKNOWN_PARTNER_PROBABILITY = -1.0
_CRC_SPAN = float(1 << 32)
_NOT_A_PARTNER = np.empty(0, dtype=np.intp)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decisions for one request, and the same as arrays for the per-partner counters."""

    decisions: list[PartnerDecision]
    partner_index: np.ndarray  # intp per decision: the model's partner code, -1 if unknown
    sent: list[bool]
    explored: list[bool]


def exploration_draw(request_id: str, partner: str) -> float:
    """A number in [0, 1) fixed by (request id, partner): a retried request gets the same answer,
    and different partners of one request are explored independently."""
    return zlib.crc32(partner.encode(), _request_seed(request_id)) / _CRC_SPAN


def _request_seed(request_id: str) -> int:
    return zlib.crc32(request_id.encode() + b"\x00")


def decide(
    model: ServingModel,
    request: BidRequest,
    candidates: Sequence[str] | None,
    now_ms: int,
    exploration_rate: float = 0.01,
) -> Verdict:
    """One decision per candidate, in candidate order (all the model's partners when None).

    A partner the model does not know is sent (fail open for that partner) with probability -1.
    Below-threshold pairs are sent anyway, flagged ``explore``, for a hash-chosen share
    ``exploration_rate`` of them, so the logs keep showing what filtered traffic would have got.
    """
    plan = model.plan(candidates)
    row, keyed = model.encoder.request_inputs(request, now_ms)
    scores = model.score_request(row, plan.codes, keyed)
    if plan.known is not None:
        known_scores = scores
        scores = np.full(len(plan.names), UNKNOWN_PARTNER_PROBABILITY)
        scores[plan.known] = known_scores
    seed = _request_seed(request.id) if exploration_rate > 0 else 0
    decisions, send, explore = _choose(
        scores,
        plan.cutoffs,
        plan.thresholds,
        plan.names,
        plan.hash_keys,
        seed,
        exploration_rate * _CRC_SPAN,
        PartnerDecision,
    )
    return Verdict(decisions, plan.partner_index, send, explore)


def choose(
    scores: np.ndarray,
    cutoffs: np.ndarray,
    thresholds: list[float],
    names: list[str],
    keys: list[bytes],
    seed: int,
    limit: float,
    decision: type[PartnerDecision],
) -> tuple[list[PartnerDecision], list[bool], list[bool]]:
    """Send at or over the cutoff; explore (and send) a candidate below it when the CRC-32 of
    its key, seeded by the request, falls under ``limit``. The compiled ``_forest.decide`` does
    the same, and is tested against this."""
    # Plain lists: for a few dozen partners, numpy's per-operation cost dominates.
    send = (scores >= cutoffs).tolist()
    explore = [False] * len(send)
    if limit > 0:
        for position, key in enumerate(keys):
            if not send[position] and zlib.crc32(key, seed) < limit:
                explore[position] = send[position] = True
    decisions = list(map(decision, names, scores.tolist(), send, explore, thresholds))
    return decisions, send, explore


# choose(), compiled: its loop was a third of what a call spent in Python after scoring.
_choose = choose if _compiled_choose is None else _compiled_choose


def fail_open(candidates: Sequence[str] | None, model: ServingModel | None) -> Verdict:
    """Every candidate sent: the answer when the filter cannot (or must not) decide."""
    if model is None:
        names = list(candidates or ())
        decisions = [
            PartnerDecision(name, UNKNOWN_PARTNER_PROBABILITY, True, False, 0.0) for name in names
        ]
        index = np.full(len(names), -1, dtype=np.intp) if names else _NOT_A_PARTNER
    else:
        plan = model.plan(candidates)
        decisions = [
            PartnerDecision(name, UNKNOWN_PARTNER_PROBABILITY, True, False, threshold)
            for name, threshold in zip(plan.names, plan.thresholds, strict=True)
        ]
        index = plan.partner_index
    return Verdict(decisions, index, [True] * len(decisions), [False] * len(decisions))
