"""Scoring: a verified model version and the per-partner decisions made with it."""

from bidfilter.scoring.decide import (
    UNKNOWN_PARTNER_PROBABILITY,
    Verdict,
    decide,
    exploration_draw,
    fail_open,
)
from bidfilter.scoring.serving_model import CandidatePlan, ServingModel

__all__ = [
    "UNKNOWN_PARTNER_PROBABILITY",
    "CandidatePlan",
    "ServingModel",
    "Verdict",
    "decide",
    "exploration_draw",
    "fail_open",
]
