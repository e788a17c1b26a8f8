"""Answer aggregation: majority vote, weighted majority vote, Dawid–Skene and gold-aware Dawid–Skene.

Arrays in, arrays out, numpy only. An answer set is three equal-length integer arrays: `items` (0..n_items-1),
`workers` (0..n_workers-1) and `labels` (0..n_classes-1). Every pass over the answers is a `np.bincount`; the only
Python loops run over iterations and over classes (a handful), never over answers, items or workers.

Each method returns per-item labels (-1 for an item without answers) with a confidence: the posterior probability
of the chosen label (for majority vote, the chosen label's share of the votes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

NO_LABEL = -1
# Dawid–Skene's per-answer and per-item arrays. float32 halves the memory traffic of the two passes; the
# per-worker sums are taken in float64.
DTYPE = np.float32


@dataclass(frozen=True)
class Result:
    labels: np.ndarray  # int32, per item; NO_LABEL where an item has no answers
    confidence: np.ndarray  # float64, per item; 0 where an item has no answers
    posteriors: np.ndarray  # float64, items x classes
    ties: np.ndarray | None = None  # bool per item (majority votes): the top count was shared, a seeded RNG chose
    confusion: np.ndarray | None = None  # Dawid-Skene: workers x true class x given label, rows sum to 1
    priors: np.ndarray | None = None  # Dawid-Skene: class priors
    iterations: int = 0


def _answers(items: np.ndarray, workers: np.ndarray, labels: np.ndarray, n_items: int, n_workers: int,
             n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(a) for a in (items, workers, labels)]
    if any(a.ndim != 1 for a in arrays) or len({a.shape[0] for a in arrays}) != 1:
        raise ValueError("items, workers and labels must be 1-D arrays of one length")
    if any(a.size and not np.issubdtype(a.dtype, np.integer) for a in arrays):
        raise ValueError("items, workers and labels must be integer arrays")
    for name, a, bound in (("items", arrays[0], n_items), ("workers", arrays[1], n_workers),
                           ("labels", arrays[2], n_classes)):
        if bound >= 2**31:
            raise ValueError(f"n_{name} must be below 2**31")
        if bound < 1 and a.size:
            raise ValueError(f"n_{name} must be positive")
        if a.size and (a.min() < 0 or a.max() >= bound):
            raise ValueError(f"{name} must lie in [0, {bound})")
    return tuple(a.astype(np.int32, copy=False) for a in arrays)  # type: ignore[return-value]


def _votes(items: np.ndarray, labels: np.ndarray, n_items: int, n_classes: int,
           weights: np.ndarray | None = None) -> np.ndarray:
    flat = np.bincount(items.astype(np.int64) * n_classes + labels, weights=weights, minlength=n_items * n_classes)
    return flat.reshape(n_items, n_classes).astype(np.float64, copy=False)


def _pick(votes: np.ndarray, answered: np.ndarray, seed: int) -> Result:
    """The top-voted label per item, ties broken by a seeded RNG and reported."""
    top = votes.max(axis=1, keepdims=True)
    is_top = (votes == top) & answered[:, None]
    ties = is_top.sum(axis=1) > 1
    keys = np.random.default_rng(seed).random(votes.shape)
    labels = np.where(answered, np.argmax(np.where(is_top, keys, -1.0), axis=1), NO_LABEL).astype(np.int32)
    total = votes.sum(axis=1)
    posteriors = np.divide(votes, total[:, None], out=np.zeros_like(votes), where=total[:, None] > 0)
    confidence = np.where(answered, posteriors[np.arange(len(votes)), np.maximum(labels, 0)], 0.0)
    return Result(labels, confidence, posteriors, ties=ties & answered)


def majority_vote(items: np.ndarray, workers: np.ndarray, labels: np.ndarray, *, n_items: int, n_workers: int,
                  n_classes: int, seed: int = 0) -> Result:
    """The most frequent label per item; ties broken by `seed` and reported in `ties`."""
    items, workers, labels = _answers(items, workers, labels, n_items, n_workers, n_classes)
    votes = _votes(items, labels, n_items, n_classes)
    return _pick(votes, np.bincount(items, minlength=n_items) > 0, seed)


def accuracy_weights(accuracy: np.ndarray, n_classes: int, *, floor: float = 1e-3) -> np.ndarray:
    """Vote weights from workers' accuracies: the log-odds of a right answer against any one wrong label,
    log(p (K - 1) / (1 - p)), the optimal weight when a worker's errors spread evenly; no weight at or below
    chance (1 / K), so a worker worse than chance cannot push the vote their way."""
    p = np.clip(np.asarray(accuracy, dtype=np.float64), floor, 1 - floor)
    if n_classes < 2:  # one label: nobody can be wrong, everyone counts the same
        return np.ones_like(p)
    return np.maximum(np.log(p * (n_classes - 1) / (1 - p)), 0.0)


def weighted_majority_vote(items: np.ndarray, workers: np.ndarray, labels: np.ndarray, *, worker_weights: np.ndarray,
                           n_items: int, n_workers: int, n_classes: int, seed: int = 0) -> Result:
    """Majority vote with a weight per worker (`accuracy_weights` of their gold accuracy, say)."""
    items, workers, labels = _answers(items, workers, labels, n_items, n_workers, n_classes)
    weights = np.asarray(worker_weights, dtype=np.float64)
    if weights.shape != (n_workers,) or (weights < 0).any():
        raise ValueError("worker_weights must be n_workers non-negative numbers")
    votes = _votes(items, labels, n_items, n_classes, weights[workers])
    # An item only zero-weight workers answered falls back to its plain votes rather than to a coin flip among
    # every class, including those nobody gave.
    silent = votes.sum(axis=1) == 0
    if silent.any():
        votes[silent] = _votes(items, labels, n_items, n_classes)[silent]
    return _pick(votes, np.bincount(items, minlength=n_items) > 0, seed)


class _Design:
    """The answers as a sparse items x (worker, given label) count matrix, with the current posteriors.
    Dawid–Skene's two passes over the answers are products with this matrix and its transpose."""

    def __init__(self, items: np.ndarray, pair: np.ndarray, n_pairs: int, t: np.ndarray, answered: np.ndarray,
                 gold_rows: np.ndarray, gold_t: np.ndarray) -> None:
        # One more column, a 1 in every row, carries the log priors through the E-step's product.
        n_items = t.shape[0]
        rows = np.concatenate([items, np.arange(n_items, dtype=items.dtype)])
        columns = np.concatenate([pair, np.full(n_items, n_pairs, dtype=pair.dtype)])
        self.design = sp.csr_matrix((np.ones(rows.size, dtype=DTYPE), (rows, columns)), shape=(n_items, n_pairs + 1))
        self.design_t = sp.csr_matrix((np.ones(items.size, dtype=DTYPE), (items, pair)), shape=(n_items, n_pairs)).T
        self.t = t.astype(DTYPE)
        self.answered = answered.astype(DTYPE)
        self.gold_rows, self.gold_t = gold_rows, gold_t.astype(DTYPE)

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """The M-step's sums: soft counts per (worker, given label) x true class, and class totals."""
        return (self.design_t @ self.t).astype(np.float64), (self.answered @ self.t).astype(np.float64)

    def e_step(self, log_confusion: np.ndarray, measure: bool) -> float:
        """Log posteriors, then a softmax per item (an item without answers gets the priors); returns the largest
        change of any posterior when `measure`, else 0."""
        log_t = self.design @ log_confusion  # the last column of the design adds the log priors to every item
        # Column by column: numpy's broadcasting over a short last axis is several times slower.
        columns = [log_t[:, k] for k in range(log_t.shape[1])]
        top = columns[0].copy()
        for column in columns[1:]:
            np.maximum(top, column, out=top)
        for column in columns:
            np.subtract(column, top, out=column)
        np.exp(log_t, out=log_t)
        total = columns[0].copy()
        for column in columns[1:]:
            total += column
        np.reciprocal(total, out=total)
        for column in columns:
            np.multiply(column, total, out=column)
        log_t[self.gold_rows] = self.gold_t
        change = float(np.abs(log_t - self.t).max()) if measure and log_t.size else 0.0
        self.t = log_t
        return change


