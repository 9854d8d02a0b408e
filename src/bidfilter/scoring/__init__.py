"""Scoring: a verified model version and the per-partner decisions made with it."""

from bidfilter.scoring.decide import (
    UNKNOWN_PARTNER_PROBABILITY,
    Exploration,
    Verdict,
    control_draw,
    decide,
    exploration_draw,
    fail_open,
    in_control_group,
)
from bidfilter.scoring.serving_model import CandidatePlan, ServingModel

__all__ = [
    "UNKNOWN_PARTNER_PROBABILITY",
    "CandidatePlan",
    "Exploration",
    "ServingModel",
    "Verdict",
    "control_draw",
    "decide",
    "exploration_draw",
    "fail_open",
    "in_control_group",
]
