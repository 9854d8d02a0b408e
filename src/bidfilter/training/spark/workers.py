"""The code Spark's Python workers run for ``bidfilter train --engine spark``.

Each function maps a stream of Arrow record batches to another (``DataFrame.mapInArrow``) and
calls the functions the local engine and the server call: the server's parser, the one feature
definition (:func:`~bidfilter.features.extract`, through :class:`~bidfilter.features.FeatureEncoder`
for model rows), the local time split, :meth:`BidModel.predict`. Kept apart from the driver-side
modules so that a worker imports only what it runs (the driver side pulls in the whole training
stack: plotting, the Spark estimator, scikit-learn).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bidfilter.features import (
    CATEGORICAL_FEATURES,
    SET_FEATURES,
    FeatureEncoder,
    FeatureSpec,
    extract,
)
from bidfilter.openrtb import InvalidRequestError, parse_bid_request
from bidfilter.training.dataset import split_of

REQUEST_FACTS_SCHEMA = ", ".join(
    [
        "ts_ms long",
        "split byte",
        "refused_field string",
        "partner_names array<string>",
        "least_propensity float",
        *(f"{name} string" for name in CATEGORICAL_FEATURES),
        *(f"set_{name} array<string>" for name in SET_FEATURES),
    ]
)
MODEL_ROWS_SCHEMA = (
    "request_id string, ts_ms long, partner string, partner_code int, split byte, bid boolean,"
    " oracle_p float, propensity float, control boolean, features array<float>"
)
SCORES_SCHEMA = (
    "split byte, ts_ms long, partner_code int, bid boolean, oracle_p float, weight float,"
    " control boolean, score double"
)
_NO_CATEGORICAL_VALUES: tuple[None, ...] = (None,) * len(CATEGORICAL_FEATURES)
_NO_SET_MEMBERS: tuple[list[str], ...] = tuple([] for _ in SET_FEATURES)


def request_facts(
    batches: Iterator[pa.RecordBatch],
    valid_start: int,
    test_start: int,
    usd_per_unit: Mapping[str, float],
) -> Iterator[pa.RecordBatch]:
    """Pass 1 over the logs: per request, its ``ts_ms``, ``split``, the field the parser refused
    (null if valid), its ``partner_names`` (the partners it was sent to) and
    ``least_propensity`` (the least propensity of those; both passed through), its raw
    categorical values and the members of its set features."""
    for batch in batches:
        ts = batch.column("ts_ms").to_numpy()
        refused: list[str | None] = []
        values: list[list[str | None]] = [[] for _ in CATEGORICAL_FEATURES]
        members: list[list[list[str]]] = [[] for _ in SET_FEATURES]
        for text, ts_ms in zip(batch.column("request").to_pylist(), ts.tolist(), strict=True):
            try:
                request = parse_bid_request(text)
            except InvalidRequestError as error:
                refused.append(error.field)
                categorical: Sequence[str | None] = _NO_CATEGORICAL_VALUES
                sets: Sequence[list[str]] = _NO_SET_MEMBERS
            else:
                refused.append(None)
                _, categorical, sets = extract(request, ts_ms, usd_per_unit)
            for column, value in zip(values, categorical, strict=True):
                column.append(value)
            for set_column, listed in zip(members, sets, strict=True):
                set_column.append(listed)
        yield pa.RecordBatch.from_arrays(
            [
                batch.column("ts_ms"),
                pa.array(split_of(ts, valid_start, test_start)),
                pa.array(refused, pa.string()),
                batch.column("partner_names"),
                batch.column("least_propensity"),
                *(pa.array(column, pa.string()) for column in values),
                *(pa.array(column, pa.list_(pa.string())) for column in members),
            ],
            names=[
                "ts_ms",
                "split",
                "refused_field",
                "partner_names",
                "least_propensity",
                *CATEGORICAL_FEATURES,
                *(f"set_{name}" for name in SET_FEATURES),
            ],
        )


def model_rows(
    batches: Iterator[pa.RecordBatch], spec: FeatureSpec, valid_start: int, test_start: int
) -> Iterator[pa.RecordBatch]:
    """Pass 2 over the logs: the model row of every (valid request, partner in ``spec`` it was
    sent to), by the server's encoder, with the request id, partner, split, bid, oracle,
    propensity and the request's control flag beside it. An unsent entry has no label: as
    locally, it is no row at all."""
    encoder = FeatureEncoder(spec)
    width = len(spec.names)
    for batch in batches:
        ts = batch.column("ts_ms").to_numpy()
        split = split_of(ts, valid_start, test_start)
        outcomes = batch.column("partners")
        lengths = pc.list_value_length(outcomes).fill_null(0).to_numpy()
        starts = np.concatenate([[0], np.cumsum(lengths)])
        flat = pc.list_flatten(outcomes)
        names = flat.field("partner").to_pylist()
        sent = flat.field("sent").to_numpy(zero_copy_only=False).astype(bool)
        blocks: list[np.ndarray] = []
        request_of_row: list[int] = []
        outcome_of_row: list[int] = []
        for row, text in enumerate(batch.column("request").to_pylist()):
            try:
                request = parse_bid_request(text)
            except InvalidRequestError:
                continue  # counted in pass 1
            known = [
                outcome
                for outcome in range(starts[row], starts[row + 1])
                if sent[outcome] and names[outcome] in encoder.partner_codes
            ]
            if not known:
                continue
            blocks.append(encoder.rows(request, int(ts[row]), [names[i] for i in known]))
            request_of_row.extend([row] * len(known))
            outcome_of_row.extend(known)
        features = np.concatenate(blocks) if blocks else np.empty((0, width), np.float32)
        requests = np.asarray(request_of_row, dtype=np.int64)
        chosen = np.asarray(outcome_of_row, dtype=np.int64)
        oracle = flat.field("oracle_p").to_numpy(zero_copy_only=False).astype(np.float32)
        propensity = flat.field("propensity").to_numpy(zero_copy_only=False).astype(np.float32)
        yield pa.RecordBatch.from_arrays(
            [
                batch.column("request_id").take(pa.array(requests)),
                pa.array(ts[requests], pa.int64()),
                pa.array([names[i] for i in chosen], pa.string()),
                pa.array(features[:, -1].astype(np.int32)),
                pa.array(split[requests]),
                flat.field("bid").take(pa.array(chosen)),
                pa.array(oracle[chosen]),
                pa.array(propensity[chosen]),
                batch.column("control").take(pa.array(requests)),
                pa.ListArray.from_arrays(
                    pa.array(np.arange(0, features.size + 1, width, dtype=np.int32)),
                    pa.array(features.ravel()),
                ),
            ],
            names=[
                "request_id",
                "ts_ms",
                "partner",
                "partner_code",
                "split",
                "bid",
                "oracle_p",
                "propensity",
                "control",
                "features",
            ],
        )


def bid_probabilities(
    batches: Iterator[pa.RecordBatch], model_bytes: bytes, spec: FeatureSpec, threads: int
) -> Iterator[pa.RecordBatch]:
    """Model rows (as :data:`MODEL_ROWS_SCHEMA`, with their ``weight``) scored by
    :meth:`BidModel.predict`; only what thresholds and the report need is kept beside the
    score."""
    # Imported here: XGBoost (and the scikit-learn it loads) costs seconds per worker process,
    # and the feature passes do not need it.
    import xgboost as xgb

    from bidfilter.training.model import BidModel

    booster = xgb.Booster(params={"nthread": threads}, model_file=bytearray(model_bytes))
    model = BidModel(booster, spec)
    width = len(spec.names)
    for batch in batches:
        features = pc.list_flatten(batch.column("features")).to_numpy().reshape(-1, width)
        yield pa.RecordBatch.from_arrays(
            [
                batch.column("split"),
                batch.column("ts_ms"),
                batch.column("partner_code"),
                batch.column("bid"),
                batch.column("oracle_p"),
                batch.column("weight"),
                batch.column("control"),
                pa.array(model.predict(features)),
            ],
            names=[
                "split",
                "ts_ms",
                "partner_code",
                "bid",
                "oracle_p",
                "weight",
                "control",
                "score",
            ],
        )
