"""Worker accuracy from gold answers and from agreement with other workers. Pure functions: no database, no Flask.

Gold answers give an accuracy with a confidence interval, so a worker is acted on only when the evidence is strong;
agreement with the majority of the other workers gives a signal on items without gold.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for `correct` successes out of `n`, clamped to [0, 1]; (0.0, 1.0) when n == 0.

    Wilson rather than the normal approximation: it stays inside [0, 1] and is not degenerate at 0/n or n/n, which is
    exactly where a few golds leave a new worker.
    """
    if n < 0 or correct < 0 or correct > n:
        raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # At 0/n and n/n the bound is exactly 0 or 1; set it so that rounding cannot put it a hair inside.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Accuracy:
    """A worker's record on gold and on time, as `summarize` computes it."""

    gold_seen: int
    gold_correct: int
    accuracy: float | None  # None when gold_seen == 0
    wilson_low: float
    wilson_high: float
    window: int
    rolling_seen: int
    rolling_accuracy: float | None  # over the last `window` golds; None when there are none
    median_ms: int | None  # median_low of the task durations; None when there are no tasks
    fast_answers: int  # tasks faster than fast_fraction x the reference median
    tasks: int  # number of task durations given


def summarize(
    outcomes: Sequence[bool],
    durations_ms: Sequence[int],
    *,
    reference_median_ms: int | None,
    fast_fraction: float,
    window: int = 20,
) -> Accuracy:
    """Summarize a worker's gold results (oldest first) and task durations (any order).

    The rolling accuracy catches a worker who started well and then slipped, which the lifetime figure hides. A task
    is "too fast" when it took less than fast_fraction x reference_median_ms (the median of all workers on the same
    kind of task): answers faster than reading allows are a spam signal even without gold. With no reference there is
    nothing to compare to, so no answer is counted as fast. The median is median_low, so it is one of the durations
    and stays an int.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if not 0 <= fast_fraction <= 1:
        raise ValueError(f"fast_fraction must be in [0, 1], got {fast_fraction}")
    results = [bool(outcome) for outcome in outcomes]
    seen, correct = len(results), sum(results)
    low, high = wilson_interval(correct, seen)
    recent = results[-window:]
    durations = [int(duration) for duration in durations_ms]
    if reference_median_ms is None:
        fast = 0
    else:
        threshold = fast_fraction * reference_median_ms
        fast = sum(1 for duration in durations if duration < threshold)
    return Accuracy(
        gold_seen=seen,
        gold_correct=correct,
        accuracy=correct / seen if seen else None,
        wilson_low=low,
        wilson_high=high,
        window=window,
        rolling_seen=len(recent),
        rolling_accuracy=sum(recent) / len(recent) if recent else None,
        median_ms=statistics.median_low(durations) if durations else None,
        fast_answers=fast,
        tasks=len(durations),
    )


class Decision(enum.StrEnum):
    """What the gold record says to do about a worker."""

    NONE = "none"
    FLAG = "flag"
    ACT = "act"


def z_for(confidence: float) -> float:
    """The normal quantile of a two-sided interval at `confidence` (0.95 -> 1.96)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return statistics.NormalDist().inv_cdf((1 + confidence) / 2)


def judge(acc: Accuracy, *, min_accuracy: float, min_golds: int, act_confidence: float = 0.95) -> Decision:
    """Decide on a worker's gold record.

    NONE until the worker has seen min_golds golds: a couple of unlucky misses must not cost a new worker anything.
    ACT when even the upper Wilson bound (of an interval at act_confidence) is below min_accuracy: the evidence
    says the worker is surely below it. ACT means "take the project's configured action" (flag only, or
    auto-block); the caller decides which. A record is judged again after every gold answer, so each look risks a
    wrong verdict: an action meant to be rare for honest workers wants a confidence above the 95% shown.
    FLAG when only the point estimate is below: worth a requester's look, not an automatic penalty.
    """
    if acc.gold_seen < min_golds or acc.accuracy is None:
        return Decision.NONE
    upper = acc.wilson_high if act_confidence == 0.95 else wilson_interval(
        acc.gold_correct, acc.gold_seen, z_for(act_confidence))[1]
    if upper < min_accuracy:
        return Decision.ACT
    if acc.accuracy < min_accuracy:
        return Decision.FLAG
    return Decision.NONE


def _index_array(name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def agreement_with_majority(
    item_idx: np.ndarray,
    worker_idx: np.ndarray,
    labels: np.ndarray,
    *,
    n_workers: int,
    n_labels: int,
    min_others: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Per worker, (agreed, counted): how many answers matched the other workers' majority, out of how many counted.

    One row per answer: item index, worker index in [0, n_workers), label index in [0, n_labels). Each answer is
    compared with the strict plurality label of the OTHER workers' answers to the same item (all of the worker's own
    answers to that item are left out, so nobody agrees with themselves). An answer counts only when its item has at
    least `min_others` answers from other workers and their top label is not tied: a tie or a thin item says nothing
    about the worker. Vectorised, so it scales to a whole project's answers.
    """
    items = _index_array("item_idx", item_idx)
    workers = _index_array("worker_idx", worker_idx)
    answers = _index_array("labels", labels)
    if not len(items) == len(workers) == len(answers):
        lengths = (len(items), len(workers), len(answers))
        raise ValueError(f"item_idx, worker_idx and labels differ in length: {lengths}")
    if n_workers < 0 or n_labels < 1 or min_others < 0:
        got = f"n_workers={n_workers}, n_labels={n_labels}, min_others={min_others}"
        raise ValueError(f"need n_workers >= 0, n_labels >= 1, min_others >= 0; got {got}")
    if items.size and items.min() < 0:
        raise ValueError("item_idx must be non-negative")
    if workers.size and (workers.min() < 0 or workers.max() >= n_workers):
        raise ValueError(f"worker_idx must be in [0, {n_workers})")
    if answers.size and (answers.min() < 0 or answers.max() >= n_labels):
        raise ValueError(f"labels must be in [0, {n_labels})")
    if not items.size:
        return np.zeros(n_workers, np.int64), np.zeros(n_workers, np.int64)

    # Label counts per item, and per (item, worker) pair so that a worker's own answers can be taken out.
    item_keys, item_of = np.unique(items, return_inverse=True)
    item_of = item_of.reshape(-1)
    item_counts = np.bincount(item_of * n_labels + answers, minlength=len(item_keys) * n_labels)
    item_counts = item_counts.reshape(len(item_keys), n_labels)
    pair_keys, pair_of = np.unique(item_of * n_workers + workers, return_inverse=True)
    pair_of = pair_of.reshape(-1)
    pair_counts = np.bincount(pair_of * n_labels + answers, minlength=len(pair_keys) * n_labels)
    pair_counts = pair_counts.reshape(len(pair_keys), n_labels)

    others = item_counts[item_of] - pair_counts[pair_of]  # one row per answer: the other workers' label counts
    majority = others.argmax(axis=1)
    top = others[np.arange(len(others)), majority]
    second = np.partition(others, -2, axis=1)[:, -2] if n_labels > 1 else np.zeros_like(top)
    counted = (others.sum(axis=1) >= min_others) & (top > second)
    agreed = counted & (majority == answers)
    return (
        np.bincount(workers[agreed], minlength=n_workers).astype(np.int64),
        np.bincount(workers[counted], minlength=n_workers).astype(np.int64),
    )
