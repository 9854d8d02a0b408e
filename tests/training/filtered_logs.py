"""Auction logs as a filter would have left them, for the tests of training on filtered logs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bidfilter.logs import auction_batch


def as_filtered(batch: pa.RecordBatch, rng: np.random.Generator) -> pa.RecordBatch:
    """``batch`` (full-information synth logs) after a filter: every partner called when its
    true bid probability is high, else explored at 0.25, but dsp-02 at 0.001 (almost never: too
    little exploration to estimate it); every 10th request in the control group (everyone
    called). Unsent entries lose their label."""
    lists = batch.column("partners")
    flat = pc.list_flatten(lists)
    partner = np.asarray(flat.field("partner").to_pylist())
    oracle = flat.field("oracle_p").to_numpy()
    parents = pc.list_parent_indices(lists).to_numpy()
    control = np.arange(len(batch)) % 10 == 0
    high = oracle >= np.quantile(oracle, 0.6)
    propensity = np.ones(len(partner))
    propensity[~high] = np.where(partner[~high] == "dsp-02", 0.001, 0.25)
    propensity[control[parents]] = 1.0
    sent = rng.random(len(partner)) < propensity
    return auction_batch(
        batch.column("ts").cast("int64").to_numpy(),
        batch.column("request_id").to_pylist(),
        batch.column("request").to_pylist(),
        lists.offsets.to_numpy(),
        partner.tolist(),
        flat.field("bid").to_numpy(zero_copy_only=False) & sent,
        np.where(sent, flat.field("price").to_numpy(), 0.0),
        oracle,
        sent=sent,
        propensity=propensity,
        control=control,
    )
