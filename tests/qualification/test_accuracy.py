"""Worker accuracy: Wilson intervals, gold summaries, decisions, and agreement with the other workers' majority."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict

import numpy as np
import pytest

from qualification.accuracy import Accuracy, Decision, agreement_with_majority, judge, summarize, wilson_interval


def test_wilson_matches_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    low, high = wilson_interval(1, 2)
    assert (round(low, 4), round(high, 4)) == (0.0945, 0.9055)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(0.7225, abs=5e-5)
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=5e-5)


def test_wilson_narrows_with_more_evidence_and_honours_z():
    low10, high10 = wilson_interval(8, 10)
    low1000, high1000 = wilson_interval(800, 1000)
    assert low10 < low1000 < 0.8 < high1000 < high10
    narrow_low, narrow_high = wilson_interval(8, 10, z=1.0)
    assert low10 < narrow_low < narrow_high < high10


@pytest.mark.parametrize("correct,n", [(-1, 5), (1, -1), (6, 5)])
def test_wilson_rejects_impossible_counts(correct, n):
    with pytest.raises(ValueError):
        wilson_interval(correct, n)


def summary(outcomes, durations=(), *, reference=None, fraction=0.5, window=20):
    return summarize(outcomes, durations, reference_median_ms=reference, fast_fraction=fraction, window=window)


def test_summarize_counts_and_interval():
    acc = summary([False] * 5 + [True] * 20)
    assert (acc.gold_seen, acc.gold_correct, acc.accuracy) == (25, 20, 0.8)
    assert (acc.wilson_low, acc.wilson_high) == wilson_interval(20, 25)
    assert (acc.window, acc.rolling_seen, acc.rolling_accuracy) == (20, 20, 1.0)  # the 5 early misses fell out


def test_rolling_is_over_the_last_window_only():
    acc = summary([True] * 10 + [False] * 10, window=10)
    assert acc.accuracy == 0.5
    assert (acc.rolling_seen, acc.rolling_accuracy) == (10, 0.0)
    acc = summary([False] + [True] * 10, window=10)
    assert (acc.rolling_seen, acc.rolling_accuracy) == (10, 1.0)


def test_rolling_with_fewer_golds_than_the_window():
    acc = summary([True, False, True], window=20)
    assert (acc.rolling_seen, acc.rolling_accuracy) == (3, pytest.approx(2 / 3))


def test_summarize_empty():
    acc = summary([])
    assert acc == Accuracy(
        gold_seen=0, gold_correct=0, accuracy=None, wilson_low=0.0, wilson_high=1.0, window=20, rolling_seen=0,
        rolling_accuracy=None, median_ms=None, fast_answers=0, tasks=0,
    )


def test_median_is_median_low_and_an_int():
    acc = summary([], [400, 100, 300, 200])
    assert acc.median_ms == 200  # not 250
    assert type(acc.median_ms) is int
    assert acc.tasks == 4
    assert summary([], [300, 100, 200]).median_ms == 200


def test_fast_answers_against_the_reference_median():
    durations = [100, 499, 500, 1000, 5000]
    assert summary([], durations, reference=1000, fraction=0.5).fast_answers == 2  # 500 is not below 500
    assert summary([], durations, reference=1000, fraction=1.0).fast_answers == 3
    assert summary([], durations, reference=1000, fraction=0.0).fast_answers == 0
    assert summary([], durations, reference=None, fraction=0.5).fast_answers == 0
    assert summary([], durations, reference=None, fraction=0.5).tasks == 5


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"window": -3}, {"fraction": -0.1}, {"fraction": 1.5},
                                    {"fraction": float("nan")}])
def test_summarize_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        summary([True], [100], reference=1000, **kwargs)


def record(correct: int, seen: int) -> Accuracy:
    return summary([True] * correct + [False] * (seen - correct))


def test_judge_waits_for_min_golds_even_at_zero_accuracy():
    assert judge(record(0, 9), min_accuracy=0.8, min_golds=10) is Decision.NONE
    assert judge(record(0, 10), min_accuracy=0.8, min_golds=10) is Decision.ACT
    assert judge(record(0, 0), min_accuracy=0.8, min_golds=0) is Decision.NONE


def test_judge_branches():
    assert judge(record(2, 10), min_accuracy=0.8, min_golds=10) is Decision.ACT  # upper bound ~0.51
    assert judge(record(7, 10), min_accuracy=0.8, min_golds=10) is Decision.FLAG  # 0.7, but upper bound ~0.89
    assert judge(record(8, 10), min_accuracy=0.8, min_golds=10) is Decision.NONE  # at the threshold is fine
    assert judge(record(10, 10), min_accuracy=0.8, min_golds=10) is Decision.NONE


def test_judge_act_needs_the_upper_bound_strictly_below():
    base = record(5, 10)
    assert judge(dataclasses.replace(base, wilson_high=0.8), min_accuracy=0.8, min_golds=1) is Decision.FLAG
    assert judge(dataclasses.replace(base, wilson_high=0.79), min_accuracy=0.8, min_golds=1) is Decision.ACT


def test_decision_values_are_strings():
    assert [d.value for d in Decision] == ["none", "flag", "act"]
    assert Decision.ACT == "act"


def agreement(rows, *, n_workers, n_labels, min_others=2):
    items, workers, labels = (np.array(column, dtype=np.int64) for column in zip(*rows, strict=True))
    agreed, counted = agreement_with_majority(
        items, workers, labels, n_workers=n_workers, n_labels=n_labels, min_others=min_others
    )
    return agreed.tolist(), counted.tolist()


HAND_BUILT = [  # (item, worker, label)
    (0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 3, 1),  # clear majority 0 among the others of every answer
    (1, 0, 0), (1, 1, 1), (1, 2, 2),  # every answer sees a 1-1 tie among the others: not counted
    (2, 0, 2), (2, 1, 2),  # one other answer each: too few with min_others=2
    (3, 4, 1),  # worker 4 alone on item 3: nobody to agree with
    (4, 0, 1), (4, 1, 1), (4, 2, 0),  # workers 0 and 1 see a tie; worker 2 sees a majority of 1 and disagrees
]


def test_agreement_hand_built():
    assert agreement(HAND_BUILT, n_workers=5, n_labels=3) == ([1, 1, 1, 0, 0], [1, 1, 2, 1, 0])


def test_agreement_min_others_one_counts_the_pair():
    # Item 2 now counts (both agree); ties and the lone worker still do not.
    assert agreement(HAND_BUILT, n_workers=5, n_labels=3, min_others=1) == ([2, 2, 1, 0, 0], [2, 2, 2, 1, 0])


def test_agreement_leaves_out_all_of_a_workers_own_answers():
    # Worker 0 answered item 0 twice; only worker 1's answer is "other" for them, so neither of theirs agrees.
    rows = [(0, 0, 1), (0, 0, 1), (0, 1, 0)]
    assert agreement(rows, n_workers=2, n_labels=2, min_others=1) == ([0, 0], [2, 1])


def test_agreement_sparse_item_ids_and_single_label():
    rows = [(10**12, 0, 0), (10**12, 1, 0), (10**12, 2, 0), (7, 2, 0)]
    assert agreement(rows, n_workers=3, n_labels=1) == ([1, 1, 1], [1, 1, 1])


def test_agreement_empty():
    empty = np.array([], dtype=np.int64)
    agreed, counted = agreement_with_majority(empty, empty, empty, n_workers=3, n_labels=2)
    assert agreed.tolist() == counted.tolist() == [0, 0, 0]


@pytest.mark.parametrize("items,workers,labels,n_workers,n_labels", [
    ([0, 1], [0], [0, 1], 2, 2),  # lengths differ
    ([[0, 1]], [[0, 1]], [[0, 1]], 2, 2),  # not one-dimensional
    ([0.0, 1.0], [0, 1], [0, 1], 2, 2),  # not integers
    ([-1, 0], [0, 1], [0, 1], 2, 2),  # negative item
    ([0, 0], [0, 2], [0, 1], 2, 2),  # worker out of range
    ([0, 0], [0, 1], [0, 2], 2, 2),  # label out of range
    ([0, 0], [0, 1], [0, -1], 2, 2),  # negative label
    ([0, 0], [0, 1], [0, 0], 2, 0),  # no labels
])
def test_agreement_rejects_bad_input(items, workers, labels, n_workers, n_labels):
    with pytest.raises(ValueError):
        agreement_with_majority(np.array(items), np.array(workers), np.array(labels), n_workers=n_workers,
                                n_labels=n_labels)


def reference_agreement(items, workers, labels, n_workers, min_others):
    """The definition, one answer at a time."""
    by_item = defaultdict(list)
    for item, worker, label in zip(items, workers, labels, strict=True):
        by_item[item].append((worker, label))
    agreed, counted = [0] * n_workers, [0] * n_workers
    for item, worker, label in zip(items, workers, labels, strict=True):
        others = Counter(other_label for other, other_label in by_item[item] if other != worker)
        ranked = others.most_common()
        if sum(others.values()) < min_others or not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
            continue
        counted[worker] += 1
        agreed[worker] += ranked[0][0] == label
    return agreed, counted


@pytest.mark.parametrize("min_others", [0, 1, 2, 3])
def test_agreement_matches_the_plain_python_definition(min_others):
    rng = np.random.default_rng(7)
    n_answers, n_items, n_workers, n_labels = 2_000, 300, 25, 4
    items = rng.integers(0, n_items, n_answers)
    workers = rng.integers(0, n_workers, n_answers)
    truth = rng.integers(0, n_labels, n_items)
    labels = np.where(rng.random(n_answers) < 0.6, truth[items], rng.integers(0, n_labels, n_answers))
    agreed, counted = agreement_with_majority(
        items, workers, labels, n_workers=n_workers, n_labels=n_labels, min_others=min_others
    )
    expected = reference_agreement(items.tolist(), workers.tolist(), labels.tolist(), n_workers, min_others)
    assert (agreed.tolist(), counted.tolist()) == expected
    assert 0 < agreed.sum() < counted.sum() < n_answers  # some disagree, and ties or thin items are left out
