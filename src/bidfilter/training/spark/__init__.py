"""``bidfilter train --engine spark``: the local engine's training run, on Apache Spark.

``engine`` is the driver (session, fit, scoring, the whole run); ``dataset`` builds the training
rows on the cluster; ``workers`` is the code Spark's Python workers run, referenced by module path
in the functions handed to ``mapInArrow``.

The names below are the ones callers use. They are loaded on first access, not when the package
is imported: a Python worker importing ``bidfilter.training.spark.workers`` imports this package
first, and must not pay for the driver side (the Spark estimator, plotting, scikit-learn).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bidfilter.training.spark.dataset import SparkDataset, build_spark_dataset
    from bidfilter.training.spark.engine import fit_on_spark, spark_session, train_on_spark

__all__ = ["SparkDataset", "build_spark_dataset", "fit_on_spark", "spark_session", "train_on_spark"]

_HOMES = {
    "SparkDataset": "dataset",
    "build_spark_dataset": "dataset",
    "fit_on_spark": "engine",
    "spark_session": "engine",
    "train_on_spark": "engine",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
