"""Agreement metrics on published worked examples, against reference implementations, and by property."""

from __future__ import annotations

import math

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from aggregation.agreement import (
    AlphaResult,
    FleissResult,
    category_counts,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
)

PROPERTY = settings(max_examples=50, deadline=None)


def same(x: float, y: float, tol: float = 1e-9) -> bool:
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=0, abs_tol=tol)


def same_arrays(x: np.ndarray, y: np.ndarray, tol: float = 1e-9) -> bool:
    return np.allclose(x, y, rtol=0, atol=tol, equal_nan=True)


def answers_from_reliability(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """coders x units matrix (nan = missing, values 0..K-1) -> (items, labels) answer arrays."""
    coders, units = np.nonzero(~np.isnan(data))
    return units.astype(np.int64), data[coders, units].astype(np.int64)


# --- published worked examples -------------------------------------------------------------------------------------


def test_cohen_wikipedia_example():
    # Two readers, 50 grant applications: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5, kappa 0.4.
    a = np.repeat([0, 0, 1, 1], [20, 5, 10, 15])
    b = np.repeat([0, 1, 0, 1], [20, 5, 10, 15])
    assert same(cohen_kappa(a, b), 0.4)
    assert same(cohen_kappa(a, b), cohen_kappa_score(a, b))


FLEISS_WIKIPEDIA = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_wikipedia_example():
    # 10 subjects, 14 raters, 5 categories: p_j = .143 .200 .279 .150 .229, P-bar .378, P_e .213, kappa .210.
    result = fleiss_kappa(FLEISS_WIKIPEDIA)
    assert isinstance(result, FleissResult)
    assert FLEISS_WIKIPEDIA.sum() == 140
    assert np.allclose(FLEISS_WIKIPEDIA.sum(axis=0) / 140, [0.143, 0.200, 0.279, 0.150, 0.229], atol=5e-4)
    assert round(result.observed, 3) == 0.378
    assert round(result.expected, 3) == 0.213
    assert round(result.kappa, 3) == 0.210
    assert same(result.kappa, sm_fleiss_kappa(FLEISS_WIKIPEDIA, method="fleiss"))
    assert same_arrays(result.per_category, fleiss_per_category_reference(FLEISS_WIKIPEDIA))


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units, values 1-5.
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
        [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
    ]
)


def test_krippendorff_2011_example():
    items, labels = answers_from_reliability(KRIPPENDORFF_2011 - 1)
    result = krippendorff_alpha(items, labels, n_items=12, n_classes=5)
    assert isinstance(result, AlphaResult)
    assert round(result.alpha, 3) == 0.743
    assert result.pairable == 40  # n = 40 pairable values; unit 12 has a single value
    assert result.units == 11
    assert same(result.alpha, krippendorff.alpha(reliability_data=KRIPPENDORFF_2011, level_of_measurement="nominal"))


# --- reference implementations on seeded random data ----------------------------------------------------------------


def fleiss_per_category_reference(counts: np.ndarray) -> np.ndarray:
    """Fleiss (1971) eq. for kappa_j written as (P_j - p_j) / q_j with P_j the within-category agreement, looped."""
    n_items, n_cat = counts.shape
    m = counts[0].sum()
    out = []
    for j in range(n_cat):
        col = [int(counts[i, j]) for i in range(n_items)]
        p = sum(col) / (n_items * m)
        if p in (0.0, 1.0):
            out.append(np.nan)
            continue
        within = sum(c * (c - 1) for c in col) / (sum(col) * (m - 1))
        out.append((within - p) / (1 - p))
    return np.array(out)


@pytest.mark.parametrize(("seed", "n", "k"), [(0, 50, 2), (1, 200, 3), (2, 30, 4), (3, 500, 5), (4, 7, 3)])
def test_cohen_matches_sklearn(seed, n, k):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, k, n)
    b = np.where(rng.random(n) < 0.6, a, rng.integers(0, k, n))
    assert same(cohen_kappa(a, b, n_classes=k), cohen_kappa_score(a, b))
    assert same(cohen_kappa(a, b), cohen_kappa_score(a, b))


@pytest.mark.parametrize(("seed", "n", "m", "k"), [(0, 40, 3, 2), (1, 100, 5, 3), (2, 25, 2, 4), (3, 300, 7, 5)])
def test_fleiss_matches_statsmodels(seed, n, m, k):
    rng = np.random.default_rng(seed)
    prefs = rng.dirichlet(np.full(k, 0.5), size=n)  # item-specific label distributions -> real agreement
    counts = np.stack([rng.multinomial(m, p) for p in prefs])
    result = fleiss_kappa(counts)
    assert same(result.kappa, sm_fleiss_kappa(counts, method="fleiss"))
    assert same_arrays(result.per_category, fleiss_per_category_reference(counts))
    varied = ~np.isnan(result.per_category)
    pq = (counts.sum(axis=0) / counts.sum()) * (1 - counts.sum(axis=0) / counts.sum())
    assert same(result.kappa, float(pq[varied] @ result.per_category[varied] / pq[varied].sum()))


