"""From auction logs to (request, partner) training rows, split by time.

The logs are streamed once, batch by batch: each request is parsed and its features extracted by
the same code serving uses; each partner outcome becomes a row index pair (an unsent entry, whose
partner was not called, has no label and becomes no row). The latest part of the
time range is the test set and the part before it the validation set; nothing is split at random,
because a model is always used on traffic that comes after its training data.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bidfilter.features import FeatureSpec, RequestFeatureBuilder, load_usd_rates
from bidfilter.features.affinity import PartnerAffinities, TrainingPairs
from bidfilter.features.extract import Features
from bidfilter.logs import iter_log_batches, log_files
from bidfilter.openrtb import InvalidRequestError, parse_bid_request
from bidfilter.training.config import DatasetConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SplitRows:
    """One split's model input rows, labels and what the report needs beside them.

    A row is its request's row of ``request_matrix`` (shared by every split) followed by its
    partner code: rows are assembled chunk by chunk when needed (``chunks``), so the (request x
    partner) matrix, twenty times the requests', never has to be held whole.
    """

    request_matrix: np.ndarray  # (requests, F - 1) float32: every column but the partner's
    bids: np.ndarray  # (n,) bool
    partners: np.ndarray  # (n,) int32 partner codes
    weights: np.ndarray | None  # (n,) float32; set when negatives were subsampled
    oracle_p: np.ndarray  # (n,) float32, NaN where the logs carry no oracle
    requests: np.ndarray  # (n,) int64: which valid logged request (in log order) each row is of
    ts: np.ndarray  # (n,) int64: when its request was received (epoch ms)
    # (n, E) float32: the partner-affinity columns (features/affinity.py), between the request's
    # columns and the partner's; None when the spec has none.
    affinity: np.ndarray | None = None
    # (n,) float32: the probability the serving policy called the partner (the log's
    # `propensity`, 1 in logs where every partner was called); ``weights`` already hold its
    # inverse. None when the rows' source does not carry it (every row then counts as 1).
    propensity: np.ndarray | None = None
    control: np.ndarray | None = None  # (n,) bool: its request was in the control group

    def __len__(self) -> int:
        return len(self.bids)

    @property
    def features(self) -> np.ndarray:
        """The whole (n, F) float32 model input, columns in FeatureSpec.names order."""
        return self.between(0, len(self))

    def chunks(self, size: int = 1 << 18) -> Iterator[tuple[int, np.ndarray]]:
        """(start, features of rows start..start+size) over the split; an empty split is one
        empty chunk (XGBoost wants at least one)."""
        for start in range(0, max(len(self), 1), size):
            yield start, self.between(start, min(start + size, len(self)))

    def between(self, start: int, end: int) -> np.ndarray:
        """The features of rows start..end."""
        width = self.request_matrix.shape[1]
        extra = 0 if self.affinity is None else self.affinity.shape[1]
        features = np.empty((end - start, width + extra + 1), dtype=np.float32)
        features[:, :width] = self.request_matrix[self.requests[start:end]]
        if self.affinity is not None:
            features[:, width:-1] = self.affinity[start:end]
        features[:, -1] = self.partners[start:end]
        return features

    def take(self, rows: np.ndarray) -> SplitRows:
        """The rows at ``rows`` (indices), as a new split."""
        return SplitRows(
            request_matrix=self.request_matrix,
            bids=self.bids[rows],
            partners=self.partners[rows],
            weights=None if self.weights is None else self.weights[rows],
            oracle_p=self.oracle_p[rows],
            requests=self.requests[rows],
            ts=self.ts[rows],
            affinity=None if self.affinity is None else self.affinity[rows],
            propensity=None if self.propensity is None else self.propensity[rows],
            control=None if self.control is None else self.control[rows],
        )


@dataclass(frozen=True, slots=True)
class TrainingData:
    spec: FeatureSpec
    train: SplitRows
    valid: SplitRows
    test: SplitRows
    data_start: dt.datetime
    data_end: dt.datetime
    valid_start: dt.datetime
    test_start: dt.datetime
    requests: int
    skipped_requests: int
    skipped_fields: dict[str, int]
    unknown_currencies: dict[str, int]
    # Per partner the logs ever filtered: its entries below the serving threshold (propensity
    # under 1, called or not) and those of them exploration called. Empty for unfiltered logs.
    exploration: dict[str, ExplorationCount] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExplorationCount:
    filtered: int  # entries the serving policy would not have sent but for exploration
    explored: int  # of them, the ones exploration sent (labelled)


def count_rows(logs: str | os.PathLike[str]) -> int:
    return sum(pq.ParquetFile(path).metadata.num_rows for path in log_files(logs))


def _timestamps(logs: str | os.PathLike[str]) -> np.ndarray:
    chunks = [
        batch.column("ts").cast(pa.int64()).to_numpy()
        for batch in iter_log_batches(logs, columns=["ts"], batch_size=1 << 20)
    ]
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def split_points(
    timestamps: np.ndarray, config: DatasetConfig, logs: str | os.PathLike[str]
) -> tuple[int, int]:
    """Where the validation and test periods start (epoch ms), from every logged request's ``ts``:
    the quantiles leaving ``valid_fraction`` and ``test_fraction`` of the requests after them."""
    if len(timestamps) < 10:
        raise ValueError(f"{logs}: {len(timestamps)} requests is too few to train on")
    valid_start, test_start = np.quantile(
        timestamps, [1 - config.valid_fraction - config.test_fraction, 1 - config.test_fraction]
    ).astype(np.int64)
    return int(valid_start), int(test_start)


def split_of(ts: np.ndarray, valid_start: int, test_start: int) -> np.ndarray:
    """Each request's split by its ``ts`` (epoch ms): 0 train, 1 validation, 2 test (int8)."""
    return np.where(ts < valid_start, 0, np.where(ts < test_start, 1, 2)).astype(np.int8)


