"""The Spark engine builds the local engine's rows and spec, and publishes the same artifact.

One local[2] session for the module (bound to 127.0.0.1, no UI), shared by the end-to-end run
of the ``bidfilter train --engine spark`` command. Besides the synthetic logs, a directory mixing
files written before ``sent``, ``propensity`` and ``control`` existed with files a filter shaped
(unsent entries, propensities under 1, a control group): both engines must read it alike.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")
pytest.importorskip("xgboost.spark")
if shutil.which("java") is None:
    pytest.skip("Spark needs a Java runtime (java on PATH)", allow_module_level=True)

from filtered_logs import as_filtered
from pyspark.sql import SparkSession

from bidfilter.artifact import open_store, verify
from bidfilter.cli import main
from bidfilter.logs import AuctionLogWriter, iter_log_batches, log_files
from bidfilter.openrtb import InvalidRequestError, parse_bid_request
from bidfilter.scoring.serving_model import ServingModel
from bidfilter.training.config import DatasetConfig, ModelConfig, TrainConfig
from bidfilter.training.dataset import SplitRows, build_dataset, recency_weights
from bidfilter.training.pipeline import train
from bidfilter.training.spark import (
    SparkDataset,
    build_spark_dataset,
    fit_on_spark,
    train_on_spark,
)
from bidfilter.training.spark.dataset import read_logs

pytestmark = pytest.mark.slow

# A low vocabulary threshold, so that 4000 requests give vocabularies worth comparing.
# The Spark engine does not compute partner affinities (yet): compared with a local build without.
CONFIG = DatasetConfig(vocabulary_min_count=2, partner_affinity=False)
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "1g",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    with pytest.MonkeyPatch.context() as patch:
        # Python workers must run this interpreter (the one with bidfilter), not PATH's python3.
        patch.setenv("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder.master("local[2]").appName("bidfilter-tests")
        for key, value in SPARK_CONF.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        # py4j says goodbye at interpreter exit, when pytest has closed the streams that CLI
        # tests pointed logging at; its INFO lines are noise anyway.
        logging.getLogger("py4j").setLevel(logging.WARNING)
        try:
            yield session
        finally:
            session.stop()


@pytest.fixture(scope="module")
def spark_data(spark: SparkSession, synth_logs: Path) -> SparkDataset:
    return build_spark_dataset(spark, str(synth_logs), CONFIG)  # cached rows go with the session


@pytest.fixture(scope="module")
def spark_rows(spark_data: SparkDataset) -> pa.Table:
    return spark_data.rows.toArrow()


def _request_ids(logs: Path) -> list[str]:
    """The ids of the valid logged requests, in log order (what ``SplitRows.requests`` indexes)."""
    ids = []
    for batch in iter_log_batches(logs, columns=["request_id", "request"]):
        for request_id, text in zip(
            batch.column("request_id").to_pylist(), batch.column("request").to_pylist(), strict=True
        ):
            try:
                parse_bid_request(text)
            except InvalidRequestError:
                continue
            ids.append(request_id)
    return ids


def _sorted_by_key(
    request_ids: np.ndarray, partners: np.ndarray, *columns: np.ndarray
) -> tuple[np.ndarray, ...]:
    order = np.lexsort((partners, request_ids))
    return tuple(column[order] for column in (request_ids, partners, *columns))


def _local_rows(split: SplitRows, ids: np.ndarray, partners: list[str]) -> tuple[np.ndarray, ...]:
    """(request id, partner, features, bid, oracle, propensity, control) by (request, partner)."""
    assert split.propensity is not None and split.control is not None
    return _sorted_by_key(
        ids[split.requests],
        np.array(partners, dtype=object)[split.partners],
        split.features,
        split.bids,
        split.oracle_p,
        split.propensity,
        split.control,
    )


def _spark_rows(rows: pa.Table, split: int) -> tuple[np.ndarray, ...]:
    """As :func:`_local_rows`, then the weight and ``ts_ms``."""
    rows = rows.filter(pc.equal(rows.column("split"), split))
    width = len(rows.column("features")[0]) if rows.num_rows else 0
    return _sorted_by_key(
        np.array(rows.column("request_id").to_pylist(), dtype=object),
        np.array(rows.column("partner").to_pylist(), dtype=object),
        pc.list_flatten(rows.column("features")).to_numpy().reshape(-1, width),
        rows.column("bid").to_numpy(),
        rows.column("oracle_p").to_numpy(),
        rows.column("propensity").to_numpy(),
        rows.column("control").to_numpy(zero_copy_only=False),
        rows.column("weight").to_numpy(),
        rows.column("ts_ms").to_numpy(),
    )


def test_spark_builds_the_local_feature_spec_and_split(
    spark_data: SparkDataset, synth_logs: Path
) -> None:
    local = build_dataset(synth_logs, CONFIG)
    summary = spark_data.summary
    assert summary.spec == local.spec
    assert summary.spec.to_dict() == local.spec.to_dict()  # same order too, as saved in manifests
    assert sum(len(v) for v in summary.spec.vocabularies.values()) > 100
    assert (summary.data_start, summary.data_end) == (local.data_start, local.data_end)
    assert (summary.valid_start, summary.test_start) == (local.valid_start, local.test_start)
    assert summary.requests == local.requests
    assert summary.skipped_fields == local.skipped_fields
    assert (summary.rows["valid"], summary.rows["test"]) == (len(local.valid), len(local.test))
    assert summary.exploration == local.exploration == {}  # every partner always called
    assert not spark_data.inverse_propensity


def test_spark_rows_equal_local_rows(
    spark_rows: pa.Table, spark_data: SparkDataset, synth_logs: Path
) -> None:
    local = build_dataset(
        synth_logs,
        DatasetConfig(vocabulary_min_count=2, negative_rate=1.0, partner_affinity=False),
    )
    ids = np.array(_request_ids(synth_logs), dtype=object)
    partners = local.spec.partners

    # Validation and test rows are never sampled: the very same rows, value for value.
    for code, split in ((1, local.valid), (2, local.test)):
        mine = _local_rows(split, ids, partners)
        theirs = _spark_rows(spark_rows, code)
        assert len(theirs[0]) == len(split) > 1000
        for expected, actual in zip(mine, theirs[:-2], strict=True):
            np.testing.assert_array_equal(actual, expected)
        assert (theirs[-2] == 1.0).all()  # recency weights training rows only

    # Training rows: every bid, a share of the non-bids weighted back up, each row as locally.
    request_ids, row_partners, features, bids, oracle, _, _, weights, ts = _spark_rows(
        spark_rows, 0
    )
    assert len(bids) == spark_data.summary.rows["train"]
    local_ids, local_partners, local_features, local_bids, local_oracle, *_ = _local_rows(
        local.train, ids, partners
    )
    where = {key: row for row, key in enumerate(zip(local_ids, local_partners, strict=True))}
    at = np.array([where[key] for key in zip(request_ids, row_partners, strict=True)])
    np.testing.assert_array_equal(features, local_features[at])
    np.testing.assert_array_equal(bids, local_bids[at])
    np.testing.assert_array_equal(oracle, local_oracle[at])
    assert bids.sum() == local_bids.sum()
    rate = CONFIG.negative_rate
    assert CONFIG.recency_half_life_days is not None
    valid_start_ms = int(spark_data.summary.valid_start.timestamp() * 1000)
    recency = recency_weights(ts, valid_start_ms, CONFIG.recency_half_life_days)
    np.testing.assert_allclose(weights[bids], recency[bids], rtol=1e-5)
    np.testing.assert_allclose(weights[~bids], recency[~bids] / rate, rtol=1e-5)
    kept_share = (~bids).sum() / (~local_bids).sum()
    assert 0.8 * rate < kept_share < 1.2 * rate


def _old_schema(table: pa.Table) -> pa.Table:
    """``table`` as a log written before ``sent``, ``propensity``, ``model_version`` and
    ``control`` existed would hold it."""
    lists = table.column("partners").combine_chunks()
    flat = lists.values
    old_entry = pa.StructArray.from_arrays(
        [flat.field(name) for name in ("partner", "bid", "price", "oracle_p")],
        names=["partner", "bid", "price", "oracle_p"],
    )
    return pa.table(
        {
            "ts": table.column("ts"),
            "request_id": table.column("request_id"),
            "request": table.column("request"),
            "partners": pa.ListArray.from_arrays(lists.offsets, old_entry),
        }
    )


def _mixed_copy(source: Path, out: Path) -> None:
    """The synthetic logs' first day as an old-schema file; the later days as a filter would have
    left them: each partner called when its true bid probability is high, else explored at 0.25,
    but dsp-02 at 0.001 (almost never: too little exploration to estimate it); every 10th
    request in the control group (everyone called)."""
    first, *later = log_files(source)
    old = out / first.relative_to(source)
    old.parent.mkdir(parents=True)
    pq.write_table(_old_schema(pq.read_table(first)), old)
    rng = np.random.default_rng(5)
    with AuctionLogWriter(out, part_name="part-new") as writer:
        for path in later:
            batch = pq.read_table(path).combine_chunks().to_batches()[0]
            writer.write(as_filtered(batch, rng))


# Every row kept, so that the training rows too compare one for one.
UNSAMPLED = DatasetConfig(vocabulary_min_count=2, negative_rate=1.0, partner_affinity=False)


@pytest.fixture(scope="module")
def mixed_logs(synth_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mixed") / "logs"
    _mixed_copy(synth_logs, out)
    return out


def test_spark_reads_old_schema_files_with_the_old_logs_values(
    spark: SparkSession, synth_logs: Path, tmp_path: Path
) -> None:
    first = log_files(synth_logs)[0]
    old = tmp_path / "old" / first.relative_to(synth_logs)
    old.parent.mkdir(parents=True)
    pq.write_table(_old_schema(pq.read_table(first)), old)
    logged = read_logs(spark, str(tmp_path / "old")).toArrow()
    assert logged.num_rows == pq.ParquetFile(first).metadata.num_rows
    entries = pc.list_flatten(logged.column("partners")).combine_chunks()
    assert pc.all(entries.field("sent")).as_py()
    assert pc.all(pc.equal(entries.field("propensity"), 1.0)).as_py()
    assert not pc.any(logged.column("control")).as_py()


def test_spark_rows_and_weights_equal_local_ones_on_mixed_filtered_logs(
    spark: SparkSession, mixed_logs: Path
) -> None:
    local = build_dataset(mixed_logs, UNSAMPLED)
    data = build_spark_dataset(spark, str(mixed_logs), UNSAMPLED)
    try:
        rows = data.rows.toArrow()
    finally:
        data.rows.unpersist()
    summary = data.summary
    assert summary.spec == local.spec
    assert summary.requests == local.requests
    assert data.inverse_propensity
    # Per partner the logs filtered: its entries below propensity 1 and the explored ones.
    assert summary.exploration == local.exploration
    assert summary.exploration["dsp-02"].explored < 200 < summary.exploration["dsp-02"].filtered
    # An unsent entry is no row: there are as many rows as sent entries (of known partners).
    entries = pc.list_flatten(
        pa.concat_arrays(
            [
                batch.column("partners")
                for batch in iter_log_batches(mixed_logs, columns=["partners"])
            ]
        )
    )
    sent = pc.sum(entries.field("sent")).as_py()
    total = sum(summary.rows.values())
    assert total == len(local.train) + len(local.valid) + len(local.test) <= sent
    assert sent < 0.8 * len(entries)

    ids = np.array(_request_ids(mixed_logs), dtype=object)
    for code, split in enumerate((local.train, local.valid, local.test)):
        mine = _local_rows(split, ids, local.spec.partners)
        theirs = _spark_rows(rows, code)
        assert len(theirs[0]) == len(split) > 500
        for expected, actual in zip(mine, theirs[:-2], strict=True):
            np.testing.assert_array_equal(actual, expected)
        # Every split weighs its inverse propensity, clipped, as locally; training rows their
        # recency too (no negative was sampled out).
        assert split.weights is not None
        _, _, local_weights = _sorted_by_key(
            ids[split.requests],
            np.array(local.spec.partners, dtype=object)[split.partners],
            split.weights,
        )
        np.testing.assert_allclose(theirs[-2], local_weights, rtol=1e-6)
        propensity, control = theirs[5], theirs[6]
        assert (propensity < 1).any() and control.any()
        if code > 0:
            np.testing.assert_allclose(
                theirs[-2], 1 / np.maximum(propensity, UNSAMPLED.min_propensity), rtol=1e-6
            )


def test_train_on_spark_on_filtered_logs_reports_inverse_propensity_estimates(
    spark: SparkSession, mixed_logs: Path, tmp_path: Path
) -> None:
    config = TrainConfig(
        model=ModelConfig(trees=20, learning_rate=0.3, early_stopping_rounds=5),
        dataset=DatasetConfig(partner_affinity=False),
    )
    result = train_on_spark(spark, str(mixed_logs), open_store(str(tmp_path / "spark")), config)
    local = train(mixed_logs, open_store(str(tmp_path / "local")), config).report
    report = result.report
    assert _key_paths(report) == _key_paths(local)
    test = report["test"]
    assert test["estimate"] == local["test"]["estimate"] == "inverse_propensity"
    assert test["bid_recall_ci"][0] <= test["bid_recall"] <= test["bid_recall_ci"][1]
    assert report["data"]["rows"]["test"] == local["data"]["rows"]["test"]
    for name, entry in report["partners"].items():
        assert entry["exploration"] == local["partners"][name]["exploration"], name
        assert entry["validation_bids"] == local["partners"][name]["validation_bids"], name
        assert entry["effective_validation_bids"] == pytest.approx(
            local["partners"][name]["effective_validation_bids"], abs=0.1
        )
    # dsp-02 was filtered and hardly ever explored: sent everything, on either engine.
    thin = report["partners"]["dsp-02"]
    assert thin["threshold_method"] == "unexplored" and thin["threshold"] == 0.0
    assert any("dsp-02" in w and "exploration" in w for w in report["warnings"])
    # The control group's figures, unweighted, on the same test requests as locally.
    assert report["control"] is not None and "estimate" not in report["control"]
    assert report["control"]["calls"] == local["control"]["calls"] < test["calls"]


def test_spark_booster_gets_the_local_hyperparameters(spark_data: SparkDataset) -> None:
    config = ModelConfig(trees=8, max_depth=4, learning_rate=0.3, early_stopping_rounds=3)
    model = fit_on_spark(spark_data, config, num_workers=2)
    assert 1 <= model.trees <= 8
    assert model.booster.feature_names == spark_data.summary.spec.names
    assert model.booster.feature_types == spark_data.summary.spec.feature_types
    settings = json.loads(model.booster.save_config())["learner"]
    booster = settings["gradient_booster"]["tree_train_param"]
    assert float(booster["eta"]) == pytest.approx(0.3)
    assert int(booster["max_depth"]) == 4
    assert float(booster["lambda"]) == pytest.approx(config.reg_lambda)
    assert float(booster["min_child_weight"]) == pytest.approx(config.min_child_weight)
    assert int(booster["max_cat_to_onehot"]) == 1
    assert settings["objective"]["name"] == "binary:logistic"


def _key_paths(value: Any, prefix: str = "") -> set[str]:
    """Every key path of nested dicts (``data.rows.train``...); lists count as leaves."""
    if not isinstance(value, dict):
        return {prefix}
    return {path for key, item in value.items() for path in _key_paths(item, f"{prefix}.{key}")}


def test_train_command_on_spark_publishes_a_servable_version(
    spark: SparkSession,
    synth_logs: Path,
    trained_store: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Last in the module: like any command, ``train`` stops its Spark session when done (here the
    module's, which ``--spark-master local[2]`` finds already running)."""
    store_dir = tmp_path / "store"
    command = ["--log-level", "WARNING", "train", "--engine", "spark", "--spark-master", "local[2]"]
    command += ["--logs", str(synth_logs), "--store", str(store_dir), "--json"]
    command += ["--trees", "40", "--learning-rate", "0.3", "--early-stopping", "5"]
    assert main(command) == 0
    version = json.loads(capsys.readouterr().out)["version"]
    assert open_store(str(store_dir)).latest() == version

    folder = store_dir / "versions" / version
    local_dir, local_version = trained_store
    local_folder = local_dir / "versions" / local_version
    assert set(verify(folder).files) == set(verify(local_folder).files)
    report = json.loads((folder / "report.json").read_text())
    local_report = json.loads((local_folder / "report.json").read_text())
    assert _key_paths(report) == _key_paths(local_report)
    assert report["test"]["auc"] > local_report["test"]["auc"] - 0.03
    assert report["data"]["rows"]["test"] == local_report["data"]["rows"]["test"]

    served = ServingModel.load(folder)
    assert served.partners == tuple(verify(local_folder).partners)
    batch = next(iter_log_batches(synth_logs, columns=["ts", "request"], batch_size=50))
    requests = [parse_bid_request(text) for text in batch.column("request").to_pylist()]
    ts = batch.column("ts").cast(pa.int64()).to_pylist()
    scores = np.concatenate(
        [
            served.predict(served.encoder.rows(request, at, served.partners))
            for request, at in zip(requests, ts, strict=True)
        ]
    )
    assert ((scores > 0) & (scores < 1)).all()
    assert scores.std() > 0.01  # a model, not a constant
