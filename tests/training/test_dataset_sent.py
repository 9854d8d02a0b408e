"""The dataset from filtered logs: unsent entries have no label, so they are no rows (and never
negatives); each row carries the propensity it was called with. Old logs mix in as all-sent."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bidfilter.logs import AuctionLogWriter, auction_batch
from bidfilter.training.config import DatasetConfig
from bidfilter.training.dataset import SplitRows, build_dataset

DAY = int(dt.datetime(2024, 5, 2, tzinfo=dt.UTC).timestamp() * 1000)
REQUESTS = 60
PARTNERS = ["dsp-a", "dsp-b", "dsp-c"]  # dsp-c is never called: it has no label at all


def request(request_id: str) -> str:
    return json.dumps({"id": request_id, "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]})


def write_filtered_logs(root: Path) -> dict[str, np.ndarray]:
    """A day of filtered traffic: dsp-a always called, dsp-b called on every third request (an
    exploration at 0.25), dsp-c never; every other request's dsp-a bids."""
    rows = np.arange(REQUESTS)
    called_b = rows % 3 == 0
    sent = np.stack([np.ones(REQUESTS, bool), called_b, np.zeros(REQUESTS, bool)], axis=1)
    bids = np.stack([rows % 2 == 0, called_b & (rows % 2 == 1), np.zeros(REQUESTS, bool)], axis=1)
    propensity = np.stack(
        [np.ones(REQUESTS), np.full(REQUESTS, 0.25), np.full(REQUESTS, 0.25)], axis=1
    )
    batch = auction_batch(
        DAY + rows * 60_000,
        [f"r{i}" for i in rows],
        [request(f"r{i}") for i in rows],
        np.arange(0, (REQUESTS + 1) * 3, 3, dtype=np.int32),
        PARTNERS * REQUESTS,
        bids.ravel(),
        np.where(bids, 1.0, 0.0).ravel(),
        sent=sent.ravel(),
        propensity=propensity.ravel(),
        model_version=["v1"] * (3 * REQUESTS),
    )
    with AuctionLogWriter(root) as writer:
        writer.write(batch)
    return {"sent": sent, "bids": bids}


def write_old_day(root: Path) -> None:
    """The day before, as a log written before ``sent`` existed: every partner called."""
    partner_type = pa.struct(
        [
            pa.field("partner", pa.string(), nullable=False),
            pa.field("bid", pa.bool_(), nullable=False),
            pa.field("price", pa.float64(), nullable=False),
            pa.field("oracle_p", pa.float64(), nullable=True),
        ]
    )
    rows = [
        {
            "ts": dt.datetime.fromtimestamp((DAY - 86_400_000 + i * 60_000) / 1000, tz=dt.UTC),
            "request_id": f"old{i}",
            "request": request(f"old{i}"),
            "partners": [{"partner": "dsp-a", "bid": i % 2 == 1, "price": 0.0, "oracle_p": None}],
        }
        for i in range(20)
    ]
    table = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                pa.field("ts", pa.timestamp("ms", tz="UTC")),
                pa.field("request_id", pa.string()),
                pa.field("request", pa.string()),
                pa.field("partners", pa.list_(partner_type)),
            ]
        ),
    )
    folder = root / "date=2024-05-01"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-00000.parquet")


CONFIG = DatasetConfig(
    negative_rate=1.0, partner_affinity=False, recency_half_life_days=None, vocabulary_min_count=1
)


def all_rows(splits: list[SplitRows], partners: list[str]) -> tuple[list[str], np.ndarray]:
    names = [partners[code] for split in splits for code in split.partners]
    propensity = [split.propensity for split in splits]
    assert all(p is not None for p in propensity)
    return names, np.concatenate([p for p in propensity if p is not None])


def test_unsent_entries_are_not_training_rows(tmp_path: Path) -> None:
    logged = write_filtered_logs(tmp_path)

    data = build_dataset(tmp_path, CONFIG)

    splits = [data.train, data.valid, data.test]
    assert sum(len(split) for split in splits) == int(logged["sent"].sum())  # 60 + 20, not 180
    # dsp-c was never called: no label, so no rows and no code (serving fails open for it).
    assert data.spec.partners == ["dsp-a", "dsp-b"]
    names, propensity = all_rows(splits, data.spec.partners)
    assert names.count("dsp-b") == int(logged["sent"][:, 1].sum())
    # Every dsp-b row is one it was called on: half of them bid, none is an invented no-bid.
    b_code = data.spec.partners.index("dsp-b")
    b_bids = [bool(bid) for split in splits for bid in split.bids[split.partners == b_code]]
    assert sum(b_bids) == int(logged["bids"][:, 1].sum()) == len(b_bids) // 2
    # The propensity travels beside each row.
    is_b = np.array([name == "dsp-b" for name in names])
    assert np.all(propensity[is_b] == np.float32(0.25))
    assert np.all(propensity[~is_b] == 1.0)
    # take() keeps it aligned.
    picked = data.train.take(np.array([0]))
    assert picked.propensity is not None and data.train.propensity is not None
    assert picked.propensity[0] == data.train.propensity[0]


def test_old_and_new_logs_train_together(tmp_path: Path) -> None:
    write_old_day(tmp_path)
    logged = write_filtered_logs(tmp_path)

    data = build_dataset(tmp_path, CONFIG)

    splits = [data.train, data.valid, data.test]
    assert data.requests == 20 + REQUESTS
    assert sum(len(split) for split in splits) == 20 + int(logged["sent"].sum())
    _, propensity = all_rows(splits, data.spec.partners)
    assert int(np.count_nonzero(propensity == 1.0)) == 20 + REQUESTS  # the old day's, and dsp-a's
