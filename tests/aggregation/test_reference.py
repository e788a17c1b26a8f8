"""Our aggregation methods against crowd-kit 1.4.2 (a test-only dependency) on the shared real datasets with gold.

Parametrized over the datasets present in the dataset directory (see `tests/aggregation/data.py`); every test
skips, naming CROWDMARKET_DATASETS, when there is no directory. crowd-kit runs inside the tests: its majority vote
takes milliseconds and its Dawid–Skene (n_iter=100, default tol) well under a second on these sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene, MajorityVote, OneCoinDawidSkene

from aggregation.engine import aggregate
from aggregation.methods import DEFAULT_PRIOR, Prior, dawid_skene, majority_vote
from tests.aggregation.data import EXPECTED, Loaded, dataset_names, load, sparse_draws

# crowd-kit 1.4.2 uses pandas keywords that pandas 3 deprecates; its warnings are not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:::crowdkit")
NAMES = dataset_names()
# How far our Dawid–Skene may fall below crowd-kit's on gold, in accuracy (0.5 percentage points).
DS_SLACK = 0.005


def frame(d: Loaded) -> pd.DataFrame:
    """The answers as crowd-kit reads them, with the original string ids and labels, in file order."""
    return pd.DataFrame({"worker": d.worker_names[d.workers], "task": d.task_names[d.items],
                         "label": d.label_names[d.labels]})


def ours_by_task(d: Loaded, labels: np.ndarray) -> pd.Series:
    return pd.Series(d.label_names[labels], index=d.task_names)


def gold_accuracy(d: Loaded, by_task: pd.Series) -> float:
    """Share of gold tasks whose label (a string, per task name) is the gold label."""
    predicted = by_task.reindex(d.task_names[d.gold_items]).to_numpy()
    return float(np.mean(predicted == d.label_names[d.gold_labels]))


@pytest.mark.parametrize("name", NAMES)
def test_majority_vote_matches_crowdkit(datasets: Path, name: str) -> None:
    """Same label as crowd-kit's MajorityVote on every task without a tie. On a tie crowd-kit takes the label met
    first in the input rows, we take a seeded random one: there both must be among the tied top labels."""
    d = load(name, datasets)
    ours = majority_vote(d.items, d.workers, d.labels, seed=0, **d.shape)
    theirs = MajorityVote().fit_predict(frame(d)).reindex(d.task_names)
    assert theirs.notna().all(), "crowd-kit left a task without a label"
    mine = ours_by_task(d, ours.labels)
    differ = (mine != theirs).to_numpy()
    untied_differ = d.task_names[differ & ~ours.ties]
    message = (f"{name}: MV accuracy on gold ours {gold_accuracy(d, mine):.4f} vs crowd-kit "
               f"{gold_accuracy(d, theirs):.4f}; {int(ours.ties.sum())} tied tasks")
    assert untied_differ.size == 0, f"{message}; untied tasks that differ: {untied_differ[:5].tolist()}"
    top = ours.posteriors == ours.posteriors.max(axis=1, keepdims=True)  # the tied top labels, per task
    codes = {label: code for code, label in enumerate(d.label_names)}
    theirs_codes = np.array([codes[label] for label in theirs.to_numpy()])
    rows = np.arange(d.n_items)
    assert top[rows, ours.labels].all(), message
    assert top[rows, theirs_codes].all(), f"{message}; crowd-kit chose a label outside the top votes"
    assert (top.sum(axis=1) > 1).tolist() == ours.ties.tolist(), message


@pytest.mark.parametrize("name", NAMES)
def test_dawid_skene_accuracy_close_to_crowdkit(datasets: Path, name: str) -> None:
    """Our Dawid–Skene (engine defaults: 100 iterations at most, converged when the objective per answer changes
    by less than 1e-6; the default prior) is at most 0.5 points below crowd-kit's DawidSkene(n_iter=100) on gold.
    crowd-kit stops when its objective changes by less than tol, even downwards (bluebirds: after 2 iterations),
    so ours may be better; it must not be worse."""
    d = load(name, datasets)
    ours = aggregate("ds", d.items, d.workers, d.labels, gold_items=d.gold_items, gold_labels=d.gold_labels,
                     **d.shape)
    theirs = DawidSkene(n_iter=100).fit_predict(frame(d))
    accuracy = gold_accuracy(d, ours_by_task(d, ours.result.labels))
    reference = gold_accuracy(d, theirs)
    assert accuracy >= reference - DS_SLACK, (
        f"{name}: DS accuracy on gold ours {accuracy:.4f} ({ours.result.iterations} iterations) vs crowd-kit "
        f"{reference:.4f}: more than {100 * DS_SLACK:.1f} points below")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("method", ["ds", "onecoin"])
def test_dawid_skene_converges_by_its_stopping_rule(datasets: Path, name: str, method: str) -> None:
    """On every dataset Dawid–Skene stops converged, well before max_iter, with the accuracy of a run five times
    as long (at most one task apart) and nearly all of its labels."""
    d = load(name, datasets)
    stopped = aggregate(method, d.items, d.workers, d.labels, **d.shape).result
    long = aggregate(method, d.items, d.workers, d.labels, max_iter=500, tol=0, posterior_tol=0, **d.shape).result
    assert stopped.stop_reason == "converged" and stopped.iterations < 100, stopped.iterations
    correct = [int((r.labels[d.gold_items] == d.gold_labels).sum()) for r in (stopped, long)]
    assert abs(correct[0] - correct[1]) <= 1, (name, correct)
    assert (stopped.labels != long.labels).mean() <= 0.01, name


def test_the_default_prior_against_a_flat_one(datasets: Path) -> None:
    """How the default Dirichlet prior was chosen (README, Aggregation): on the shared datasets it is as accurate
    as the flat prior of 0.01 (the old smoothing) on all answers, at most one task apart per dataset, and more
    accurate on seeded draws of 3 answers per task, where workers have few answers each: +0.9 points on average
    (benchmarks/ds_prior.py prints these figures), asserted here as at least +0.5."""
    names = dataset_names(datasets)
    if not set(EXPECTED) <= set(names):
        pytest.skip(f"needs every shared dataset ({', '.join(EXPECTED)})")
    flat, gains = Prior(0.01, 0.01, 0.01), []
    for name in EXPECTED:
        d = load(name, datasets)
        right = [int((aggregate("ds", d.items, d.workers, d.labels, prior=p, **d.shape).result.labels[d.gold_items]
                      == d.gold_labels).sum()) for p in (DEFAULT_PRIOR, flat)]
        assert right[0] >= right[1] - 1, (name, right)
        for keep in sparse_draws(d, 3, 10):
            accuracy = [(aggregate("ds", d.items[keep], d.workers[keep], d.labels[keep], prior=p, **d.shape)
                         .result.labels[d.gold_items] == d.gold_labels).mean() for p in (DEFAULT_PRIOR, flat)]
            gains.append(accuracy[0] - accuracy[1])
    assert np.mean(gains) >= 0.005, np.mean(gains)


@pytest.mark.parametrize("name", NAMES)
def test_one_coin_dawid_skene_accuracy_close_to_crowdkit(datasets: Path, name: str) -> None:
    """One-coin Dawid–Skene is at most 0.5 points below crowd-kit's OneCoinDawidSkene(n_iter=100) on gold."""
    d = load(name, datasets)
    ours = aggregate("onecoin", d.items, d.workers, d.labels, **d.shape)
    theirs = OneCoinDawidSkene(n_iter=100).fit_predict(frame(d))
    accuracy, reference = gold_accuracy(d, ours_by_task(d, ours.result.labels)), gold_accuracy(d, theirs)
    assert accuracy >= reference - DS_SLACK, f"{name}: one-coin ours {accuracy:.4f} vs crowd-kit {reference:.4f}"


