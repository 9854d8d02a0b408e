"""A Spark Python worker imports only what it runs: ``bidfilter.training.spark.workers`` by
module path (the functions handed to ``mapInArrow``), without the driver side."""

from __future__ import annotations

import json
import subprocess
import sys

DRIVER_SIDE = (
    "pyspark",
    "xgboost",
    "matplotlib",
    "sklearn",
    "bidfilter.training.pipeline",
    "bidfilter.training.spark.engine",
    "bidfilter.training.spark.dataset",
)


def _imported_after(statement: str) -> list[str]:
    # A fresh interpreter: this one has imported everything the other tests needed.
    script = (
        "import json, sys\n"
        f"{statement}\n"
        f"print(json.dumps([name for name in {DRIVER_SIDE!r} if name in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    names: list[str] = json.loads(done.stdout)
    return names


def test_importing_the_training_packages_imports_nothing_heavy() -> None:
    assert _imported_after("import bidfilter.training, bidfilter.training.spark") == []


def test_a_spark_worker_leaves_out_the_driver_side() -> None:
    assert _imported_after("import bidfilter.training.spark.workers") == []
