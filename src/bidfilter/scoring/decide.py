"""From a request and its candidates to per-partner decisions: score, threshold, explore.

The serving policy is known exactly, so every decision carries its *propensity*: the probability
that the policy sends the request to the partner. At or above the threshold that is 1; below it,
the partner's exploration probability (:class:`Exploration`), whether or not this request was the
one explored; 1 for an unknown partner, on fail-open and in the control group. Both hashes are
deterministic: a retried request gets the same answer. The control group (``control_share`` of
request ids) is drawn with its own hash, independent of the exploration draw.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from bidfilter.openrtb.model import BidRequest
from bidfilter.scoring.serving_model import CandidatePlan, ServingModel

# Decisions are built as the wire struct itself: no copy between scoring and encoding.
from bidfilter.thrift.types import PartnerDecision

try:
    from bidfilter.scoring._forest import decide as _compiled_choose
except ImportError:  # installed without a C compiler: choose() below does it
    _compiled_choose = None  # type: ignore[assignment]

UNKNOWN_PARTNER_PROBABILITY = -1.0
_CRC_SPAN = float(1 << 32)
_CONTROL_SPAN = float(1 << 64)
_CONTROL_PERSON = b"bidfilter-ctrl"  # BLAKE2b's personalisation: the control draw's own salt
_NOT_A_PARTNER = np.empty(0, dtype=np.intp)
SENT_FOR_SURE = 1.0  # the propensity of a decision the threshold (or failing open) sends


class Exploration(NamedTuple):
    """How much below-threshold traffic is sent anyway, per partner.

    A partner's exploration probability is ``max(rate, min_partner)``, and at least
    ``sparse_partner`` for a partner the model's report calls sparse (too few validation bids to
    learn its threshold well: :attr:`ServingModel.sparse_partners`). A tuple: it keys each
    plan's cache of probabilities, and a tuple hashes in C.
    """

    rate: float = 0.01
    min_partner: float = 0.0
    sparse_partner: float = 0.0

    def probability(self, sparse: bool) -> float:
        floor = max(self.rate, self.min_partner)
        return float(max(floor, self.sparse_partner) if sparse else floor)


NO_EXPLORATION = Exploration(rate=0.0)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decisions for one request, and the same as arrays for the per-partner counters."""

    decisions: list[PartnerDecision]
    partner_index: np.ndarray  # intp per decision: the model's partner code, -1 if unknown
    sent: list[bool]
    explored: list[bool]
    control: bool = False  # the request is in the control group: everyone sent, unfiltered


def exploration_draw(request_id: str, partner: str) -> float:
    """A number in [0, 1) fixed by (request id, partner): a retried request gets the same answer,
    and different partners of one request are explored independently."""
    return zlib.crc32(partner.encode(), _request_seed(request_id)) / _CRC_SPAN


def _request_seed(request_id: str) -> int:
    return zlib.crc32(request_id.encode() + b"\x00")


