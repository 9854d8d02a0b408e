"""What a model's thresholds would keep and save on logged traffic a filter shaped.

Only labelled entries (partners that were called) count, each standing for 1 / propensity of
the traffic, the inverse-propensity estimate that training uses too (docs/training.md); a
control-group request's entries all have propensity 1. Both the candidate and the serving model
are judged on the same entries, through the serving decision code (``scoring.decide``), with
exploration off: what is compared is the filters, not their luck.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from bidfilter.logs import iter_log_batches, log_files
from bidfilter.openrtb import BidRequest, InvalidRequestError, parse_bid_request
from bidfilter.scoring import Exploration, ServingModel, decide

_NO_EXPLORATION = Exploration(rate=0.0)


@dataclass(frozen=True, slots=True)
class Figures:
    """Inverse-propensity estimates of one filter's bid recall and call savings."""

    bid_recall: float
    call_savings: float
    calls: int  # labelled entries judged
    bids: int
    # Per partner with at least MIN_PARTNER_BIDS logged bids: its estimated bid recall.
    partner_recall: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "bid_recall": round(self.bid_recall, 6),
            "call_savings": round(self.call_savings, 6),
            "calls": self.calls,
            "bids": self.bids,
            "partner_recall": {p: round(r, 6) for p, r in self.partner_recall.items()},
        }


# Fewer logged bids than this say too little of a partner's recall to act on alone.
MIN_PARTNER_BIDS = 30


@dataclass(frozen=True)
class Evidence:
    """Labelled (request, partner) entries: request ``i``'s are ``offsets[i]:offsets[i + 1]``."""

    requests: list[BidRequest]
    ts_ms: np.ndarray  # (requests,) int64
    offsets: np.ndarray  # (requests + 1,) int64
    partners: list[str]  # (entries,)
    bids: np.ndarray  # (entries,) bool
    weights: np.ndarray  # (entries,) float64: 1 / max(propensity, min_propensity)

    def __len__(self) -> int:
        return len(self.requests)

    @classmethod
    def from_logs(
        cls, logs: str | os.PathLike[str], since_ms: int, min_propensity: float = 0.01
    ) -> Evidence:
        """The sent entries of every logged request received at or after ``since_ms``."""
        requests: list[BidRequest] = []
        stamps: list[int] = []
        lengths: list[int] = []
        partners: list[str] = []
        bids: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        log_files(logs)  # a clear error for a directory without logs
        for batch in iter_log_batches(logs, columns=["ts", "request", "partners"]):
            ts = batch.column("ts").cast(pa.int64()).to_numpy()
            lists = batch.column("partners")
            flat = lists.flatten()
            offsets = lists.offsets.to_numpy()
            offsets = offsets - offsets[0]  # a sliced batch's offsets start past 0; flatten's not
            sent = flat.field("sent").to_numpy(zero_copy_only=False).astype(bool)
            names = np.asarray(flat.field("partner").to_pylist(), dtype=object)
            bid = flat.field("bid").to_numpy(zero_copy_only=False).astype(bool)
            propensity = flat.field("propensity").to_numpy(zero_copy_only=False)
            for row in np.flatnonzero(ts >= since_ms):
                try:
                    request = parse_bid_request(batch.column("request")[row].as_py())
                except InvalidRequestError:
                    continue  # training skips it too
                start, end = int(offsets[row]), int(offsets[row + 1])
                mine = np.flatnonzero(sent[start:end]) + start
                requests.append(request)
                stamps.append(int(ts[row]))
                lengths.append(len(mine))
                partners.extend(names[mine].tolist())
                bids.append(bid[mine])
                weights.append(1.0 / np.maximum(propensity[mine], min_propensity))
        return cls.of(requests, stamps, lengths, partners, bids, weights)

    @classmethod
    def of(
        cls,
        requests: list[BidRequest],
        ts_ms: Sequence[int],
        lengths: Sequence[int],
        partners: list[str],
        bids: Sequence[np.ndarray],
        weights: Sequence[np.ndarray],
    ) -> Evidence:
        offsets = np.zeros(len(requests) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lengths, dtype=np.int64), out=offsets[1:])
        return cls(
            requests=requests,
            ts_ms=np.asarray(ts_ms, dtype=np.int64),
            offsets=offsets,
            partners=partners,
            bids=np.concatenate(bids) if bids else np.zeros(0, dtype=bool),
            weights=np.concatenate(weights) if weights else np.zeros(0),
        )

    def sent_by(self, model: ServingModel | None) -> np.ndarray:
        """(entries,) bool: whether ``model``'s thresholds send each entry (None: all sent, as
        with no model the server fails open)."""
        sent = np.ones(len(self.partners), dtype=bool)
        if model is None:
            return sent
        for i, request in enumerate(self.requests):
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            if start == end:
                continue
            verdict = decide(
                model,
                request,
                self.partners[start:end],
                int(self.ts_ms[i]),
                exploration=_NO_EXPLORATION,
            )
            sent[start:end] = verdict.sent
        return sent

    def figures(self, model: ServingModel | None) -> Figures:
        sent = self.sent_by(model)
        total = float(self.weights.sum())
        names = np.asarray(self.partners, dtype=object)
        partner_recall = {}
        for partner in sorted(set(self.partners)):
            mine = self.bids & (names == partner)
            if mine.sum() >= MIN_PARTNER_BIDS:
                partner_recall[partner] = _recall(sent[mine], self.weights[mine])
        return Figures(
            bid_recall=_recall(sent[self.bids], self.weights[self.bids]),
            call_savings=1.0 - float(self.weights[sent].sum()) / total if total else 0.0,
            calls=len(self.partners),
            bids=int(self.bids.sum()),
            partner_recall=partner_recall,
        )


def _recall(sent_bids: np.ndarray, weights: np.ndarray) -> float:
    total = float(weights.sum())
    return float(weights[sent_bids].sum()) / total if total else 1.0
