"""Aggregation methods on hand-checkable cases and seeded synthetic crowds."""

from __future__ import annotations

import numpy as np
import pytest

from aggregation.methods import (
    NO_LABEL,
    Prior,
    accuracy_weights,
    dawid_skene,
    majority_vote,
    weighted_majority_vote,
)


def arrays(rows):
    items, workers, labels = (np.array(col, dtype=np.int32) for col in zip(*rows, strict=True))
    return items, workers, labels


def crowd(seed: int, n_items: int = 400, n_workers: int = 30, n_classes: int = 3, per_item: int = 5,
          spammers: int = 10):
    """A Dawid–Skene crowd: good workers right 80-95% of the time, spammers always answer label 0."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n_items)
    skill = rng.uniform(0.8, 0.95, n_workers)
    items = np.repeat(np.arange(n_items), per_item)
    workers = np.concatenate([rng.choice(n_workers, per_item, replace=False) for _ in range(n_items)])
    right = rng.random(items.size) < skill[workers]
    wrong = (truth[items] + rng.integers(1, n_classes, items.size)) % n_classes
    labels = np.where(right, truth[items], wrong)
    labels = np.where(workers < spammers, 0, labels)
    return items, workers, labels, truth


def test_majority_vote_by_hand():
    items, workers, labels = arrays([(0, 0, 1), (0, 1, 1), (0, 2, 0), (1, 0, 2), (1, 1, 0), (3, 2, 2)])
    result = majority_vote(items, workers, labels, n_items=4, n_workers=3, n_classes=3, seed=1)
    assert result.labels[0] == 1 and result.confidence[0] == pytest.approx(2 / 3) and not result.ties[0]
    assert result.ties[1] and result.labels[1] in (0, 2) and result.confidence[1] == pytest.approx(0.5)
    assert result.labels[2] == NO_LABEL and result.confidence[2] == 0 and not result.ties[2]
    assert result.labels[3] == 2 and result.confidence[3] == 1.0
    # The tie-break is seeded: the same seed, the same choice; across seeds, either label.
    again = majority_vote(items, workers, labels, n_items=4, n_workers=3, n_classes=3, seed=1)
    assert again.labels[1] == result.labels[1]
    picks = {majority_vote(items, workers, labels, n_items=4, n_workers=3, n_classes=3, seed=s).labels[1]
             for s in range(20)}
    assert picks == {0, 2}


def test_weighted_majority_vote_lets_a_reliable_worker_outvote_two_guessers():
    items, workers, labels = arrays([(0, 0, 1), (0, 1, 0), (0, 2, 0)])
    weights = accuracy_weights(np.array([0.99, 0.55, 0.55]), 3)
    result = weighted_majority_vote(items, workers, labels, worker_weights=weights, n_items=1, n_workers=3,
                                    n_classes=3)
    assert result.labels[0] == 1
    assert accuracy_weights(np.array([1 / 3, 0.2]), 3).tolist() == [0.0, 0.0]  # at or below chance: no say


def test_dawid_skene_unanimous_and_perfect_workers():
    items, workers, labels = arrays([(i, w, i % 3) for i in range(30) for w in range(4)])
    result = dawid_skene(items, workers, labels, n_items=30, n_workers=4, n_classes=3)
    assert (result.labels == np.arange(30) % 3).all() and (result.confidence > 0.99).all()
    assert np.allclose(result.confusion.sum(axis=2), 1) and result.priors.sum() == pytest.approx(1)
    mv = majority_vote(items, workers, labels, n_items=30, n_workers=4, n_classes=3)
    assert (mv.labels == result.labels).all()


def test_dawid_skene_beats_majority_vote_with_spammers_and_is_permutation_invariant():
    items, workers, labels, truth = crowd(seed=7)
    ds = dawid_skene(items, workers, labels, n_items=400, n_workers=30, n_classes=3)
    mv = majority_vote(items, workers, labels, n_items=400, n_workers=30, n_classes=3)
    assert (ds.labels == truth).mean() > (mv.labels == truth).mean() + 0.05
    # Spammers' confusion: whatever the truth, label 0.
    assert (ds.confusion[:10, :, 0] > 0.9).all()
    # Renaming workers and items permutes the output and changes nothing else.
    rng = np.random.default_rng(3)
    wperm, iperm = rng.permutation(30), rng.permutation(400)
    renamed = dawid_skene(iperm[items], wperm[workers], labels, n_items=400, n_workers=30, n_classes=3)
    assert (renamed.labels[iperm] == ds.labels).all()
    assert np.allclose(renamed.confidence[iperm], ds.confidence)
    assert np.allclose(renamed.confusion[wperm], ds.confusion)


def test_gold_aware_dawid_skene_keeps_gold_and_learns_from_it():
    items, workers, labels, truth = crowd(seed=11, spammers=18)  # most workers are spammers
    plain = dawid_skene(items, workers, labels, n_items=400, n_workers=30, n_classes=3)
    gold = np.arange(0, 400, 12)  # about 8% of the items revealed
    aware = dawid_skene(items, workers, labels, n_items=400, n_workers=30, n_classes=3, gold_items=gold,
                        gold_labels=truth[gold])
    assert (aware.labels[gold] == truth[gold]).all() and (aware.confidence[gold] == 1).all()
    rest = np.setdiff1d(np.arange(400), gold)
    assert (aware.labels[rest] == truth[rest]).mean() >= (plain.labels[rest] == truth[rest]).mean()


def test_dawid_skene_does_not_underflow_with_many_answers_per_item():
    items = np.zeros(5000, dtype=np.int32)
    workers = np.arange(5000, dtype=np.int32)
    labels = np.ones(5000, dtype=np.int32)
    result = dawid_skene(items, workers, labels, n_items=1, n_workers=5000, n_classes=2)
    assert result.labels[0] == 1 and np.isfinite(result.posteriors).all()


@pytest.mark.parametrize("bad", [
    {"labels": np.array([0, 3])},
    {"items": np.array([0, -1])},
    {"items": np.array([0.0, 1.0])},
    {"workers": np.array([0])},
])
def test_bad_input_is_refused(bad):
    base = {"items": np.array([0, 1]), "workers": np.array([0, 1]), "labels": np.array([0, 1])}
    with pytest.raises(ValueError):
        majority_vote(**{**base, **bad}, n_items=2, n_workers=2, n_classes=3)


def test_weighted_vote_of_only_zero_weight_workers_falls_back_to_plain_votes():
    items, workers, labels = arrays([(0, 1, 0), (1, 0, 0), (0, 0, 1)])
    weights = np.array([0.0, 0.0])
    for seed in range(10):
        result = weighted_majority_vote(items, workers, labels, worker_weights=weights, n_items=2, n_workers=2,
                                        n_classes=2, seed=seed)
        assert result.labels[1] == 0 and result.confidence[1] == 1.0 and not result.ties[1]


def test_weighted_vote_weights_do_not_depend_on_majority_vote_coin_flips():
    from aggregation.engine import worker_accuracy_estimate

    # Item 0 is a tie between workers 0 and 1; item 1 is unanimous.
    items, workers, labels = arrays([(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 2)])
    estimates = {tuple(worker_accuracy_estimate(items, workers, labels, n_items=2, n_workers=2, n_classes=3,
                                                gold_items=np.array([], dtype=np.int64),
                                                gold_labels=np.array([], dtype=np.int64), seed=s))
                 for s in range(20)}
    assert estimates == {(1.0, 1.0)}


def test_one_coin_dawid_skene_has_one_accuracy_per_worker():
    items, workers, labels, truth = crowd(7, spammers=0)
    result = dawid_skene(items, workers, labels, n_items=400, n_workers=30, n_classes=3, one_coin=True)
    confusion = result.confusion  # worker x true x given
    diagonal = np.einsum("wkk->wk", confusion)
    assert np.allclose(diagonal, diagonal[:, :1])  # the same accuracy whatever the true class
    off = confusion[:, ~np.eye(3, dtype=bool)]
    assert np.allclose(off, off[:, :1]) and np.allclose(confusion.sum(axis=2), 1)  # errors spread evenly
    assert (result.labels == truth).mean() > 0.95
    full = dawid_skene(items, workers, labels, n_items=400, n_workers=30, n_classes=3)
    assert not np.allclose(full.confusion[:, ~np.eye(3, dtype=bool)], full.confusion[:, :1, 1:2])


def dawid_skene_crowd(seed: int, n_items: int, per_item: int = 5, n_workers: int = 200, n_classes: int = 4):
    """Answers drawn from the Dawid–Skene model, as benchmarks/aggregation.py draws its million: every worker a
    random confusion matrix (diagonal 0.6-0.95), 10% of them spammers (random or constant), `per_item` distinct
    workers per item."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(n_classes, n_items, p=np.array([0.4, 0.3, 0.2, 0.1])[:n_classes] / [0.4, 0.7, 0.9, 1][
        n_classes - 1])
    confusion = rng.dirichlet(np.ones(n_classes - 1), size=(n_workers, n_classes))
    diagonal = rng.uniform(0.6, 0.95, size=(n_workers, n_classes))
    full = np.zeros((n_workers, n_classes, n_classes))
    for k in range(n_classes):
        others = [c for c in range(n_classes) if c != k]
        full[:, k, k] = diagonal[:, k]
        full[:, k, others] = (1 - diagonal[:, k])[:, None] * confusion[:, k]
    spammers = rng.choice(n_workers, n_workers // 10, replace=False)
    full[spammers[::2]] = 1 / n_classes
    full[spammers[1::2]] = np.eye(n_classes)[rng.integers(n_classes, size=spammers[1::2].size)][:, None, :]
    items = np.repeat(np.arange(n_items), per_item)
    workers = np.concatenate([rng.choice(n_workers, per_item, replace=False) for _ in range(n_items)])
    cumulative = full[workers, truth[items]].cumsum(axis=1)
    labels = (rng.random(items.size)[:, None] > cumulative).sum(axis=1).clip(max=n_classes - 1)
    return items, workers, labels, truth


def test_dawid_skene_stops_on_the_log_likelihood_where_the_posterior_rule_never_does():
    """On a seeded 200,000-answer crowd the posteriors of a few items keep drifting by more than 1e-5 per
    iteration for some 150 iterations, so the posterior-change rule alone runs every one of `max_iter`; the
    objective per answer settles within a few dozen, at the accuracy of a run twice as long."""
    items, workers, labels, truth = dawid_skene_crowd(seed=3, n_items=40_000)
    shape = {"n_items": 40_000, "n_workers": 200, "n_classes": 4}
    stopped = dawid_skene(items, workers, labels, **shape)
    assert stopped.stop_reason == "converged" and stopped.iterations < 50, stopped.iterations
    posterior_rule = dawid_skene(items, workers, labels, tol=0, **shape)
    assert (posterior_rule.iterations, posterior_rule.stop_reason) == (100, "max_iter")
    long = dawid_skene(items, workers, labels, max_iter=200, tol=0, posterior_tol=0, **shape)
    assert long.stop_reason == "max_iter" and long.log_likelihood >= stopped.log_likelihood - 1e-5
    accuracy = {name: (r.labels == truth).mean() for name, r in (("stopped", stopped), ("long", long))}
    assert abs(accuracy["stopped"] - accuracy["long"]) <= 0.001, accuracy
    assert (stopped.labels != long.labels).mean() <= 0.002


def test_dawid_skene_reports_why_it_stopped():
    items, workers, labels, _ = crowd(seed=5)
    shape = {"n_items": 400, "n_workers": 30, "n_classes": 3}
    converged = dawid_skene(items, workers, labels, **shape)
    assert converged.stop_reason == "converged" and 1 < converged.iterations < 100
    assert np.isfinite(converged.log_likelihood) and converged.log_likelihood < 0
    short = dawid_skene(items, workers, labels, max_iter=converged.iterations - 1, **shape)
    assert (short.iterations, short.stop_reason) == (converged.iterations - 1, "max_iter")
    fixed = dawid_skene(items, workers, labels, max_iter=7, tol=0, posterior_tol=0, **shape)
    assert (fixed.iterations, fixed.stop_reason) == (7, "max_iter")
    # The second guard alone: when no posterior moves by more than posterior_tol.
    guard = dawid_skene(items, workers, labels, tol=0, posterior_tol=1e-3, **shape)
    assert guard.stop_reason == "converged" and guard.iterations < 100


def test_each_em_iteration_raises_the_objective():
    """EM with a MAP M-step never lowers the log-likelihood plus the prior's log density: the objective after n
    iterations is at least that after n - 1 (up to float32 rounding), for every n."""
    items, workers, labels, _ = crowd(seed=9, spammers=12)
    shape = {"n_items": 400, "n_workers": 30, "n_classes": 3}
    for one_coin in (False, True):
        objective = [dawid_skene(items, workers, labels, max_iter=n, tol=0, posterior_tol=0, one_coin=one_coin,
                                 **shape).log_likelihood for n in range(1, 30)]
        assert all(b >= a - 1e-6 for a, b in zip(objective, objective[1:], strict=False)), objective


def test_the_prior_is_the_pseudo_counts_added_to_the_m_step():
    """With every item gold (ds-gold), the posteriors are the known labels and the M-step's counts are exact:
    each confusion row is (counts + pseudo-counts) / their sum, a worker never seen on a class gets the prior's
    row, and the class priors are (class counts + classes) normalised."""
    # Worker 0: truth 0 -> 0, 0, 1; truth 1 -> 1. Worker 1 answers only truth-0 items.
    items, workers, labels = arrays([(0, 0, 0), (1, 0, 0), (2, 0, 1), (3, 0, 1), (0, 1, 0), (1, 1, 1)])
    truth = np.array([0, 0, 0, 1])
    prior = Prior(correct=2.0, wrong=0.5, classes=3.0)
    result = dawid_skene(items, workers, labels, n_items=4, n_workers=2, n_classes=2, gold_items=np.arange(4),
                         gold_labels=truth, prior=prior)
    expected = np.array([[[2 + 2, 1 + 0.5], [0 + 0.5, 1 + 2]],  # worker 0: true x given, counts + pseudo-counts
                         [[1 + 2, 1 + 0.5], [0 + 0.5, 0 + 2]]])  # worker 1 never saw class 1: the prior's row
    np.testing.assert_allclose(result.confusion, expected / expected.sum(axis=2, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(result.priors, np.array([3 + 3, 1 + 3]) / 10, atol=1e-6)
    flat = dawid_skene(items, workers, labels, n_items=4, n_workers=2, n_classes=2, gold_items=np.arange(4),
                       gold_labels=truth, prior=Prior(0.01, 0.01, 0.01))
    assert flat.confusion[1, 1, 1] == pytest.approx(0.5)  # a flat prior knows nothing of an unseen class


def test_the_default_prior_helps_workers_with_few_answers():
    """A sparse crowd (3 answers per item, most workers with a dozen answers): the default prior, half an imagined
    right answer per class, beats a flat prior of 0.01 everywhere, seed after seed."""
    gains = []
    for seed in range(5):
        items, workers, labels, truth = dawid_skene_crowd(seed=seed, n_items=1_000, per_item=3, n_workers=250)
        shape = {"n_items": 1_000, "n_workers": 250, "n_classes": 4}
        default = dawid_skene(items, workers, labels, **shape)
        flat = dawid_skene(items, workers, labels, prior=Prior(0.01, 0.01, 0.01), **shape)
        gains.append((default.labels == truth).mean() - (flat.labels == truth).mean())
    assert np.mean(gains) > 0.005 and min(gains) >= -0.002, gains


@pytest.mark.parametrize("prior", [Prior(-1, 0.01, 1), Prior(1, 0, 1), Prior(1, 0.01, 0), Prior(np.nan, 1, 1),
                                   Prior(np.inf, 1, 1)])
def test_bad_priors_are_refused(prior):
    items, workers, labels = arrays([(0, 0, 0), (0, 1, 1)])
    with pytest.raises(ValueError, match="pseudo-counts"):
        dawid_skene(items, workers, labels, n_items=1, n_workers=2, n_classes=2, prior=prior)