def control_draw(request_id: str) -> float:
    """A number in [0, 1) fixed by the request id, for the control group: BLAKE2b with its own
    personalisation, so it is independent of :func:`exploration_draw` (a CRC-32 is linear, and
    two salted CRCs of one id are not independent)."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=_CONTROL_PERSON).digest()
    return int.from_bytes(digest, "little") / _CONTROL_SPAN


def in_control_group(request_id: str, share: float) -> bool:
    """Whether the request is in the control group of ``share`` of all request ids."""
    return share > 0 and (share >= 1 or control_draw(request_id) < share)


def exploration_probabilities(
    plan: CandidatePlan, exploration: Exploration
) -> tuple[list[float], bool]:
    """Each candidate's exploration probability under ``exploration``, and whether any is above
    0 (else no draw is needed), cached in the plan."""
    cached = plan.explore_probabilities.get(exploration)
    if cached is None:
        probabilities = [exploration.probability(sparse) for sparse in plan.sparse]
        cached = plan.explore_probabilities[exploration] = (probabilities, any(probabilities))
    return cached


def decide(
    model: ServingModel,
    request: BidRequest,
    candidates: Sequence[str] | None,
    now_ms: int,
    exploration_rate: float = 0.01,
    control_share: float = 0.0,
    *,
    exploration: Exploration | None = None,
) -> Verdict:
    """One decision per candidate, in candidate order (all the model's partners when None).

    A partner the model does not know is sent (fail open for that partner) with probability -1.
    Below-threshold pairs are sent anyway, flagged ``explore``, for a hash-chosen share of them
    (the partner's exploration probability under ``exploration``; without it,
    ``exploration_rate`` for every partner), so the logs keep showing what filtered traffic
    would have got. A request in the control group (``control_share`` of request ids) is scored
    but sent to everyone, with propensity 1.
    """
    if exploration is None:
        exploration = Exploration(rate=exploration_rate)
    plan = model.plan(candidates)
    row, keyed = model.encoder.request_inputs(request, now_ms)
    scores = model.score_request(row, plan.codes, keyed)
    if plan.known is not None:
        known_scores = scores
        scores = np.full(len(plan.names), UNKNOWN_PARTNER_PROBABILITY)
        scores[plan.known] = known_scores
    control = control_share > 0 and in_control_group(request.id, control_share)
    # The control group: everyone at or over a cutoff of -inf, nothing to explore.
    cutoffs = plan.open_cutoffs if control else plan.cutoffs
    probabilities, explores = exploration_probabilities(
        plan, NO_EXPLORATION if control else exploration
    )
    seed = _request_seed(request.id) if explores else 0
    decisions, send, explore = _choose(
        scores,
        cutoffs,
        plan.thresholds,
        plan.names,
        plan.hash_keys,
        seed,
        probabilities,
        PartnerDecision,
    )
    return Verdict(decisions, plan.partner_index, send, explore, control)


def choose(
    scores: np.ndarray,
    cutoffs: np.ndarray,
    thresholds: list[float],
    names: list[str],
    keys: list[bytes],
    seed: int,
    probabilities: list[float],
    decision: type[PartnerDecision],
) -> tuple[list[PartnerDecision], list[bool], list[bool]]:
    """Send at or over the cutoff (propensity 1); explore (and send) a candidate below it when
    the CRC-32 of its key, seeded by the request, falls under its exploration probability times
    2**32 (propensity: that probability, explored or not). The compiled ``_forest.decide`` does
    the same, and is tested against this."""
    # Plain lists: for a few dozen partners, numpy's per-operation cost dominates.
    send = (scores >= cutoffs).tolist()
    explore = [False] * len(send)
    propensity = [SENT_FOR_SURE] * len(send)
    for position, key in enumerate(keys):
        if not send[position]:
            probability = propensity[position] = probabilities[position]
            if probability > 0 and zlib.crc32(key, seed) < probability * _CRC_SPAN:
                explore[position] = send[position] = True
    decisions = list(map(decision, names, scores.tolist(), send, explore, thresholds, propensity))
    return decisions, send, explore


# choose(), compiled: its loop was a third of what a call spent in Python after scoring.
_choose = choose if _compiled_choose is None else _compiled_choose


def fail_open(candidates: Sequence[str] | None, model: ServingModel | None) -> Verdict:
    """Every candidate sent: the answer when the filter cannot (or must not) decide."""
    if model is None:
        names = list(candidates or ())
        decisions = [
            PartnerDecision(name, UNKNOWN_PARTNER_PROBABILITY, True, False, 0.0, SENT_FOR_SURE)
            for name in names
        ]
        index = np.full(len(names), -1, dtype=np.intp) if names else _NOT_A_PARTNER
    else:
        plan = model.plan(candidates)
        decisions = [
            PartnerDecision(
                name, UNKNOWN_PARTNER_PROBABILITY, True, False, threshold, SENT_FOR_SURE
            )
            for name, threshold in zip(plan.names, plan.thresholds, strict=True)
        ]
        index = plan.partner_index
    return Verdict(decisions, index, [True] * len(decisions), [False] * len(decisions))
