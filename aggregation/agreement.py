"""Inter-annotator agreement: Cohen's kappa, Fleiss' kappa and nominal Krippendorff's alpha.

Agreement tells us whether a labeling job's instructions and categories are usable at all: low chance-corrected
agreement means aggregation is averaging noise. Numpy only, following `aggregation.methods`: answers are equal-length
integer arrays (`items`, `labels`), every pass over them is a `np.bincount` or an `einsum`, and no Python loop runs
over items, answers or workers.

Degenerate inputs, where chance alone already explains all agreement (everyone used one category), have no defined
chance-corrected coefficient; they give nan rather than an arbitrary 0 or 1, so callers must decide what it means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FleissResult:
    kappa: float  # nan when every rating falls in one category (P_e == 1)
    per_category: np.ndarray  # float64 per category (Fleiss 1971 kappa_j); nan where p_j is 0 or 1
    observed: float  # P-bar: mean share of agreeing rater pairs per item
    expected: float  # P_e: sum of squared category shares


@dataclass(frozen=True)
class AlphaResult:
    alpha: float  # nan when no disagreement is possible (D_e == 0)
    per_category: np.ndarray  # float64 per category: alpha of the "c vs not c" recoding; nan where D_e == 0
    pairable: int  # n: values in units with at least 2 answers
    units: int  # units (items) with at least 2 answers


def _int_array(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array")
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must be non-negative")
    return a.astype(np.int64, copy=False)


def _bound(name: str, a: np.ndarray, bound: int) -> None:
    if isinstance(bound, bool) or not isinstance(bound, int | np.integer) or bound < 1:
        raise ValueError(f"n_{name} must be a positive integer")
    if a.size and a.max() >= bound:
        raise ValueError(f"{name} must lie in [0, {bound})")


def cohen_kappa(a: np.ndarray, b: np.ndarray, *, n_classes: int | None = None) -> float:
    """Cohen's kappa of two annotators' labels on the same items: agreement corrected for the chance agreement
    implied by each annotator's own label frequencies.

    Returns nan when chance agreement is 1 (both annotators used one and the same single class): kappa is 0/0 there.
    """
    a, b = _int_array("a", a), _int_array("b", b)
    if a.size != b.size:
        raise ValueError("a and b must have the same length")
    if a.size == 0:
        raise ValueError("a and b must hold at least one item")
    k = int(max(a.max(), b.max())) + 1 if n_classes is None else n_classes
    _bound("classes", np.concatenate([a, b]), k)
    confusion = np.bincount(a * k + b, minlength=k * k).reshape(k, k)
    n = a.size
    # Integer arithmetic so the degenerate test is exact: kappa = (n * agree - chance) / (n^2 - chance).
    agree = int(np.trace(confusion))
    chance = int(confusion.sum(axis=1) @ confusion.sum(axis=0))
    if chance == n * n:
        return float("nan")
    return (n * agree - chance) / (n * n - chance)


def fleiss_kappa(counts: np.ndarray) -> FleissResult:
    """Fleiss' kappa from an items x categories matrix of rating counts, for a fixed number m >= 2 of raters per item
    (not necessarily the same raters). Per-category kappas show which categories the raters confuse.

    Raises ValueError unless every row sums to the same m >= 2. `kappa` is nan when P_e == 1 (all ratings in one
    category); `per_category[j]` is nan where p_j is 0 or 1 (category j never or always used).
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] < 1 or counts.shape[1] < 1:
        raise ValueError("counts must be a non-empty 2-D items x categories array")
    if not (np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)):
        raise ValueError("counts must be numeric")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError("counts must be non-negative integers")
    counts = counts.astype(np.int64)
    raters = counts.sum(axis=1)
    m = int(raters[0])
    if np.any(raters != m) or m < 2:
        raise ValueError("every item (row) must have the same number of ratings m >= 2")
    n_items = counts.shape[0]
    total = n_items * m
    col = counts.sum(axis=0)
    p = col / total
    observed = float(np.mean(((counts * counts).sum(axis=1) - m) / (m * (m - 1))))
    expected = float(p @ p)
    kappa = float("nan") if int(col @ col) == total * total else (observed - expected) / (1.0 - expected)
    disagree = (counts * (m - counts)).sum(axis=0)  # ordered rater pairs that split category j, per category
    spread = total * (m - 1) * p * (1.0 - p)
    varied = (col > 0) & (col < total)
    per_category = np.full(counts.shape[1], np.nan)
    per_category[varied] = 1.0 - disagree[varied] / spread[varied]
    return FleissResult(kappa=kappa, per_category=per_category, observed=observed, expected=expected)


def category_counts(items: np.ndarray, labels: np.ndarray, *, n_items: int, n_classes: int) -> np.ndarray:
    """Items x classes matrix of answer counts (int64), the common input of Fleiss' kappa and Krippendorff's alpha."""
    items, labels = _int_array("items", items), _int_array("labels", labels)
    if items.size != labels.size:
        raise ValueError("items and labels must have the same length")
    _bound("items", items, n_items)
    _bound("classes", labels, n_classes)
    return np.bincount(items * n_classes + labels, minlength=n_items * n_classes).reshape(n_items, n_classes)


def _nominal_alpha(counts: np.ndarray) -> np.ndarray:
    """Nominal alpha of (..., units, classes) count matrices, batched over leading axes.

    Coincidences o_ck = sum_u (n_u n_u^T - diag(n_u)) / (m_u - 1) over pairable units (m_u >= 2); with n_c = sum_k o_ck
    and n = sum_c n_c, alpha = 1 - (n - 1) (n - trace o) / (n^2 - sum_c n_c^2), nan where the denominator is 0.
    """
    counts = counts.astype(np.float64)
    m = counts.sum(axis=-1)
    weight = np.divide(1.0, m - 1.0, out=np.zeros_like(m), where=m >= 2)
    o = np.einsum("...uc,...uk,...u->...ck", counts, counts, weight)
    diag = np.einsum("...uc,...u->...c", counts, weight)
    o -= diag[..., :, None] * np.eye(counts.shape[-1])
    marginal = o.sum(axis=-1)
    n = marginal.sum(axis=-1)
    observed = n - np.trace(o, axis1=-2, axis2=-1)  # D_o up to the factor 1/n
    expected = n * n - (marginal * marginal).sum(axis=-1)  # D_e up to the factor 1/(n (n - 1))
    ok = expected > 0
    return np.where(ok, 1.0 - (n - 1.0) * observed / np.where(ok, expected, 1.0), np.nan)


def krippendorff_alpha(items: np.ndarray, labels: np.ndarray, *, n_items: int, n_classes: int) -> AlphaResult:
    """Nominal Krippendorff's alpha from answers (one per row: item index, label index), so any number of answers
    per item and missing data are fine, unlike Fleiss' kappa. Items with fewer than 2 answers are not pairable and
    are ignored.

    `alpha` is nan when no disagreement is possible (D_e == 0: no pairable values, or all in one category). Each
    `per_category[c]` is the alpha of the binary "c vs not c" recoding, telling which categories are reliable.
    """
    counts = category_counts(items, labels, n_items=n_items, n_classes=n_classes)
    m = counts.sum(axis=1)
    pairable = m >= 2
    alpha = float(_nominal_alpha(counts))
    binary = np.stack([counts, m[:, None] - counts], axis=-1)  # units x classes x 2
    per_category = _nominal_alpha(np.moveaxis(binary, 1, 0))  # classes x units x 2 -> one alpha per class
    return AlphaResult(
        alpha=alpha, per_category=per_category, pairable=int(m[pairable].sum()), units=int(pairable.sum())
    )
