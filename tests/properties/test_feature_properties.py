"""Properties of the features of any request the parser accepts.

Serving encodes one request (``FeatureEncoder.request_vector``); training stacks many
(``RequestFeatureBuilder``). For generated requests with values at the edges of their types,
and for the OpenRTB corpus: the row has the spec's width, every value is finite or NaN (NaN:
absent), the same request gives the same row, time features agree with ``datetime``, and the
training matrix equals the serving rows (tests/features/test_parity.py pins the same on
synthetic logs through the whole training dataset).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from request_strategies import INT64_MAX, INT64_MIN, VALID_CORPUS_FILES, bid_requests

from bidfilter.features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    FeatureEncoder,
    FeatureSpec,
    RequestFeatureBuilder,
)
from bidfilter.openrtb import BidRequest, parse_bid_request
from bidfilter.openrtb.parse import MAX_BIDFLOOR

PARTNERS = ["dsp-a", "dsp-b"]
ENCODER = FeatureEncoder(
    FeatureSpec(
        vocabularies={
            name: ["", "0", "USA", "300x250", "ios", "d1"] for name in CATEGORICAL_FEATURES
        },
        partners=PARTNERS,
    )
)
N_NUMERIC = len(NUMERIC_FEATURES)
COLUMN = {name: index for index, name in enumerate(NUMERIC_FEATURES)}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
timestamps = st.integers(0, 4_102_444_800_000)  # 1970 to 2100, in milliseconds
CORPUS_REQUESTS = [parse_bid_request(path.read_bytes()) for path in VALID_CORPUS_FILES]


def parsed(body: dict[str, Any]) -> BidRequest:
    return parse_bid_request(json.dumps(body).encode())


def assert_well_formed(row: np.ndarray, vocabulary_sizes: list[int]) -> None:
    assert row.dtype == np.float32 and row.shape == (ENCODER.width,)
    assert not np.isinf(row).any(), row
    for code, size in zip(row[N_NUMERIC:-1], vocabulary_sizes, strict=True):
        assert math.isnan(code) or (code == int(code) and 0 <= code <= size), (code, size)
    for name in ("is_app", "has_banner", "has_video", "has_native", "has_audio", "has_user_id"):
        assert row[COLUMN[name]] in (0.0, 1.0)


@settings(max_examples=150)
@given(body=bid_requests(), ts=timestamps)
def test_request_vector_is_finite_or_nan_and_deterministic(body: dict[str, Any], ts: int) -> None:
    row = ENCODER.request_vector(parsed(body), ts)
    assert_well_formed(row, [6] * len(CATEGORICAL_FEATURES))
    assert math.isnan(row[-1])  # the partner column is the caller's
    # A fresh parse of the same bytes, encoded again: no state carried between calls.
    np.testing.assert_array_equal(row, ENCODER.request_vector(parsed(body), ts))
    assert row[COLUMN["imp_count"]] == len(body["imp"])
    floor_max, floor_min = row[COLUMN["floor_max"]], row[COLUMN["floor_min"]]
    assert math.isnan(floor_max) == math.isnan(floor_min)
    assert math.isnan(floor_max) or 0 <= floor_min <= floor_max

    rows = ENCODER.rows(parsed(body), ts, [*PARTNERS, "unknown"])
    np.testing.assert_array_equal(rows[:, :-1], np.repeat(row[None, :-1], 3, axis=0))
    np.testing.assert_array_equal(rows[:, -1], [0.0, 1.0, np.nan])


@settings(max_examples=150)
@given(ts=timestamps, utcoffset=st.none() | st.integers(-(10**6), 10**6))
def test_time_features_agree_with_datetime(ts: int, utcoffset: int | None) -> None:
    geo = {} if utcoffset is None else {"utcoffset": utcoffset}
    request = parsed({"id": "r", "imp": [{"id": "1", "banner": {}}], "device": {"geo": geo}})
    row = ENCODER.request_vector(request, ts)
    received = EPOCH + timedelta(milliseconds=ts)
    assert row[COLUMN["hour_utc"]] == received.hour
    assert row[COLUMN["weekday_utc"]] == received.weekday()
    if utcoffset is None:
        assert math.isnan(row[COLUMN["hour_local"]])
    else:
        assert row[COLUMN["hour_local"]] == (received + timedelta(minutes=utcoffset)).hour


def test_extreme_values_give_finite_features() -> None:
    size = INT64_MAX  # sizes may not be negative
    for big in (INT64_MAX, INT64_MIN):
        body = {
            "id": "r",
            "imp": [
                {
                    "id": "1",
                    "banner": {"w": size, "h": size, "format": [{"w": size, "h": size}]},
                    "video": {
                        "minduration": big,
                        "maxduration": big,
                        "plcmt": big,
                        "startdelay": big,
                    },
                    "bidfloor": MAX_BIDFLOOR,
                    "bidfloorcur": "GBP",  # the largest rate: the floor grows in USD
                    "instl": big,
                    "secure": big,
                }
            ],
            "device": {
                "devicetype": big,
                "connectiontype": big,
                "lmt": big,
                "dnt": big,
                "geo": {"utcoffset": big},
            },
            "tmax": size,
        }
        row = ENCODER.request_vector(parsed(body), INT64_MAX // 2)
        assert_well_formed(row, [6] * len(CATEGORICAL_FEATURES))


def _parity(
    requests: list[BidRequest], stamps: list[int], mask: np.ndarray | None, min_count: int
) -> int:
    builder = RequestFeatureBuilder()
    for request, ts in zip(requests, stamps, strict=True):
        builder.add(request, ts)
    assert len(builder) == len(requests)
    matrix, vocabularies, sets = builder.build(mask, min_count=min_count)
    encoder = FeatureEncoder(FeatureSpec(vocabularies=vocabularies, partners=PARTNERS, sets=sets))
    sizes = [len(vocabularies[name]) for name in CATEGORICAL_FEATURES]
    n_sets = sum(len(members) for members in sets.values())
    for index, (request, ts) in enumerate(zip(requests, stamps, strict=True)):
        served = encoder.request_vector(request, ts)
        np.testing.assert_array_equal(served[:-1], matrix[index], err_msg=f"row {index}")
        assert not np.isinf(served).any()
        assert set(served[N_NUMERIC : N_NUMERIC + n_sets]) <= {0.0, 1.0}
        for code, size in zip(served[N_NUMERIC + n_sets : -1], sizes, strict=True):
            assert math.isnan(code) or 0 <= code <= size
    return sum(sizes) + n_sets


@settings(max_examples=40)
@given(
    bodies=st.lists(bid_requests(max_imps=2), min_size=1, max_size=5),
    data=st.data(),
    min_count=st.integers(1, 3),
)
def test_training_matrix_equals_serving_rows(
    bodies: list[dict[str, Any]], data: st.DataObject, min_count: int
) -> None:
    # Requests repeat, so that values reach min_count and vocabularies are not all empty.
    picks = data.draw(st.lists(st.integers(0, len(bodies) - 1), min_size=1, max_size=20))
    requests = [parsed(bodies[pick]) for pick in picks]
    stamps = data.draw(st.lists(timestamps, min_size=len(picks), max_size=len(picks)))
    # Only the marked rows (training rows) choose the vocabularies.
    mask = data.draw(st.none() | st.lists(st.booleans(), min_size=len(picks), max_size=len(picks)))
    _parity(requests, stamps, None if mask is None else np.array(mask), min_count)


def test_training_matrix_equals_serving_rows_on_the_corpus() -> None:
    # 13 passes over the corpus: more rows than the builder's 8192-row chunk.
    requests = CORPUS_REQUESTS * 13
    stamps = [1_700_000_000_000 + index * 1_234_567 for index in range(len(requests))]
    mask = np.arange(len(requests)) % 3 != 0
    assert len(requests) > 8192
    assert _parity(requests, stamps, mask, min_count=10) > 50  # real vocabularies in use
