"""One entry point for every aggregation method, shared by the service (background runs) and the CLI.

`aggregate` takes an answer set as index arrays plus optional gold, runs the named method and adds what a
requester reads next to the labels: each worker's estimated accuracy and answer count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aggregation.methods import (
    DEFAULT_PRIOR,
    MAX_ITER,
    POSTERIOR_TOL,
    TOL,
    Prior,
    Result,
    accuracy_weights,
    dawid_skene,
    majority_vote,
    weighted_majority_vote,
)

METHODS = ("mv", "wmv", "ds", "ds-gold", "onecoin")
METHOD_NAMES = {
    "mv": "majority vote",
    "wmv": "majority vote weighted by worker accuracy",
    "ds": "Dawid–Skene",
    "ds-gold": "gold-anchored Dawid–Skene",
    "onecoin": "one-coin Dawid–Skene (one accuracy per worker)",
}
# How many answers' worth of belief the majority-vote agreement carries when a worker's gold answers are added.
PRIOR_STRENGTH = 4.0


@dataclass(frozen=True)
class Aggregate:
    method: str
    result: Result
    worker_accuracy: np.ndarray  # float64 per worker: DS's estimate (sum_k prior_k * confusion[k, k]) or agreement
    worker_answers: np.ndarray  # int64 per worker
    gold_items: np.ndarray  # int64: the items whose answers were known (anchors for ds-gold, checks for the rest)
    gold_labels: np.ndarray


def _agreement(items: np.ndarray, workers: np.ndarray, labels: np.ndarray, reference: np.ndarray,
               n_workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Per worker: answers that match `reference` (-1 = no reference), and answers that could be compared."""
    known = reference[items] >= 0
    hits = np.bincount(workers[known], weights=labels[known] == reference[items[known]], minlength=n_workers)
    return hits, np.bincount(workers[known], minlength=n_workers).astype(np.float64)


def worker_accuracy_estimate(items: np.ndarray, workers: np.ndarray, labels: np.ndarray, *, n_items: int,
                             n_workers: int, n_classes: int, gold_items: np.ndarray, gold_labels: np.ndarray,
                             seed: int = 0) -> np.ndarray:
    """A worker's accuracy for weighted voting: agreement with the majority on non-gold items (Wawa's estimate),
    updated by their gold answers as a Beta prior of `PRIOR_STRENGTH` answers, so a little gold refines it and
    a lot of gold decides it. Workers with nothing to compare get chance accuracy (weight 0)."""
    reference = np.full(n_items, -1, dtype=np.int64)
    majority = majority_vote(items, workers, labels, n_items=n_items, n_workers=n_workers, n_classes=n_classes,
                             seed=seed)
    reference[:] = majority.labels
    reference[majority.ties] = -1  # a coin flip is no reference: it would make the weights depend on the seed
    reference[gold_items] = -1
    agree, compared = _agreement(items, workers, labels, reference, n_workers)
    prior = np.divide(agree, compared, out=np.full(n_workers, 1.0 / n_classes), where=compared > 0)
    truth = np.full(n_items, -1, dtype=np.int64)
    truth[gold_items] = gold_labels
    correct, seen = _agreement(items, workers, labels, truth, n_workers)
    return (correct + PRIOR_STRENGTH * prior) / (seen + PRIOR_STRENGTH)


def aggregate(method: str, items: np.ndarray, workers: np.ndarray, labels: np.ndarray, *, n_items: int,
              n_workers: int, n_classes: int, gold_items: np.ndarray | None = None,
              gold_labels: np.ndarray | None = None, seed: int = 0, max_iter: int = MAX_ITER, tol: float = TOL,
              posterior_tol: float = POSTERIOR_TOL, prior: Prior = DEFAULT_PRIOR) -> Aggregate:
    """Run `method` (one of METHODS). Gold anchors only `ds-gold`, weighs workers in `wmv`, and is otherwise
    returned so callers can score the method on it."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    gold_i = np.asarray(gold_items if gold_items is not None else [], dtype=np.int64)
    gold_l = np.asarray(gold_labels if gold_labels is not None else [], dtype=np.int64)
    if method == "ds-gold" and not gold_i.size:
        raise ValueError("ds-gold needs gold: items with known answers")
    shape = {"n_items": n_items, "n_workers": n_workers, "n_classes": n_classes}
    if method == "mv":
        result = majority_vote(items, workers, labels, seed=seed, **shape)
    elif method == "wmv":
        accuracy = worker_accuracy_estimate(items, workers, labels, gold_items=gold_i, gold_labels=gold_l,
                                            seed=seed, **shape)
        result = weighted_majority_vote(items, workers, labels, seed=seed,
                                        worker_weights=accuracy_weights(accuracy, n_classes), **shape)
    else:
        anchors = {"gold_items": gold_i, "gold_labels": gold_l} if method == "ds-gold" else {}
        result = dawid_skene(items, workers, labels, max_iter=max_iter, tol=tol, posterior_tol=posterior_tol,
                             prior=prior, one_coin=method == "onecoin", **anchors, **shape)
    items_a, workers_a = np.asarray(items, dtype=np.int64), np.asarray(workers, dtype=np.int64)
    answers = np.bincount(workers_a, minlength=n_workers)
    if result.confusion is not None and result.priors is not None:
        accuracy = np.einsum("k,wkk->w", result.priors, result.confusion)
    else:
        agree, compared = _agreement(items_a, workers_a, np.asarray(labels, dtype=np.int64),
                                     result.labels.astype(np.int64), n_workers)
        accuracy = np.divide(agree, compared, out=np.zeros(n_workers), where=compared > 0)
    return Aggregate(method, result, accuracy, answers, gold_i, gold_l)