def recency_weights(ts_ms: np.ndarray, until_ms: int, half_life_days: float) -> np.ndarray:
    """0.5 ** (age / half-life) per row, its age counted back from ``until_ms`` (float32)."""
    age_days = np.maximum(until_ms - ts_ms, 0) / 86_400_000
    weights: np.ndarray = np.power(0.5, age_days / half_life_days).astype(np.float32)
    return weights


# What feature extraction made of each logged request, by request id: a caller that trains
# again and again on overlapping windows of the same logs (the closed-loop simulation) keeps it
# rather than parse every request again. Valid for one currency-rate table.
ExtractedCache = MutableMapping[str, Features]


def build_dataset(
    logs: str | os.PathLike[str],
    config: DatasetConfig | None = None,
    progress: Callable[[int], object] | None = None,
    extracted: ExtractedCache | None = None,
) -> TrainingData:
    """Read every log record once and return the train/validation/test rows.

    ``progress`` is called with the number of requests just processed (for a progress bar);
    ``extracted``, if given, is read and filled by request id (see :data:`ExtractedCache`).
    """
    config = config or DatasetConfig()
    valid_start, test_start = split_points(_timestamps(logs), config, logs)

    rates = load_usd_rates(config.currency_rates)
    builder = RequestFeatureBuilder(rates)
    request_ts: list[np.ndarray] = []
    pair_request: list[np.ndarray] = []
    pair_partner: list[np.ndarray] = []
    pair_bid: list[np.ndarray] = []
    pair_oracle: list[np.ndarray] = []
    pair_propensity: list[np.ndarray] = []
    partner_ids: dict[str, int] = {}
    skipped: dict[str, int] = {}
    kept = 0
    pair_control: list[np.ndarray] = []
    filtered_of_id = np.zeros(0, np.int64)  # per partner id: see ExplorationCount
    explored_of_id = np.zeros(0, np.int64)
    pair_sample_rate: list[np.ndarray] = []
    columns = ["ts", "request", "partners", "control", "sample_rate"]
    for batch in iter_log_batches(
        logs,
        columns=columns if extracted is None else [*columns, "request_id"],
        batch_size=config.batch_size,
    ):
        ts = batch.column("ts").cast(pa.int64()).to_numpy()
        keep = np.ones(len(ts), dtype=bool)
        ids = None if extracted is None else batch.column("request_id").to_pylist()
        for row, text in enumerate(batch.column("request").to_pylist()):
            if extracted is not None and ids is not None and ids[row] in extracted:
                builder.add_extracted(extracted[ids[row]])
                continue
            try:
                request = parse_bid_request(text)
            except InvalidRequestError as error:
                keep[row] = False
                skipped[error.field] = skipped.get(error.field, 0) + 1
                continue
            features = builder.add(request, int(ts[row]))
            if extracted is not None and ids is not None:
                extracted[ids[row]] = features
        # Map each kept request of this batch to its global row in the request matrix.
        global_row = np.full(len(ts), -1, dtype=np.int64)
        global_row[keep] = np.arange(kept, kept + int(keep.sum()))
        kept += int(keep.sum())
        request_ts.append(ts[keep])

        outcomes = batch.column("partners")
        parents = pc.list_parent_indices(outcomes).to_numpy()
        flat = pc.list_flatten(outcomes)
        names = flat.field("partner")
        unique = pc.unique(names).to_pylist()
        local_to_global = np.array(
            [partner_ids.setdefault(name, len(partner_ids)) for name in unique], dtype=np.int32
        )
        if len(partner_ids) > len(filtered_of_id):
            grow = len(partner_ids) - len(filtered_of_id)
            filtered_of_id = np.concatenate([filtered_of_id, np.zeros(grow, np.int64)])
            explored_of_id = np.concatenate([explored_of_id, np.zeros(grow, np.int64)])
        partner_global = local_to_global[pc.index_in(names, value_set=pa.array(unique)).to_numpy()]
        rows = global_row[parents]
        # An unsent entry (the partner was not called) has no label: it is not a no-bid, so it
        # is no row at all.
        sent = flat.field("sent").to_numpy(zero_copy_only=False).astype(bool)
        valid_pair = (rows >= 0) & sent
        pair_request.append(rows[valid_pair])
        pair_partner.append(partner_global[valid_pair])
        pair_bid.append(flat.field("bid").to_numpy(zero_copy_only=False)[valid_pair])
        oracle = flat.field("oracle_p").to_numpy(zero_copy_only=False).astype(np.float32)
        pair_oracle.append(oracle[valid_pair])
        propensity = flat.field("propensity").to_numpy(zero_copy_only=False)
        below = propensity < 1
        if below.any():
            np.add.at(filtered_of_id, partner_global[below], 1)
            np.add.at(explored_of_id, partner_global[below & sent], 1)
        pair_propensity.append(propensity.astype(np.float32)[valid_pair])
        control = batch.column("control").to_numpy(zero_copy_only=False).astype(bool)
        pair_control.append(control[parents][valid_pair])
        rate = batch.column("sample_rate").to_numpy(zero_copy_only=False)
        pair_sample_rate.append(rate[parents][valid_pair])
        if progress is not None:
            progress(len(ts))

    if skipped:
        log.warning("skipped %d invalid logged requests: %s", sum(skipped.values()), skipped)
    ts_all = np.concatenate(request_ts)
    request_split = split_of(ts_all, valid_start, test_start)
    matrix, vocabularies, sets = builder.build(
        request_split == 0, max_size=config.vocabulary_size, min_count=config.vocabulary_min_count
    )
    requests_of_pair = np.concatenate(pair_request)
    partner_of_pair = np.concatenate(pair_partner)
    bid_of_pair = np.concatenate(pair_bid).astype(bool)
    oracle_of_pair = np.concatenate(pair_oracle)
    propensity_of_pair = np.concatenate(pair_propensity)
    control_of_pair = np.concatenate(pair_control)
    # What each row stands for in logs a filter shaped (None: every partner was always called).
    inverse_propensity = (
        (1.0 / np.maximum(propensity_of_pair, config.min_propensity)).astype(np.float32)
        if (propensity_of_pair < 1).any()
        else None
    )
    # A record a decision log kept at rate r stands for 1/r requests; relative to the highest
    # rate in the window, so that logs all sampled alike keep weight 1 (and the clip above
    # keeps its meaning).
    sample_rate_of_pair = np.concatenate(pair_sample_rate)
    if len(sample_rate_of_pair) and (sample_rate_of_pair != sample_rate_of_pair.max()).any():
        sampling = (sample_rate_of_pair.max() / sample_rate_of_pair).astype(np.float32)
        inverse_propensity = (
            sampling if inverse_propensity is None else inverse_propensity * sampling
        )
    split_of_pair = request_split[requests_of_pair]

    # Partners the training period never saw get no code: serving fails open for them.
    names_by_id = sorted(partner_ids, key=partner_ids.__getitem__)
    trained_ids = np.unique(partner_of_pair[split_of_pair == 0])
    partners = sorted(names_by_id[i] for i in trained_ids)
    code_of_id = np.full(len(names_by_id), -1, dtype=np.int32)
    for code, name in enumerate(partners):
        code_of_id[partner_ids[name]] = code
    partner_code = code_of_id[partner_of_pair]
    known = partner_code >= 0
    if not known.all():
        log.warning("%d rows are for partners absent from the training period", int((~known).sum()))

    if builder.unknown_currencies:
        log.warning(
            "floors in currencies without a rate (kept in their own unit): %s",
            builder.unknown_currencies,
        )
    train_pair = (split_of_pair == 0) & known
    affinities = (
        PartnerAffinities.fit(
            builder.value_ids,
            np.flatnonzero(request_split == 0),
            TrainingPairs(
                requests=requests_of_pair[train_pair],
                partners=partner_code[train_pair],
                bids=bid_of_pair[train_pair],
                weights=np.ones(int(train_pair.sum()))
                if inverse_propensity is None
                else inverse_propensity[train_pair].astype(np.float64),
                partner_count=len(partners),
            ),
        )
        if config.partner_affinity
        else None
    )
    spec = FeatureSpec(
        vocabularies=vocabularies,
        partners=partners,
        sets=sets,
        usd_per_unit=rates,
        affinities={} if affinities is None else affinities.tables,
    )
    rng = np.random.default_rng(config.seed)

    def rows_of(split: int, subsample: bool) -> SplitRows:
        chosen = np.flatnonzero((split_of_pair == split) & known)
        weights = None
        if subsample and config.negative_rate < 1:
            # Keep every bid and a share of the non-bids, weighted back up so that predicted
            # probabilities stay calibrated: the usual trick for rare positives in RTB models.
            draw = rng.random(len(chosen)) < config.negative_rate
            keep_row = bid_of_pair[chosen] | draw
            chosen = chosen[keep_row]
            weights = np.where(bid_of_pair[chosen], 1.0, 1.0 / config.negative_rate).astype(
                np.float32
            )
        if split == 0 and config.recency_half_life_days is not None:
            recency = recency_weights(
                ts_all[requests_of_pair[chosen]], valid_start, config.recency_half_life_days
            )
            weights = recency if weights is None else weights * recency
        if inverse_propensity is not None:
            ips = inverse_propensity[chosen]
            weights = ips if weights is None else weights * ips
        affinity = None
        if affinities is not None:
            affinity = affinities.columns(
                requests_of_pair[chosen], partner_code[chosen], out_of_fold=split == 0
            )
        return SplitRows(
            request_matrix=matrix,
            bids=bid_of_pair[chosen],
            partners=partner_code[chosen],
            weights=weights,
            oracle_p=oracle_of_pair[chosen],
            requests=requests_of_pair[chosen],
            ts=ts_all[requests_of_pair[chosen]],
            affinity=affinity,
            propensity=propensity_of_pair[chosen],
            control=control_of_pair[chosen],
        )

    return TrainingData(
        spec=spec,
        train=rows_of(0, subsample=True),
        valid=rows_of(1, subsample=False),
        test=rows_of(2, subsample=False),
        data_start=_utc(int(ts_all.min())),
        data_end=_utc(int(ts_all.max())),
        valid_start=_utc(valid_start),
        test_start=_utc(test_start),
        requests=kept,
        skipped_requests=sum(skipped.values()),
        skipped_fields=skipped,
        unknown_currencies=dict(builder.unknown_currencies),
        exploration={
            name: ExplorationCount(int(filtered_of_id[i]), int(explored_of_id[i]))
            for name, i in partner_ids.items()
            if filtered_of_id[i] > 0
        },
    )
