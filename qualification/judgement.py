"""A worker's accuracy judged on all the evidence at once: gold answers and agreement with the crowd. Pure numpy.

Gold alone is too thin to judge on: at a gold rate of 8% a worker meets five to nine gold answers in their first
hundred tasks, where a random clicker still gets 4 of 8 right. Every answer to an item that other workers answered
is evidence too, and the crowd model weighs it.

The model is the one-coin Dawid–Skene worker: a worker with accuracy `a` gives the true label with probability `a`
and each of the other K − 1 labels with probability (1 − a)/(K − 1). Then
- a gold answer is right with probability `a`;
- an answer with label l to an item the others answered has probability q_l·a + (1 − q_l)(1 − a)/(K − 1), where q
  is the crowd's posterior over the item's true label from the other workers' answers, each weighted by that
  worker's own estimated accuracy (`crowd_posterior`).

The prior on `a` is Beta(PRIOR_A, PRIOR_B), mean 0.8: most workers are honest and a new one starts in good standing.
The posterior is computed on a grid, so it is exact for the model, small samples included. The judgement is the
posterior probability that `a` is below the project's minimum: a flag at one level, the project's action at a
higher one, and a flag whose probability has fallen below CLEAR_LEVEL closes itself (the evidence has gone).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PRIOR_A, PRIOR_B = 4.0, 1.0
CLEAR_LEVEL = 0.5  # an open flag closes when the probability of being below the minimum falls under this
GRID = np.linspace(0.0005, 0.9995, 1000)
_LOG_A, _LOG_NOT_A = np.log(GRID), np.log1p(-GRID)
_LOG_PRIOR = (PRIOR_A - 1) * _LOG_A + (PRIOR_B - 1) * _LOG_NOT_A
CREDIBLE = 0.90  # the interval shown


class Decision(enum.StrEnum):
    NONE = "none"  # nothing to say, or too little evidence yet
    FLAG = "flag"  # probably below the minimum: for review
    ACT = "act"  # surely below the minimum: take the project's action
    CLEAR = "clear"  # probably not below: an open flag's evidence has gone


@dataclass(frozen=True)
class Judgement:
    """The posterior of a worker's accuracy and what it says to do."""

    mean: float
    low: float  # the CREDIBLE interval
    high: float
    p_below: float  # P(accuracy < minimum | all the evidence)
    p_below_gold: float  # the same from the gold answers alone
    gold_seen: int
    gold_correct: int
    compared: int  # answers compared with the crowd
    agreement: float | None  # the crowd's mean posterior of the worker's labels on those
    decision: Decision

    @property
    def answers(self) -> int:
        return self.gold_seen + self.compared


def crowd_q(items: np.ndarray, labels: np.ndarray, accuracies: np.ndarray, mine: np.ndarray,
            n_classes: int) -> np.ndarray:
    """For each of one worker's answers (the rows where `mine`), the crowd's posterior probability of the label they
    gave, from the other rows of the same item (`labels` coded in [0, n_classes), each other worker weighted by
    their `accuracies`): one-coin likelihoods under a uniform prior over the labels. Answers to items nobody else
    answered are left out. Accuracies are clamped to [1/K, 0.99]: a worker at chance says nothing, and nobody is
    taken as infallible."""
    k = max(n_classes, 2)
    items, labels, mine = np.asarray(items), np.asarray(labels, dtype=np.int64), np.asarray(mine, dtype=bool)
    keys, item_of = np.unique(items, return_inverse=True)
    item_of = item_of.reshape(-1)
    acc = np.clip(np.asarray(accuracies, dtype=float), 1.0 / k, 0.99)
    log_wrong = np.log((1 - acc) / (k - 1))
    others = ~mine
    scores = np.zeros((keys.size, k))
    np.add.at(scores, item_of[others], log_wrong[others][:, None])  # every label: "not theirs"
    np.add.at(scores, (item_of[others], labels[others]), np.log(acc[others]) - log_wrong[others])
    answered = np.bincount(item_of[others], minlength=keys.size) > 0
    scores -= scores.max(axis=1, keepdims=True)
    posterior = np.exp(scores)
    posterior /= posterior.sum(axis=1, keepdims=True)
    rows = mine & answered[item_of]
    return posterior[item_of[rows], labels[rows]]


def _posterior(log_likelihood: np.ndarray) -> np.ndarray:
    log_post = _LOG_PRIOR + log_likelihood
    log_post -= log_post.max()
    post = np.exp(log_post)
    return post / post.sum()


def _below(post: np.ndarray, minimum: float) -> float:
    return float(post[GRID < minimum].sum())


def judge(gold: Sequence[bool], crowd_q: Sequence[float], *, n_classes: int, minimum: float, flag_level: float,
          act_level: float, min_answers: int) -> Judgement:
    """Judge a worker on their gold outcomes and, for each answer compared with the crowd, the crowd's posterior
    probability of the label they gave (`crowd_q`). NONE while they have fewer than `min_answers` of both."""
    k = max(n_classes, 2)
    outcomes = np.asarray(gold, dtype=bool)
    right = int(outcomes.sum())
    wrong = outcomes.size - right
    gold_ll = right * _LOG_A + wrong * _LOG_NOT_A
    q = np.clip(np.asarray(crowd_q, dtype=float), 0.0, 1.0)
    # One row per compared answer: P(label | a) = q a + (1 - q)(1 - a)/(K - 1) = c + d a, for every a of the grid.
    c = (1 - q) / (k - 1)
    crowd_ll = np.log(c[:, None] + (q - c)[:, None] * GRID).sum(axis=0) if q.size else np.zeros_like(GRID)
    post = _posterior(gold_ll + crowd_ll)
    cdf = np.cumsum(post)
    tail = (1 - CREDIBLE) / 2
    mean = float((GRID * post).sum())
    p_below = _below(post, minimum)
    p_gold = _below(_posterior(gold_ll), minimum)
    if outcomes.size + q.size < min_answers:
        decision = Decision.NONE
    elif p_below >= act_level:
        decision = Decision.ACT
    elif p_below >= flag_level:
        decision = Decision.FLAG
    elif p_below < CLEAR_LEVEL:
        decision = Decision.CLEAR
    else:
        decision = Decision.NONE
    return Judgement(mean, float(GRID[np.searchsorted(cdf, tail)]), float(GRID[min(np.searchsorted(cdf, 1 - tail),
                                                                                 GRID.size - 1)]),
                     p_below, p_gold, outcomes.size, right, int(q.size), float(q.mean()) if q.size else None,
                     decision)
