"""The accuracy judgement on all the evidence (qualification/judgement.py): the model's arithmetic against closed
forms, and its flags on simulated crowds across seeds, at the issue's operating point (8% gold, 60 tasks)."""

from __future__ import annotations

import random
from decimal import Decimal

import numpy as np
import pytest
from scipy import stats

from qualification import gold as schedule
from qualification.judgement import PRIOR_A, PRIOR_B, Decision, crowd_q, judge

LEVELS = {"flag_level": 0.9, "act_level": 0.99, "min_answers": 10}


@pytest.mark.parametrize(("right", "wrong"), [(0, 0), (3, 1), (9, 1), (2, 8), (40, 3)])
def test_on_gold_alone_the_posterior_is_the_conjugate_beta(right, wrong):
    got = judge([True] * right + [False] * wrong, [], n_classes=3, minimum=0.8, **LEVELS)
    exact = stats.beta(PRIOR_A + right, PRIOR_B + wrong)
    assert got.p_below == pytest.approx(exact.cdf(0.8), abs=2e-3)
    assert got.p_below_gold == pytest.approx(got.p_below)
    assert got.mean == pytest.approx(exact.mean(), abs=2e-3)
    assert got.low == pytest.approx(exact.ppf(0.05), abs=3e-3) and got.high == pytest.approx(exact.ppf(0.95), abs=3e-3)
    assert (got.gold_seen, got.gold_correct, got.compared) == (right + wrong, right, 0)


def test_decisions_follow_the_levels_and_the_minimum_of_answers():
    assert judge([False] * 9, [], n_classes=3, minimum=0.9, **LEVELS).decision == Decision.NONE  # 9 < 10 answers
    assert judge([False] * 10, [], n_classes=3, minimum=0.9, **LEVELS).decision == Decision.ACT
    assert judge([True] * 30, [], n_classes=3, minimum=0.9, **LEVELS).decision == Decision.CLEAR
    flagged = judge([True] * 7 + [False] * 3, [], n_classes=3, minimum=0.9, **LEVELS)
    assert 0.9 <= flagged.p_below < 0.99 and flagged.decision == Decision.FLAG


def test_crowd_q_is_the_one_coin_posterior_of_the_others():
    # Item 1: two others say label 0 (accuracies 0.9, 0.6); the worker said 0. Item 2: one other says 1 (0.8); the
    # worker said 2. Item 3: only the worker: left out.
    items = np.array([1, 1, 1, 2, 2, 3])
    labels = np.array([0, 0, 0, 1, 2, 1])
    accuracy = np.array([0.9, 0.6, 0.5, 0.8, 0.5, 0.5])
    mine = np.array([False, False, True, False, True, True])

    def one(acc, label, k=3):
        return np.array([acc if y == label else (1 - acc) / (k - 1) for y in range(k)])

    first = one(0.9, 0) * one(0.6, 0)
    second = one(0.8, 1)
    assert crowd_q(items, labels, accuracy, mine, 3) == pytest.approx([first[0] / first.sum(),
                                                                       second[2] / second.sum()])
    # A worker at chance (or below) says nothing: the posterior stays uniform.
    assert crowd_q(np.array([1, 1]), np.array([0, 1]), np.array([0.2, 0.5]), np.array([False, True]), 3) \
        == pytest.approx([1 / 3])


def test_agreement_with_a_sure_crowd_moves_the_estimate():
    agreeing = judge([], [0.95] * 40, n_classes=3, minimum=0.6, **LEVELS)
    random_like = judge([], [0.95] * 13 + [0.025] * 27, n_classes=3, minimum=0.6, **LEVELS)
    assert agreeing.mean > 0.85 and agreeing.decision == Decision.CLEAR
    assert random_like.mean < 0.45 and random_like.decision == Decision.ACT
    assert random_like.p_below_gold < 0.5  # gold said nothing: agreement decided


LABELS = 3


def simulate(seed: int, *, tasks: int = 60, items_per_hit: int = 2, redundancy: int = 3, minimum: float = 0.6,
             honest: int = 16, bad: int = 6) -> tuple[float, float, int]:
    """A crowd worked breadth-first, in turns, on the engine's gold schedule (8%), judged after every task with the
    other workers' current estimates, as the service does (market/quality/scoring.py). (precision, recall) of the flags,
    and how many honest workers were flagged."""
    rng = random.Random(seed)
    key = schedule.schedule_key(f"seed {seed}")
    kinds = [("honest", rng.uniform(0.70, 0.95)) for _ in range(honest)]
    kinds += [("random", 0.0)] * (bad // 2) + [("same", 0.0)] * (bad - bad // 2)
    rng.shuffle(kinds)
    n = len(kinds)
    truth = [rng.randrange(LABELS) for _ in range(n * tasks * items_per_hit // redundancy + 100)]
    by_item: list[list[tuple[int, int, int]]] = [[] for _ in truth]  # (item, worker, label) per item
    levels: list[dict[int, None]] = [dict.fromkeys(range(len(truth)))] + [{} for _ in range(redundancy)]
    done: list[set[int]] = [set() for _ in range(n)]
    gold: list[list[bool]] = [[] for _ in range(n)]
    golds = [0] * n
    estimate = np.full(n, PRIOR_A / (PRIOR_A + PRIOR_B))
    flagged = [False] * n

    def answer(w: int, right: int) -> int:
        kind, accuracy = kinds[w]
        if kind == "same":
            return 0
        if kind == "random" or rng.random() >= accuracy:
            return rng.choice([v for v in range(LABELS) if kind == "random" or v != right])
        return right

    for task_no in range(tasks):
        for w in rng.sample(range(n), n):
            if schedule.is_gold_turn(key, project_id=1, worker_id=w, rate=Decimal("0.08"), tasks=task_no,
                                     golds=golds[w]):
                golds[w] += 1
                for _ in range(items_per_hit):
                    right = rng.randrange(LABELS)
                    gold[w].append(answer(w, right) == right)
            else:
                # Breadth-first: the items with the fewest answers first, in order, none the worker did.
                taken = []
                for f in range(redundancy):
                    taken += [(f, i) for i in levels[f] if i not in done[w]][:items_per_hit - len(taken)]
                for f, i in taken:
                    del levels[f][i]
                    levels[f + 1][i] = None
                    done[w].add(i)
                    by_item[i].append((i, w, answer(w, truth[i])))
            rows = np.array([a for i in done[w] for a in by_item[i]])
            q = crowd_q(rows[:, 0], rows[:, 2], estimate[rows[:, 1]], rows[:, 1] == w, LABELS) if rows.size else []
            verdict = judge(gold[w], q, n_classes=LABELS, minimum=minimum, **LEVELS)
            estimate[w] = verdict.mean
            flagged[w] = flagged[w] or verdict.decision in (Decision.FLAG, Decision.ACT)
    bad_ones = {w for w in range(n) if kinds[w][0] != "honest"}
    caught = {w for w in range(n) if flagged[w]}
    hits = len(caught & bad_ones)
    return hits / len(caught) if caught else 1.0, hits / len(bad_ones) if bad_ones else 1.0, len(caught - bad_ones)


@pytest.mark.parametrize("seed", range(10))
def test_flags_catch_bad_workers_with_little_gold_across_seeds(seed):
    """16 honest workers (0.70-0.95) and 6 bad ones (random, constant label), 8% gold, 60 tasks of 2 items each
    answered by 3 workers, minimum 0.60: precision and recall at least 0.9 in every run, on the accuracy judgement
    alone (the SAME_LABEL and FAST_ANSWERS patterns come on top of it in the service)."""
    precision, recall, _ = simulate(seed)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