@pytest.mark.parametrize(
    ("seed", "coders", "units", "k", "missing"),
    [(0, 2, 40, 2, 0.0), (1, 3, 60, 3, 0.2), (2, 5, 30, 4, 0.4), (3, 4, 100, 5, 0.3), (4, 6, 20, 3, 0.6)],
)
def test_krippendorff_matches_package(seed, coders, units, k, missing):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, units)
    data = np.where(rng.random((coders, units)) < 0.7, truth, rng.integers(0, k, (coders, units))).astype(float)
    data[rng.random((coders, units)) < missing] = np.nan
    items, labels = answers_from_reliability(data)
    result = krippendorff_alpha(items, labels, n_items=units, n_classes=k)
    assert same(result.alpha, krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
    per_m = (~np.isnan(data)).sum(axis=0)
    assert result.units == int((per_m >= 2).sum())
    assert result.pairable == int(per_m[per_m >= 2].sum())
    for c in range(k):
        binary = np.where(np.isnan(data), np.nan, (data == c).astype(float))
        expected = krippendorff.alpha(reliability_data=binary, level_of_measurement="nominal")
        assert same(float(result.per_category[c]), expected)


def test_category_counts():
    counts = category_counts(np.array([0, 0, 2, 2, 2]), np.array([1, 1, 0, 2, 2]), n_items=4, n_classes=3)
    assert counts.tolist() == [[0, 2, 0], [0, 0, 0], [1, 0, 2], [0, 0, 0]]


# --- degenerate cases: nan, documented ------------------------------------------------------------------------------


def test_degenerate_cases_give_nan():
    assert math.isnan(cohen_kappa(np.zeros(5, int), np.zeros(5, int), n_classes=3))
    flat = fleiss_kappa(np.array([[3, 0], [3, 0]]))
    assert math.isnan(flat.kappa) and np.isnan(flat.per_category).all()
    assert flat.observed == 1.0 and flat.expected == 1.0
    lonely = krippendorff_alpha(np.array([0, 1, 2]), np.array([0, 1, 0]), n_items=3, n_classes=2)
    assert math.isnan(lonely.alpha) and lonely.pairable == 0 and lonely.units == 0
    one_class = krippendorff_alpha(np.array([0, 0, 1, 1]), np.array([1, 1, 1, 1]), n_items=2, n_classes=3)
    assert math.isnan(one_class.alpha) and np.isnan(one_class.per_category).all()
    empty = krippendorff_alpha(np.array([], int), np.array([], int), n_items=2, n_classes=2)
    assert math.isnan(empty.alpha) and empty.pairable == 0


# --- properties -----------------------------------------------------------------------------------------------------


@st.composite
def label_pairs(draw):
    k = draw(st.integers(2, 5))
    n = draw(st.integers(1, 40))
    labels = st.lists(st.integers(0, k - 1), min_size=n, max_size=n)
    return k, np.array(draw(labels)), np.array(draw(labels))


@st.composite
def count_tables(draw, k=None):
    k = draw(st.integers(2, 5)) if k is None else k
    m = draw(st.integers(2, 6))
    n = draw(st.integers(1, 15))
    rows = draw(st.lists(st.lists(st.integers(0, k - 1), min_size=m, max_size=m), min_size=n, max_size=n))
    return np.stack([np.bincount(row, minlength=k) for row in rows])


@st.composite
def answer_sets(draw, k=None):
    k = draw(st.integers(2, 5)) if k is None else k
    n_items = draw(st.integers(1, 12))
    pairs = draw(st.lists(st.tuples(st.integers(0, n_items - 1), st.integers(0, k - 1)), max_size=50))
    items = np.array([p[0] for p in pairs], dtype=np.int64)
    labels = np.array([p[1] for p in pairs], dtype=np.int64)
    return k, n_items, items, labels


@PROPERTY
@given(label_pairs(), st.data())
def test_cohen_invariant_to_relabelling_and_item_order(case, data):
    k, a, b = case
    perm = np.array(data.draw(st.permutations(range(k))))
    order = np.array(data.draw(st.permutations(range(a.size))))
    base = cohen_kappa(a, b, n_classes=k)
    assert same(cohen_kappa(perm[a], perm[b], n_classes=k), base)
    assert same(cohen_kappa(a[order], b[order], n_classes=k), base)
    assert same(cohen_kappa(b, a, n_classes=k), base)


@PROPERTY
@given(label_pairs())
def test_cohen_perfect_agreement_is_one(case):
    k, a, _ = case
    if np.unique(a).size > 1:
        assert same(cohen_kappa(a, a, n_classes=k), 1.0)


@PROPERTY
@given(count_tables(), st.data())
def test_fleiss_invariant_to_relabelling_and_item_order(counts, data):
    perm = np.array(data.draw(st.permutations(range(counts.shape[1]))))
    order = np.array(data.draw(st.permutations(range(counts.shape[0]))))
    base = fleiss_kappa(counts)
    relabelled = fleiss_kappa(counts[:, perm])
    assert same(relabelled.kappa, base.kappa)
    assert same_arrays(relabelled.per_category, base.per_category[perm])
    reordered = fleiss_kappa(counts[order])
    assert same(reordered.kappa, base.kappa)
    assert same_arrays(reordered.per_category, base.per_category)


@PROPERTY
@given(count_tables())
def test_fleiss_perfect_agreement_is_one(counts):
    m = counts[0].sum()
    unanimous = np.zeros_like(counts)
    unanimous[np.arange(counts.shape[0]), counts.argmax(axis=1)] = m
    result = fleiss_kappa(unanimous)
    used = (unanimous.sum(axis=0) > 0).sum()
    if used > 1:
        assert same(result.kappa, 1.0)
        assert same_arrays(result.per_category[unanimous.sum(axis=0) > 0], np.ones(used))


@PROPERTY
@given(count_tables(k=2))
def test_fleiss_two_categories_per_category_equals_kappa(counts):
    result = fleiss_kappa(counts)
    assert same_arrays(result.per_category, np.full(2, result.kappa))


@PROPERTY
@given(answer_sets(), st.data())
def test_alpha_invariant_to_relabelling_and_item_order(case, data):
    k, n_items, items, labels = case
    perm = np.array(data.draw(st.permutations(range(k))))
    item_perm = np.array(data.draw(st.permutations(range(n_items))))
    order = np.array(data.draw(st.permutations(range(items.size))), dtype=np.int64)
    base = krippendorff_alpha(items, labels, n_items=n_items, n_classes=k)
    relabelled = krippendorff_alpha(items, perm[labels], n_items=n_items, n_classes=k)
    assert same(relabelled.alpha, base.alpha)
    assert same_arrays(relabelled.per_category[perm], base.per_category)
    moved = krippendorff_alpha(item_perm[items][order], labels[order], n_items=n_items, n_classes=k)
    assert same(moved.alpha, base.alpha)
    assert same_arrays(moved.per_category, base.per_category)
    assert (moved.pairable, moved.units) == (base.pairable, base.units)


@PROPERTY
@given(answer_sets())
def test_alpha_perfect_agreement_is_one(case):
    k, n_items, items, _ = case
    gold = np.arange(n_items) % k
    labels = gold[items]
    result = krippendorff_alpha(items, labels, n_items=n_items, n_classes=k)
    counts = np.bincount(items, minlength=n_items)
    if np.unique(gold[counts >= 2]).size > 1:
        assert same(result.alpha, 1.0)


@PROPERTY
@given(answer_sets(k=2))
def test_alpha_two_classes_per_category_equals_alpha(case):
    k, n_items, items, labels = case
    result = krippendorff_alpha(items, labels, n_items=n_items, n_classes=k)
    assert same_arrays(result.per_category, np.full(2, result.alpha))


# --- bad input ------------------------------------------------------------------------------------------------------

I2 = np.array([0, 1])


@pytest.mark.parametrize(
    "call",
    [
        lambda: cohen_kappa(np.array([0, 1]), np.array([0, 1, 1])),
        lambda: cohen_kappa(np.array([], int), np.array([], int)),
        lambda: cohen_kappa(np.array([[0, 1]]), np.array([[0, 1]])),
        lambda: cohen_kappa(np.array([0.0, 1.0]), np.array([0.0, 1.0])),
        lambda: cohen_kappa(np.array([0, -1]), I2),
        lambda: cohen_kappa(np.array([0, 2]), I2, n_classes=2),
        lambda: cohen_kappa(I2, I2, n_classes=0),
        lambda: fleiss_kappa(np.array([2, 1])),
        lambda: fleiss_kappa(np.zeros((0, 3), int)),
        lambda: fleiss_kappa(np.array([[2, 1], [1, 1]])),
        lambda: fleiss_kappa(np.array([[1, 0], [0, 1]])),
        lambda: fleiss_kappa(np.array([[3, -1], [1, 1]])),
        lambda: fleiss_kappa(np.array([[1.5, 0.5], [1.0, 1.0]])),
        lambda: fleiss_kappa(np.array([[np.nan, 2.0], [1.0, 1.0]])),
        lambda: category_counts(I2, np.array([0, 1, 1]), n_items=2, n_classes=2),
        lambda: category_counts(np.array([0, 2]), I2, n_items=2, n_classes=2),
        lambda: category_counts(I2, np.array([0, 3]), n_items=2, n_classes=2),
        lambda: category_counts(I2, I2, n_items=0, n_classes=2),
        lambda: krippendorff_alpha(I2, np.array([0.0, 1.0]), n_items=2, n_classes=2),
        lambda: krippendorff_alpha(np.array([-1, 0]), I2, n_items=2, n_classes=2),
        lambda: krippendorff_alpha(I2, I2, n_items=2, n_classes=1),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()