def dawid_skene(items: np.ndarray, workers: np.ndarray, labels: np.ndarray, *, n_items: int, n_workers: int,
                n_classes: int, max_iter: int = 100, tol: float = 1e-5, smoothing: float = 0.01,
                gold_items: np.ndarray | None = None, gold_labels: np.ndarray | None = None,
                one_coin: bool = False) -> Result:
    """Dawid–Skene EM with a full confusion matrix per worker, started from majority vote. The E-step is
    computed in log space (nothing underflows, however many answers an item has); `smoothing` is added to every
    confusion count and prior; the run stops after `max_iter` iterations or when no posterior moves by more than
    `tol` (0 runs every iteration). Gold-aware when `gold_items`/`gold_labels` are given: those items keep their
    known label in every E-step, so the confusion matrices are anchored by truth. `one_coin`: each worker has one
    accuracy and spreads errors evenly over the other labels (K(K−1) fewer parameters per worker: steadier with
    many classes or few answers per worker, blind to systematic confusions)."""
    if max_iter < 1 or tol < 0 or smoothing <= 0:
        raise ValueError("max_iter must be at least 1, tol non-negative and smoothing positive")
    items, workers, labels = _answers(items, workers, labels, n_items, n_workers, n_classes)
    answered = np.bincount(items, minlength=n_items) > 0
    gold_i = np.asarray(gold_items if gold_items is not None else [], dtype=np.int64)
    gold_l = np.asarray(gold_labels if gold_labels is not None else [], dtype=np.int64)
    if gold_i.shape != gold_l.shape or gold_i.ndim != 1 or (
            gold_i.size and (gold_i.min() < 0 or gold_i.max() >= n_items or gold_l.min() < 0
                             or gold_l.max() >= n_classes)):
        raise ValueError("gold_items and gold_labels must be equal-length, in range")
    votes = _votes(items, labels, n_items, n_classes)
    totals = votes.sum(axis=1, keepdims=True)
    t = np.divide(votes, totals, out=np.full_like(votes, 1.0 / n_classes), where=totals > 0)
    gold_t = np.eye(n_classes)[gold_l]
    t[gold_i] = gold_t
    n_pairs = n_workers * n_classes
    pair = workers.astype(np.int64) * n_classes + labels  # (worker, given label) of each answer
    if n_pairs < 2**31:
        pair = pair.astype(np.int32)
    state = _Design(items, pair, n_pairs, t, answered, gold_i, gold_t)
    del votes, totals, t, pair

    def m_step() -> tuple[np.ndarray, np.ndarray]:
        """Class priors and confusion rows (P(given label | true class)) from the current posteriors."""
        counts, priors = state.counts()
        if one_coin:
            by_worker = counts.reshape(n_workers, n_classes, n_classes)  # worker x given x true
            right = np.einsum("wkk->w", by_worker) + smoothing
            accuracy = right / (by_worker.sum(axis=(1, 2)) + smoothing * n_classes)
            wrong = (1 - accuracy) / max(n_classes - 1, 1)
            counts = np.repeat(wrong, n_classes)[:, None] * np.ones(n_classes)
            counts.reshape(n_workers, n_classes, n_classes)[:, np.arange(n_classes), np.arange(n_classes)] = \
                accuracy[:, None]
        else:
            counts += smoothing
            counts /= counts.reshape(n_workers, n_classes, n_classes).sum(axis=1).repeat(n_classes, axis=0)
        priors += smoothing
        return counts, priors / priors.sum()

    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        confusion, priors = m_step()
        if state.e_step(np.log(np.vstack([confusion, priors])).astype(DTYPE), tol > 0) < tol:
            break
    confusion, priors = m_step()  # the parameters of the final posteriors
    confusion = confusion.reshape(n_workers, n_classes, n_classes)  # worker x given x true
    t = state.t.astype(np.float64)
    answered[gold_i] = True  # a gold item's label is known, answered or not
    chosen = np.where(answered, t.argmax(axis=1), NO_LABEL).astype(np.int32)
    confidence = np.where(answered, t.max(axis=1), 0.0)
    return Result(chosen, confidence, t, confusion=confusion.transpose(0, 2, 1).copy(), priors=priors,
                  iterations=iterations)
