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
    stop_reason: str | None = None  # Dawid–Skene: "converged" or "max_iter"
    log_likelihood: float | None = None  # Dawid–Skene: the objective at the end, per answer


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
        self.gold_labels = gold_t.argmax(axis=1) if gold_t.size else np.zeros(0, dtype=np.int64)

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """The M-step's sums: soft counts per (worker, given label) x true class, and class totals."""
        return (self.design_t @ self.t).astype(np.float64), (self.answered @ self.t).astype(np.float64)

    def e_step(self, log_confusion: np.ndarray, measure: bool) -> tuple[float, float]:
        """Log posteriors, then a softmax per item (an item without answers gets the priors). Returns the
        log-likelihood of the answers under these parameters (a gold item's at its known label) and, when
        `measure`, the largest change of any posterior (else 0)."""
        log_t = self.design @ log_confusion  # the last column of the design adds the log priors to every item
        gold_joint = log_t[self.gold_rows, self.gold_labels].astype(np.float64)
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
        # log p(item's answers) = top + log(total); an item without answers adds log(sum of priors) = 0.
        evidence = np.log(total)
        evidence += top
        log_likelihood = float(evidence.sum(dtype=np.float64))
        if self.gold_rows.size:
            log_likelihood += float((gold_joint - evidence[self.gold_rows]).sum())
        np.reciprocal(total, out=total)
        for column in columns:
            np.multiply(column, total, out=column)
        log_t[self.gold_rows] = self.gold_t
        change = float(np.abs(log_t - self.t).max()) if measure and log_t.size else 0.0
        self.t = log_t
        return log_likelihood, change


@dataclass(frozen=True)
class Prior:
    """A Dirichlet prior as pseudo-counts, added to the M-step's soft counts (its MAP estimate): `correct` on
    each confusion row's diagonal (the worker gives the true class), `wrong` on each other entry, `classes` on
    each class's count. One-coin Dawid–Skene pools a row's worth: `correct` right answers and `wrong` for each
    other label."""

    correct: float = 0.5
    wrong: float = 0.01
    classes: float = 1.0

    def check(self) -> None:
        if not (self.correct >= 0 and self.wrong > 0 and self.classes > 0) or not all(
                np.isfinite([self.correct, self.wrong, self.classes])):
            raise ValueError("prior pseudo-counts must be finite, correct >= 0, wrong and classes > 0")


DEFAULT_PRIOR = Prior()
# Dawid–Skene's stopping defaults: at most MAX_ITER iterations; converged when the objective per answer changes by
# less than TOL, or when no posterior moves by more than POSTERIOR_TOL.
MAX_ITER, TOL, POSTERIOR_TOL = 100, 1e-6, 1e-5
STOP_CONVERGED, STOP_MAX_ITER = "converged", "max_iter"


def dawid_skene(items: np.ndarray, workers: np.ndarray, labels: np.ndarray, *, n_items: int, n_workers: int,
                n_classes: int, max_iter: int = MAX_ITER, tol: float = TOL, posterior_tol: float = POSTERIOR_TOL,
                prior: Prior = DEFAULT_PRIOR, gold_items: np.ndarray | None = None,
                gold_labels: np.ndarray | None = None, one_coin: bool = False) -> Result:
    """Dawid–Skene EM with a full confusion matrix per worker, started from majority vote. The E-step is
    computed in log space (nothing underflows, however many answers an item has); the M-step is the MAP estimate
    under the Dirichlet `prior`. Stops after `max_iter` iterations, or converged: when the objective EM climbs
    (the log-likelihood of the answers plus the prior's log density, per answer) changes by less than `tol`, or,
    as a second guard, when no posterior moves by more than `posterior_tol` (0 turns a rule off). Gold-aware
    when `gold_items`/`gold_labels` are given: those items keep their known label in every E-step, so the
    confusion matrices are anchored by truth. `one_coin`: each worker has one accuracy and spreads errors evenly
    over the other labels (K(K−1) fewer parameters per worker: steadier with many classes or few answers per
    worker, blind to systematic confusions)."""
    if max_iter < 1 or not tol >= 0 or not posterior_tol >= 0:
        raise ValueError("max_iter must be at least 1, tol and posterior_tol non-negative")
    prior.check()
    items, workers, labels = _answers(items, workers, labels, n_items, n_workers, n_classes)
    answered = np.bincount(items, minlength=n_items) > 0
    gold_i, gold_l = _gold(gold_items, gold_labels, n_items, n_classes)
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
    m_step = _MStep(n_workers, n_classes, prior, one_coin)
    n_answers = max(items.size, 1)
    objective, stop = -np.inf, STOP_MAX_ITER
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        confusion, priors = m_step(state)
        log_params = np.log(np.vstack([confusion, priors]))
        log_likelihood, change = state.e_step(log_params.astype(DTYPE), posterior_tol > 0)
        previous, objective = objective, (log_likelihood + m_step.log_prior(log_params)) / n_answers
        if abs(objective - previous) < tol or change < posterior_tol:
            stop = STOP_CONVERGED
            break
    confusion, priors = m_step(state)  # the parameters of the final posteriors
    confusion = confusion.reshape(n_workers, n_classes, n_classes)  # worker x given x true
    t = state.t.astype(np.float64)
    answered[gold_i] = True  # a gold item's label is known, answered or not
    chosen = np.where(answered, t.argmax(axis=1), NO_LABEL).astype(np.int32)
    confidence = np.where(answered, t.max(axis=1), 0.0)
    return Result(chosen, confidence, t, confusion=confusion.transpose(0, 2, 1).copy(), priors=priors,
                  iterations=iterations, stop_reason=stop, log_likelihood=objective)