@pytest.mark.parametrize("name", NAMES)
def test_dawid_skene_with_perfect_workers_equals_majority_vote(datasets: Path, name: str) -> None:
    """The real answer structure restricted to gold tasks, every answer replaced by the task's gold label: every
    task is unanimous, so majority vote is the gold label, and Dawid–Skene must agree on every task."""
    d = load(name, datasets)
    truth = np.full(d.n_items, -1)
    truth[d.gold_items] = d.gold_labels
    keep = truth[d.items] >= 0
    items, workers = d.items[keep], d.workers[keep]
    labels = truth[items].astype(np.int32)
    mv = majority_vote(items, workers, labels, **d.shape)
    ds = dawid_skene(items, workers, labels, **d.shape)
    assert not mv.ties.any()
    assert (mv.labels[d.gold_items] == d.gold_labels).all()
    differ = np.flatnonzero(ds.labels != mv.labels)
    assert differ.size == 0, f"{name}: DS differs from MV on tasks {d.task_names[differ][:5].tolist()}"


def test_dawid_skene_overrules_an_isolated_worker_like_crowdkit() -> None:
    """Why the perfect-worker property needs every worker to have seen every class (test_properties.py): worker
    0 answers tasks 0 and 1 with label 1, worker 1 answers only task 2, with label 0. Every answer is 'right', yet
    Dawid–Skene under a flat prior (the same small pseudo-count everywhere, as crowd-kit's clipping amounts to)
    labels task 2 as 1: worker 1 was never seen on a class-1 task, so a 0 from them is no evidence against class 1
    (that confusion row is unknown), and the prior (2 tasks of 3 are class 1) wins. This is the model, not our
    code: crowd-kit's DawidSkene gives the same labels. Our default prior puts a pseudo-count of 0.5 on every
    confusion row's diagonal against 0.01 elsewhere (a worker is assumed more often right than wrong until their
    answers say otherwise), so there the isolated worker's answer counts, and task 2 keeps its only label."""
    items, workers, labels = np.array([0, 1, 2]), np.array([0, 0, 1]), np.array([1, 1, 0])
    flat = dawid_skene(items, workers, labels, n_items=3, n_workers=2, n_classes=2, prior=Prior(0.01, 0.01, 0.01))
    mv = majority_vote(items, workers, labels, n_items=3, n_workers=2, n_classes=2)
    theirs = DawidSkene(n_iter=100).fit_predict(pd.DataFrame({"worker": workers, "task": items, "label": labels}))
    assert mv.labels.tolist() == [1, 1, 0]
    assert flat.labels.tolist() == theirs.reindex([0, 1, 2]).tolist() == [1, 1, 1]
    ours = dawid_skene(items, workers, labels, n_items=3, n_workers=2, n_classes=2)
    assert ours.labels.tolist() == [1, 1, 0]
