"""Properties of the aggregation methods on small random answer sets (hypothesis).

An answer set: 1-30 items, 1-10 workers, 2-4 classes, each (item, worker) pair answered at most once; items
without answers are allowed (their label is -1 everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.engine import aggregate
from aggregation.methods import NO_LABEL, dawid_skene, majority_vote

PROPERTY = settings(max_examples=40, deadline=None)
# Dawid–Skene runs in float32 and sums in an order that follows the ids, so renumbering moves its posteriors by
# rounding: compare within ATOL, and compare labels only where the top posterior leads the next by more than
# MARGIN (exact ties go to the first class by index, which renumbering classes does not touch but rounding can
# flip). Relabelling runs get a fixed number of iterations (FIXED): the stopping rule compares an objective that
# rounding moves too, so near its threshold two renumbered runs may stop an iteration apart, and an iteration
# with a flat log-likelihood can still move a posterior by more than ATOL.
ATOL = 1e-4
MARGIN = 1e-3
FIXED = {"max_iter": 50, "tol": 0.0, "posterior_tol": 0.0}


@dataclass(frozen=True)
class Answers:
    items: np.ndarray
    workers: np.ndarray
    labels: np.ndarray
    n_items: int
    n_workers: int
    n_classes: int

    @property
    def shape(self) -> dict[str, int]:
        return {"n_items": self.n_items, "n_workers": self.n_workers, "n_classes": self.n_classes}

    def relabel(self, item_perm: np.ndarray, worker_perm: np.ndarray) -> Answers:
        """Item i becomes item_perm[i], worker w becomes worker_perm[w]; the rows keep their order."""
        return Answers(item_perm[self.items].astype(np.int32), worker_perm[self.workers].astype(np.int32),
                       self.labels, self.n_items, self.n_workers, self.n_classes)


def _arrays(pairs: list[tuple[int, int]], labels: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items = np.array([i for i, _ in pairs], dtype=np.int32)
    workers = np.array([w for _, w in pairs], dtype=np.int32)
    return items, workers, np.array(labels, dtype=np.int32)


@st.composite
def answer_sets(draw: st.DrawFn) -> Answers:
    n_items, n_workers, n_classes = draw(st.integers(1, 30)), draw(st.integers(1, 10)), draw(st.integers(2, 4))
    pairs = draw(st.lists(st.tuples(st.integers(0, n_items - 1), st.integers(0, n_workers - 1)), unique=True,
                          max_size=n_items * n_workers))
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=len(pairs), max_size=len(pairs)))
    return Answers(*_arrays(pairs, labels), n_items, n_workers, n_classes)


@st.composite
def perfect_answer_sets(draw: st.DrawFn) -> tuple[Answers, np.ndarray]:
    """Perfect workers: every answer is the item's hidden truth. Two conditions make Dawid–Skene's answer
    determined by the data (see test_dawid_skene_unanimous_items_in_perfect_answer_sets): every answered item has
    at least 2 answers, and every worker has answered at least one item of every class in use (a class that is
    the truth of some answered item)."""
    n_items, n_workers, n_classes = draw(st.integers(1, 30)), draw(st.integers(2, 10)), draw(st.integers(2, 4))
    truth = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=n_items, max_size=n_items)))
    answered = [i for i in range(n_items) if draw(st.booleans())]
    pairs: set[tuple[int, int]] = set()
    for i in answered:
        pairs |= {(i, w) for w in draw(st.sets(st.integers(0, n_workers - 1), min_size=2, max_size=n_workers))}
    in_use = sorted({int(truth[i]) for i in answered})
    for w in sorted({w for _, w in pairs}):
        seen = {int(truth[i]) for i, v in pairs if v == w}
        for k in in_use:
            if k not in seen:  # the worker has answered no item of class k, so any item of class k is new to them
                pairs.add((draw(st.sampled_from([i for i in answered if truth[i] == k])), w))
    ordered = sorted(pairs)
    return Answers(*_arrays(ordered, [int(truth[i]) for i, _ in ordered]), n_items, n_workers, n_classes), truth


def unanimous(s: Answers) -> np.ndarray:
    """Per item: the label every answer gives, or -1 (no answers, or answers that disagree)."""
    low = np.full(s.n_items, s.n_classes, dtype=np.int64)
    high = np.full(s.n_items, -1, dtype=np.int64)
    np.minimum.at(low, s.items, s.labels)
    np.maximum.at(high, s.items, s.labels)
    return np.where(low == high, low, NO_LABEL)


def leads(posteriors: np.ndarray) -> np.ndarray:
    """Per item: the top posterior minus the runner-up."""
    ordered = np.sort(posteriors, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def _rows(s: Answers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return s.items, s.workers, s.labels


def _permutations(data: st.DataObject, s: Answers) -> tuple[np.ndarray, np.ndarray]:
    item_perm = np.array(data.draw(st.permutations(range(s.n_items)), label="item_perm"))
    worker_perm = np.array(data.draw(st.permutations(range(s.n_workers)), label="worker_perm"))
    return item_perm, worker_perm


@PROPERTY
@given(answer_sets(), st.data())
def test_majority_vote_moves_with_relabelled_items_and_workers(s: Answers, data: st.DataObject) -> None:
    """MV's votes, shares and tie flags move with the items and ignore worker ids; the label moves with its item
    wherever there is no tie (a tie is broken by a seeded RNG drawn per item *position*, so a renumbered tied
    item may get another of its top labels)."""
    item_perm, worker_perm = _permutations(data, s)
    before = aggregate("mv", s.items, s.workers, s.labels, **s.shape).result
    after = aggregate("mv", *_rows(s.relabel(item_perm, worker_perm)), **s.shape).result
    np.testing.assert_array_equal(after.posteriors[item_perm], before.posteriors)
    np.testing.assert_array_equal(after.confidence[item_perm], before.confidence)
    np.testing.assert_array_equal(after.ties[item_perm], before.ties)
    untied = ~before.ties
    np.testing.assert_array_equal(after.labels[item_perm][untied], before.labels[untied])
    top = after.posteriors[item_perm] == after.posteriors[item_perm].max(axis=1, keepdims=True)
    assert top[before.ties, after.labels[item_perm][before.ties]].all()


@PROPERTY
@given(answer_sets(), st.data())
def test_majority_vote_ignores_worker_ids_even_on_ties(s: Answers, data: st.DataObject) -> None:
    """Renumbering only the workers changes nothing at all, tie-breaks included (they depend on items only)."""
    worker_perm = np.array(data.draw(st.permutations(range(s.n_workers))))
    before = aggregate("mv", s.items, s.workers, s.labels, **s.shape)
    after = aggregate("mv", *_rows(s.relabel(np.arange(s.n_items), worker_perm)), **s.shape)
    np.testing.assert_array_equal(after.result.labels, before.result.labels)
    np.testing.assert_array_equal(after.worker_accuracy[worker_perm], before.worker_accuracy)
    np.testing.assert_array_equal(after.worker_answers[worker_perm], before.worker_answers)


@PROPERTY
@given(answer_sets(), st.data())
def test_weighted_majority_vote_moves_with_relabelled_items_and_workers(s: Answers, data: st.DataObject) -> None:
    """wmv through the engine: worker weights come from agreement with MV on non-gold items plus gold answers.
    MV's tie-break depends on item positions, so its tied items are made gold here (with drawn labels), which
    takes them out of the agreement: then the weights move with the workers exactly, and wmv's labels move with
    the items wherever wmv itself has no tie."""
    item_perm, worker_perm = _permutations(data, s)
    mv = majority_vote(s.items, s.workers, s.labels, **s.shape)
    extra = data.draw(st.sets(st.integers(0, s.n_items - 1)), label="extra_gold")
    gold_items = np.array(sorted(set(np.flatnonzero(mv.ties).tolist()) | extra), dtype=np.int64)
    gold_labels = np.array(data.draw(st.lists(st.integers(0, s.n_classes - 1), min_size=gold_items.size,
                                              max_size=gold_items.size), label="gold_labels"), dtype=np.int64)
    before = aggregate("wmv", s.items, s.workers, s.labels, gold_items=gold_items, gold_labels=gold_labels,
                       **s.shape)
    after = aggregate("wmv", *_rows(s.relabel(item_perm, worker_perm)), gold_items=item_perm[gold_items],
                      gold_labels=gold_labels, **s.shape)
    ties = before.result.ties
    np.testing.assert_array_equal(after.result.ties[item_perm], ties)
    np.testing.assert_array_equal(after.result.labels[item_perm][~ties], before.result.labels[~ties])
    np.testing.assert_array_equal(after.result.posteriors[item_perm], before.result.posteriors)
    np.testing.assert_array_equal(after.worker_answers[worker_perm], before.worker_answers)
    if not ties.any():  # the reported accuracy is agreement with wmv's own labels, tie-breaks included
        np.testing.assert_array_equal(after.worker_accuracy[worker_perm], before.worker_accuracy)


@PROPERTY
@given(answer_sets(), st.data())
def test_dawid_skene_moves_with_relabelled_items_and_workers(s: Answers, data: st.DataObject) -> None:
    """DS has no tie-break of its own and starts from MV's vote shares (not its labels): posteriors move with
    the items, confusion matrices with the workers, priors stay, all up to float32 rounding; labels move with
    the items wherever the posterior has a clear leader."""
    item_perm, worker_perm = _permutations(data, s)
    before = aggregate("ds", s.items, s.workers, s.labels, **FIXED, **s.shape)
    after = aggregate("ds", *_rows(s.relabel(item_perm, worker_perm)), **FIXED, **s.shape)
    b, a = before.result, after.result
    np.testing.assert_allclose(a.posteriors[item_perm], b.posteriors, atol=ATOL)
    np.testing.assert_allclose(a.confidence[item_perm], b.confidence, atol=ATOL)
    np.testing.assert_allclose(a.confusion[worker_perm], b.confusion, atol=ATOL)
    np.testing.assert_allclose(a.priors, b.priors, atol=ATOL)
    np.testing.assert_allclose(after.worker_accuracy[worker_perm], before.worker_accuracy, atol=ATOL)
    clear = (leads(b.posteriors) > MARGIN) | (b.labels == NO_LABEL)
    np.testing.assert_array_equal(a.labels[item_perm][clear], b.labels[clear])


@PROPERTY
@given(answer_sets())
def test_majority_vote_unanimous_items(s: Answers) -> None:
    """An item whose answers all give label k: MV says k, with share exactly 1 and no tie (its vote row is
    (0, .., n, .., 0), so n / n is exact). Holds in any answer set."""
    result = majority_vote(s.items, s.workers, s.labels, **s.shape)
    agreed = unanimous(s)
    mask = agreed != NO_LABEL
    np.testing.assert_array_equal(result.labels[mask], agreed[mask])
    assert (result.confidence[mask] == 1.0).all()
    assert not result.ties[mask].any()


@PROPERTY
@given(perfect_answer_sets())
def test_dawid_skene_unanimous_items_in_perfect_answer_sets(case: tuple[Answers, np.ndarray]) -> None:
    """What is asserted: in an answer set where every item is unanimous (perfect workers), every answered item
    has >= 2 answers and every worker has answered every class in use, DS gives each answered item its unanimous
    label with confidence > 0.9 (and -1 / 0 to unanswered items).

    Why: DS starts from MV's shares, here one-hot on the truth. The first M-step, with the default prior's
    pseudo-counts (c = 0.5 on a confusion row's diagonal, w = 0.01 elsewhere, 1 per class), gives each worker
    who answered n >= 1 items of class k P(answer k | truth k) = (n + c) / (n + c + (K - 1) w) >= 1.5 / 1.53
    and, because the worker has seen class j != k, P(answer k | truth j) <= w / (1 + c) < 0.0067: each answer
    multiplies the odds of the truth against any other class by >= 147. The priors' odds are >= 2 / 30, as the
    item's own class has at least one of at most 30 items. With 2 answers the odds are >= 147**2 / 15 > 1,400
    against each of <= 3 alternatives: the first E-step leaves >= 0.99 on the truth, and EM only sharpens a
    posterior that the workers' confusion matrices agree with (checked here).

    Without the two conditions it is false, and not through a bug: a worker seen on one class only has an
    unknown confusion row for the others, and a single answer per item leaves DS no redundancy, so the class
    prior or EM's drift to a degenerate solution can overrule unanimity (see test_reference.py's isolated-worker
    case, where crowd-kit's DawidSkene does the same)."""
    s, truth = case
    result = dawid_skene(s.items, s.workers, s.labels, **s.shape)
    answered = np.bincount(s.items, minlength=s.n_items) > 0
    np.testing.assert_array_equal(result.labels[answered], truth[answered])
    assert (result.confidence[answered] > 0.9).all(), result.confidence[answered].min()
    assert (result.labels[~answered] == NO_LABEL).all() and (result.confidence[~answered] == 0).all()


@PROPERTY
@given(perfect_answer_sets())
def test_dawid_skene_with_perfect_workers_equals_majority_vote(case: tuple[Answers, np.ndarray]) -> None:
    """Perfect workers (same conditions as above): DS's labels are MV's labels on every item, answered or not;
    MV has no ties since every item is unanimous."""
    s, _ = case
    mv = aggregate("mv", s.items, s.workers, s.labels, **s.shape).result
    ds = aggregate("ds", s.items, s.workers, s.labels, **s.shape).result
    assert not mv.ties.any()
    np.testing.assert_array_equal(ds.labels, mv.labels)


@PROPERTY
@given(answer_sets(), st.data())
def test_gold_aware_dawid_skene_keeps_gold(s: Answers, data: st.DataObject) -> None:
    """ds-gold: each gold item (answered or not, whatever its answers say) gets its known label with confidence
    exactly 1 and a one-hot posterior."""
    gold = sorted(data.draw(st.sets(st.integers(0, s.n_items - 1), min_size=1), label="gold_items"))
    gold_items = np.array(gold, dtype=np.int64)
    gold_labels = np.array(data.draw(st.lists(st.integers(0, s.n_classes - 1), min_size=len(gold),
                                              max_size=len(gold)), label="gold_labels"), dtype=np.int64)
    result = aggregate("ds-gold", s.items, s.workers, s.labels, gold_items=gold_items, gold_labels=gold_labels,
                       **s.shape).result
    np.testing.assert_array_equal(result.labels[gold_items], gold_labels)
    assert (result.confidence[gold_items] == 1.0).all()
    np.testing.assert_array_equal(result.posteriors[gold_items], np.eye(s.n_classes)[gold_labels])