def _gold(gold_items: np.ndarray | None, gold_labels: np.ndarray | None, n_items: int,
          n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    gold_i = np.asarray(gold_items if gold_items is not None else [], dtype=np.int64)
    gold_l = np.asarray(gold_labels if gold_labels is not None else [], dtype=np.int64)
    if gold_i.shape != gold_l.shape or gold_i.ndim != 1 or (
            gold_i.size and (gold_i.min() < 0 or gold_i.max() >= n_items or gold_l.min() < 0
                             or gold_l.max() >= n_classes)):
        raise ValueError("gold_items and gold_labels must be equal-length, in range")
    return gold_i, gold_l


class _MStep:
    """Class priors and confusion rows (P(given label | true class)) from the current posteriors: the MAP
    estimate under the Dirichlet prior, whose log density (up to a constant) `log_prior` adds to the objective."""

    def __init__(self, n_workers: int, n_classes: int, prior: Prior, one_coin: bool) -> None:
        self.n_workers, self.n_classes, self.prior, self.one_coin = n_workers, n_classes, prior, one_coin
        # given label x true class
        self.pseudo = np.full((n_classes, n_classes), prior.wrong) + np.eye(n_classes) * (prior.correct - prior.wrong)

    def __call__(self, state: _Design) -> tuple[np.ndarray, np.ndarray]:
        counts, priors = state.counts()
        w, k = self.n_workers, self.n_classes
        by_worker = counts.reshape(w, k, k)  # worker x given x true
        if self.one_coin:
            right = np.einsum("wkk->w", by_worker) + self.prior.correct
            accuracy = right / (by_worker.sum(axis=(1, 2)) + self.prior.correct + self.prior.wrong * (k - 1))
            wrong = (1 - accuracy) / max(k - 1, 1)
            counts = np.repeat(wrong, k)[:, None] * np.ones(k)
            counts.reshape(w, k, k)[:, np.arange(k), np.arange(k)] = accuracy[:, None]
        else:
            by_worker += self.pseudo
            counts /= by_worker.sum(axis=1).repeat(k, axis=0)
        priors += self.prior.classes
        return counts, priors / priors.sum()

    def log_prior(self, log_params: np.ndarray) -> float:
        """The prior's log density at these parameters, up to a constant (rows: (worker, given), then priors)."""
        w, k = self.n_workers, self.n_classes
        log_confusion = log_params[:-1].reshape(w, k, k)
        if self.one_coin:  # a Beta prior on each worker's accuracy, in a row's worth of pseudo-counts
            log_right = log_confusion[:, 0, 0]
            log_wrong = log_confusion[:, 1, 0] if k > 1 else np.zeros(w)
            density = self.prior.correct * log_right.sum() + self.prior.wrong * (k - 1) * log_wrong.sum()
        else:
            density = float(np.einsum("wgt,gt->", log_confusion, self.pseudo))
        return density + self.prior.classes * float(log_params[-1].sum())
