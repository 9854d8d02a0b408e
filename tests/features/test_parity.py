"""Training and serving build identical feature rows for the same request and partner.

Training extracts features in batch (``build_dataset``); serving encodes one request at a time
(``FeatureEncoder``). Both go through ``extract``, and this test pins them together on every row.
The partner-affinity columns of training rows are the one designed difference: they are out of
fold (features/affinity.py), so there they are checked on validation and test rows only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from bidfilter.features import FeatureEncoder
from bidfilter.logs import iter_log_batches
from bidfilter.openrtb import InvalidRequestError, parse_bid_request
from bidfilter.training.config import DatasetConfig
from bidfilter.training.dataset import build_dataset


def test_training_rows_equal_serving_rows(synth_logs: Path) -> None:
    data = build_dataset(synth_logs, DatasetConfig(negative_rate=1.0, vocabulary_min_count=2))
    logged: list[tuple[bytes, int]] = []
    for batch in iter_log_batches(synth_logs, columns=["ts", "request"]):
        for ts, text in zip(
            batch.column("ts").cast(pa.int64()).to_pylist(),
            batch.column("request").to_pylist(),
            strict=True,
        ):
            try:
                parse_bid_request(text)
            except InvalidRequestError:
                continue
            logged.append((text.encode(), ts))

    encoder = FeatureEncoder(data.spec)
    out_of_fold = [data.spec.names.index(name) for name in data.spec.affinity_columns]
    assert out_of_fold
    checked = 0
    for split in (data.train, data.valid, data.test):
        features = split.features
        compared = np.ones(features.shape[1], dtype=bool)
        if split is data.train:
            compared[out_of_fold] = False
        for row in range(len(split)):
            raw, ts = logged[split.requests[row]]
            partner = data.spec.partners[split.partners[row]]
            served = encoder.rows(parse_bid_request(raw), ts, [partner])[0]
            np.testing.assert_array_equal(served[compared], features[row, compared])
            checked += 1
    assert checked == len(data.train) + len(data.valid) + len(data.test) > 1000
    # Vocabularies are in use, not just out-of-vocabulary codes.
    publisher = data.spec.names.index("publisher")
    assert (data.train.features[:, publisher] > 0).mean() > 0.5
