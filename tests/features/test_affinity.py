"""Partner affinities: smoothed per-partner bid rates and counts, out of fold for training rows."""

from __future__ import annotations

import numpy as np
import pytest

from bidfilter.features import FeatureEncoder, FeatureSpec, FeatureSpecError
from bidfilter.features.affinity import (
    AFFINITY_FIELDS,
    FOLDS,
    SMOOTHING,
    AffinityLookup,
    PartnerAffinities,
    TrainingPairs,
    fit_table,
    fold_of,
)
from bidfilter.openrtb import parse_bid_request

VALUES = ["pub-big", "pub-rare", "pub-once"]


def _world() -> tuple[np.ndarray, TrainingPairs]:
    """100 requests of pub-big, 3 of pub-rare, 1 of pub-once, 2 absent; partner 0 bids on every
    pub-big request, partner 1 on none; both on pub-rare."""
    ids = np.array([0] * 100 + [1] * 3 + [2] + [-1] * 2, dtype=np.int64)
    requests = np.repeat(np.arange(len(ids)), 2)
    partners = np.tile([0, 1], len(ids)).astype(np.int32)
    bids = np.where(ids[requests] == 0, partners == 0, ids[requests] == 1)
    pairs = TrainingPairs(
        requests=requests,
        partners=partners,
        bids=bids,
        weights=np.ones(len(requests)),
        partner_count=2,
    )
    return ids, pairs


def test_rates_are_smoothed_towards_the_partner_prior() -> None:
    ids, pairs = _world()
    table, kept = fit_table(VALUES, ids, np.arange(len(ids)), pairs)
    assert table.values == ["pub-big", "pub-rare", "pub-once"]  # by count
    assert table.counts == [100, 3, 1]
    prior = [(100 + 3) / 106, 3 / 106]  # over every training row, absent values included
    np.testing.assert_allclose(table.priors, prior)
    rates = table.rate_matrix()
    np.testing.assert_allclose(rates[0, 0], (100 + SMOOTHING * prior[0]) / (100 + SMOOTHING))
    np.testing.assert_allclose(rates[0, 1], (0 + SMOOTHING * prior[1]) / (100 + SMOOTHING))
    # Three bids in three rows move partner 1 a little above its prior, not to 1.
    assert prior[1] < rates[1, 1] < 0.2
    assert list(kept[:3]) == [0, 1, 2] and kept[-1] == -1


def test_training_rows_never_see_their_own_label() -> None:
    """pub-once's only request: out of fold its count is 0 and its affinity the prior, exactly
    what serving gives a value it never saw."""
    ids, pairs = _world()
    training = np.arange(len(ids))
    affinities = PartnerAffinities.fit(
        {field: (VALUES, ids) for field in AFFINITY_FIELDS}, training, pairs
    )
    once = np.flatnonzero(ids[pairs.requests] == 2)
    columns = affinities.columns(pairs.requests[once], pairs.partners[once], out_of_fold=True)
    n = len(AFFINITY_FIELDS)
    np.testing.assert_array_equal(columns[:, :n], 0.0)
    priors = np.array(affinities.tables["publisher"].priors)[pairs.partners[once]]
    np.testing.assert_allclose(columns[:, n:], np.repeat(priors[:, None], n, axis=1), rtol=1e-6)


def test_out_of_fold_counts_are_scaled_to_the_whole_period() -> None:
    ids, pairs = _world()
    training = np.arange(len(ids))
    affinities = PartnerAffinities.fit(
        {field: (VALUES, ids) for field in AFFINITY_FIELDS}, training, pairs
    )
    big = np.flatnonzero((ids[pairs.requests] == 0) & (pairs.partners == 0))
    counts = affinities.columns(pairs.requests[big], pairs.partners[big], out_of_fold=True)[:, 0]
    folds = fold_of(pairs.requests[big])
    for fold in range(FOLDS):
        in_fold = int(np.sum(fold_of(np.arange(100)) == fold))
        np.testing.assert_allclose(counts[folds == fold], (100 - in_fold) * FOLDS / (FOLDS - 1))
    # Outside training the whole table is read: the count is the count.
    served = affinities.columns(pairs.requests[big], pairs.partners[big], out_of_fold=False)
    np.testing.assert_array_equal(served[:, 0], 100.0)


def test_absent_values_are_missing_and_unseen_values_get_the_prior() -> None:
    ids, pairs = _world()
    table, _ = fit_table(VALUES, ids, np.arange(len(ids)), pairs)
    lookup = AffinityLookup({"publisher": table}, partners=2)
    counts, block = lookup.lookup([None])
    assert np.isnan(counts[0]) and np.isnan(np.frombuffer(block, np.float32)).all()
    counts, block = lookup.lookup(["pub-never"])
    assert counts == [0.0]
    np.testing.assert_allclose(np.frombuffer(block, np.float32), table.priors, rtol=1e-6)
    counts, block = lookup.lookup(["pub-big"])
    assert counts == [100.0]
    np.testing.assert_array_equal(np.frombuffer(block, np.float32), table.rate_matrix()[0])


def test_the_encoder_fills_each_partners_own_affinity() -> None:
    ids, pairs = _world()
    table, _ = fit_table(VALUES, ids, np.arange(len(ids)), pairs)
    spec = FeatureSpec(
        vocabularies={}, partners=["dsp-a", "dsp-b"], affinities={"publisher": table}
    )
    spec = FeatureSpec.from_dict(
        {**spec.to_dict(), "vocabularies": {name: [] for name in spec.categorical}}
    )
    request = parse_bid_request(
        '{"id": "r", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}],'
        ' "site": {"id": "s", "publisher": {"id": "pub-big"}}}'
    )
    rows = FeatureEncoder(spec).rows(request, 0, ["dsp-b", "dsp-a", "dsp-unknown"])
    column = spec.names.index("publisher_affinity")
    np.testing.assert_array_equal(rows[:2, column], table.rate_matrix()[0, [1, 0]])
    assert np.isnan(rows[2, column])
    assert (rows[:, spec.names.index("publisher_count")] == 100.0).all()


def test_a_table_that_does_not_fit_its_partners_is_refused() -> None:
    ids, pairs = _world()
    table, _ = fit_table(VALUES, ids, np.arange(len(ids)), pairs)
    spec = FeatureSpec(vocabularies={}, partners=["only-one"], affinities={"publisher": table})
    data = {**spec.to_dict(), "vocabularies": {name: [] for name in spec.categorical}}
    with pytest.raises(FeatureSpecError, match=r"affinities\.publisher"):
        FeatureSpec.from_dict(data)
