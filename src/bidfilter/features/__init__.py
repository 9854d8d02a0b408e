"""Features: one definition (:func:`extract`), executed per request at serving time and over
millions of logged requests at training time."""

from bidfilter.features.batch import RequestFeatureBuilder
from bidfilter.features.extract import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    SET_FEATURES,
    extract,
    load_usd_rates,
)
from bidfilter.features.spec import (
    FEATURE_SPEC_VERSION,
    OUT_OF_VOCABULARY,
    PARTNER_FEATURE,
    FeatureEncoder,
    FeatureSpec,
    FeatureSpecError,
)

__all__ = [
    "CATEGORICAL_FEATURES",
    "FEATURE_SPEC_VERSION",
    "NUMERIC_FEATURES",
    "OUT_OF_VOCABULARY",
    "PARTNER_FEATURE",
    "SET_FEATURES",
    "FeatureEncoder",
    "FeatureSpec",
    "FeatureSpecError",
    "RequestFeatureBuilder",
    "extract",
    "load_usd_rates",
]
