"""Aggregation runs over a project's answers: request, execute (as a job), read, export.

The database side of `aggregation.engine`: answers not excluded by a block become index arrays, the project's
live gold items become the known answers (anchors for ds-gold, a check for the other methods), and the run's
per-item labels and per-worker estimates are stored in bulk.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aggregation.engine import METHODS, aggregate
from aggregation.methods import DEFAULT_PRIOR, MAX_ITER, POSTERIOR_TOL, TOL, Prior
from aggregation.models import AggregatedLabel, AggregationRun, AggregationWorker, RunStatus
from base.errors import IdempotencyConflict, InvalidInput, NotFound
from base.paging import keyset_page
from base.spreadsheet import cell
from base.uow import savepoint
from market.catalogue.models import Answer, Item, Project
from workers.models import Account

DEFAULT_PARAMS = {"seed": 0, "max_iter": MAX_ITER, "tol": TOL, "posterior_tol": POSTERIOR_TOL,
                  "prior_correct": DEFAULT_PRIOR.correct, "prior_wrong": DEFAULT_PRIOR.wrong,
                  "prior_classes": DEFAULT_PRIOR.classes}
INSERT_CHUNK = 5_000
EXPORT_PAGE = 5_000
EXPORT_COLUMNS = ("external_id", "label", "confidence", "answers", "method")
log = logging.getLogger(__name__)


def classes_of(project: Project) -> list[Any]:
    """The label values a run can choose among, in the schema's order; only single-choice and rating schemas
    have a fixed set of them."""
    schema = project.label_schema
    if schema["type"] == "single_choice":
        return [c["key"] for c in schema["categories"]]
    if schema["type"] == "rating":
        return list(range(schema["min"], schema["max"] + 1))
    raise InvalidInput(f"Aggregation needs a single_choice or rating label schema; this project's is "
                       f"{schema['type']!r}.", errors={"method": ["not available for this label schema"]})


def request_run(session: Session, *, project: Project, account: Account, method: str, params: dict[str, Any],
                idempotency_key: str | None, now: dt.datetime) -> tuple[AggregationRun, bool]:
    """Record a queued run (the caller enqueues it). A repeated idempotency key returns the first run if it asked
    for the same run (the same method and parameters, defaults filled in), and is a Conflict otherwise."""
    if method not in METHODS:
        raise InvalidInput(f"Unknown method {method!r}.", errors={"method": [f"one of {', '.join(METHODS)}"]})
    classes_of(project)
    if idempotency_key is not None:
        earlier = session.scalar(select(AggregationRun).where(AggregationRun.project_id == project.id,
                                                              AggregationRun.idempotency_key == idempotency_key))
        if earlier is not None:
            if (earlier.method, earlier.params) != (method, {**DEFAULT_PARAMS, **params}):
                raise IdempotencyConflict()
            return earlier, False
    run = AggregationRun(project_id=project.id, requested_by_id=account.id, method=method,
                         params={**DEFAULT_PARAMS, **params}, idempotency_key=idempotency_key, created_at=now,
                         status=RunStatus.QUEUED)
    try:
        with savepoint(session):
            session.add(run)
            session.flush()
    except IntegrityError:  # the same key raced in from another request
        return request_run(session, project=project, account=account, method=method, params=params,
                           idempotency_key=idempotency_key, now=now)
    return run, True


@dataclass(frozen=True)
class Inputs:
    item_ids: np.ndarray  # int64, the run's item index -> item id
    worker_ids: np.ndarray  # int64, worker index -> account id
    items: np.ndarray  # int32 per answer
    workers: np.ndarray
    labels: np.ndarray
    gold_items: np.ndarray  # item indices with known answers
    gold_labels: np.ndarray


class RunError(ValueError):
    """Why a run could not produce labels, in words for the requester."""


def load_inputs(session: Session, project: Project, classes: list[Any]) -> Inputs:
    """The project's answers that count (none excluded by a block), and its live gold, as index arrays."""
    index = {value: i for i, value in enumerate(classes)}
    rows = session.execute(select(Answer.item_id, Answer.worker_id, Answer.value)
                           .where(Answer.project_id == project.id, Answer.excluded_at.is_(None))
                           .execution_options(yield_per=50_000))
    raw_items, raw_workers, labels = [], [], []
    for item_id, worker_id, value in rows:
        label = index.get(value)
        if label is None:  # an answer made before the schema lost this value: it cannot be counted
            continue
        raw_items.append(item_id)
        raw_workers.append(worker_id)
        labels.append(label)
    item_ids, items = np.unique(np.asarray(raw_items, dtype=np.int64), return_inverse=True)
    worker_ids, workers = np.unique(np.asarray(raw_workers, dtype=np.int64), return_inverse=True)
    gold = session.execute(select(Item.id, Item.gold_answer).where(
        Item.project_id == project.id, Item.is_gold, Item.gold_retired_at.is_(None))).all()
    known = [(item_id, index[value]) for item_id, value in gold if value in index]
    gold_ids = np.asarray([k[0] for k in known], dtype=np.int64)
    answered = np.isin(gold_ids, item_ids)  # gold nobody has answered yet says nothing about this run
    return Inputs(item_ids, worker_ids, items.astype(np.int32), workers.astype(np.int32),
                  np.asarray(labels, dtype=np.int32), np.searchsorted(item_ids, gold_ids[answered]),
                  np.asarray([k[1] for k in known], dtype=np.int64)[answered])


def _check_once(project: Project, inputs: Inputs) -> None:
    """Refuse to aggregate repeated (worker, item) answers rather than count them twice, so runs need no choice of
    which to keep. The service never stores them: an item sits in one HIT, a worker holds a HIT at most once among
    leased and answered assignments (a unique index), an assignment leaves those states only from `leased`, before
    it has answers, and it has one answer per item (a unique constraint); blocks exclude and restore answers,
    never add any."""
    pairs = inputs.workers.astype(np.int64) * max(inputs.item_ids.size, 1) + inputs.items
    repeats = pairs.size - np.unique(pairs).size
    if repeats:
        log.error("project %s holds %d repeated (worker, item) answers", project.id, repeats)
        raise RunError(f"{repeats} answer(s) repeat a worker's earlier answer to the same item, which the service "
                       "should never store; nothing was aggregated, and the operators' log has the details.")


def claim_run(session: Session, run_id: int, *, now: dt.datetime) -> bool:
    """Take a queued run for this job: whether it was queued (a run done, failed, or taken by another job is left
    alone). The job commits the claim before computing, so others see the run running."""
    return bool(session.execute(update(AggregationRun).where(AggregationRun.id == run_id,
                                                             AggregationRun.status == RunStatus.QUEUED)
                                .values(status=RunStatus.RUNNING, started_at=now)).rowcount)


def compute_run(session: Session, run_id: int, *, clock: Callable[[], dt.datetime]) -> None:
    """Aggregate a claimed run and store its labels and figures; raises (`RunError` and others) if it cannot."""
    run = session.get_one(AggregationRun, run_id)
    _execute(session, run, session.get_one(Project, run.project_id), clock)


def fail_run(session: Session, run_id: int, exc: Exception, *, now: dt.datetime) -> None:
    """Record why a run failed, for the requester to see (after the failed computation was rolled back)."""
    if isinstance(exc, RunError):
        error = str(exc)
    else:
        log.error("aggregation run %s failed", run_id, exc_info=exc)
        error = f"internal error ({type(exc).__name__}); the operators' log has the details"
    session.execute(update(AggregationRun).where(AggregationRun.id == run_id).values(
        status=RunStatus.FAILED, error=error, finished_at=now))


def _execute(session: Session, run: AggregationRun, project: Project, clock: Callable[[], dt.datetime]) -> None:
    classes = classes_of(project)
    started = time.perf_counter()
    inputs = load_inputs(session, project, classes)
    params = {**DEFAULT_PARAMS, **run.params}  # a run queued before a parameter existed takes its default
    if inputs.items.size == 0:
        raise RunError("The project has no answers to aggregate.")
    _check_once(project, inputs)
    if run.method == "ds-gold" and inputs.gold_items.size == 0:
        raise RunError("ds-gold needs gold items that workers have answered; the project has none yet.")
    result = aggregate(run.method, inputs.items, inputs.workers, inputs.labels, n_items=inputs.item_ids.size,
                       n_workers=inputs.worker_ids.size, n_classes=len(classes), gold_items=inputs.gold_items,
                       gold_labels=inputs.gold_labels, seed=int(params["seed"]), max_iter=int(params["max_iter"]),
                       tol=float(params["tol"]), posterior_tol=float(params["posterior_tol"]),
                       prior=Prior(float(params["prior_correct"]), float(params["prior_wrong"]),
                                   float(params["prior_classes"])))
    labels = result.result
    answers = np.bincount(inputs.items, minlength=inputs.item_ids.size)
    is_gold = np.zeros(inputs.item_ids.size, dtype=bool)
    is_gold[inputs.gold_items] = True
    ties = labels.ties if labels.ties is not None else np.zeros(inputs.item_ids.size, dtype=bool)
    rows = [{"run_id": run.id, "item_id": i, "label": lab, "confidence": c, "answers": n, "is_gold": g, "tie": t}
            for i, lab, c, n, g, t in zip(inputs.item_ids.tolist(), labels.labels.tolist(),
                                          labels.confidence.tolist(), answers.tolist(), is_gold.tolist(),
                                          ties.tolist(), strict=True)]
    for start in range(0, len(rows), INSERT_CHUNK):
        session.execute(insert(AggregatedLabel), rows[start:start + INSERT_CHUNK])
    confusion = labels.confusion
    workers = [{"run_id": run.id, "worker_id": w, "answers": n, "accuracy": a,
                "confusion": None if confusion is None else np.round(confusion[k], 6).tolist()}
               for k, (w, n, a) in enumerate(zip(inputs.worker_ids.tolist(), result.worker_answers.tolist(),
                                                 result.worker_accuracy.tolist(), strict=True))]
    for start in range(0, len(workers), INSERT_CHUNK):
        session.execute(insert(AggregationWorker), workers[start:start + INSERT_CHUNK])
    gold_hits = labels.labels[inputs.gold_items] == inputs.gold_labels
    run.status = RunStatus.SUCCEEDED
    run.classes = classes
    run.answers, run.items, run.workers = int(inputs.items.size), int(inputs.item_ids.size), len(workers)
    run.gold_items = int(inputs.gold_items.size)
    run.gold_accuracy = (float(gold_hits.mean()) if gold_hits.size and run.method != "ds-gold" else None)
    run.iterations = labels.iterations
    run.stop_reason, run.log_likelihood = labels.stop_reason, labels.log_likelihood
    run.priors = None if labels.priors is None else np.round(labels.priors, 6).tolist()
    run.seconds = round(time.perf_counter() - started, 3)
    run.finished_at = clock()
    session.flush()


def get_run(session: Session, *, project: Project, run_id: int) -> AggregationRun:
    run = session.scalar(select(AggregationRun).where(AggregationRun.id == run_id,
                                                      AggregationRun.project_id == project.id))
    if run is None:
        raise NotFound(f"Aggregation {run_id} not found.")
    return run


def list_runs(session: Session, *, project: Project, after: int | None, limit: int) -> list[AggregationRun]:
    """The project's runs, oldest first."""
    return keyset_page(session, AggregationRun, after=after, limit=limit,
                       equal=((AggregationRun.project_id, project.id),))


def latest_run(session: Session, project: Project, methods: tuple[str, ...] = METHODS) -> AggregationRun | None:
    """The project's newest successful run among `methods`."""
    return session.scalar(select(AggregationRun).where(
        AggregationRun.project_id == project.id, AggregationRun.status == RunStatus.SUCCEEDED,
        AggregationRun.method.in_(methods)).order_by(AggregationRun.id.desc()).limit(1))


def _finished(run: AggregationRun) -> None:
    if run.status != RunStatus.SUCCEEDED:
        raise InvalidInput(f"Aggregation {run.id} is {run.status.value}; results exist once it has succeeded.",
                           errors={"status": [run.status.value]})


def list_labels(session: Session, *, run: AggregationRun, after: int | None, limit: int,
                gold: bool | None = None) -> list[dict[str, Any]]:
    """A page of the run's labels by item id, with the item's external id (gold items only, or none, by `gold`)."""
    _finished(run)
    stmt = (select(AggregatedLabel, Item.external_id).join(Item, Item.id == AggregatedLabel.item_id)
            .where(AggregatedLabel.run_id == run.id).order_by(AggregatedLabel.item_id).limit(limit))
    if after is not None:
        stmt = stmt.where(AggregatedLabel.item_id > after)
    if gold is not None:
        stmt = stmt.where(AggregatedLabel.is_gold == gold)
    classes = run.classes or []
    return [{"item_id": row.item_id, "external_id": external_id, "label": classes[row.label],
             "confidence": row.confidence, "answers": row.answers, "is_gold": row.is_gold, "tie": row.tie}
            for row, external_id in session.execute(stmt)]


def list_workers(session: Session, *, run: AggregationRun, after: int | None, limit: int) -> list[dict[str, Any]]:
    """A page of the run's per-worker estimates by worker id."""
    _finished(run)
    stmt = (select(AggregationWorker).where(AggregationWorker.run_id == run.id)
            .order_by(AggregationWorker.worker_id).limit(limit))
    if after is not None:
        stmt = stmt.where(AggregationWorker.worker_id > after)
    return [{"worker_id": w.worker_id, "answers": w.answers, "accuracy": w.accuracy, "confusion": w.confusion}
            for w in session.scalars(stmt)]


def export_lines(session: Session, *, run: AggregationRun, fmt: str, gold: bool = False) -> Iterator[str]:
    """The run's labels as CSV (with a header) or JSON Lines, in keyset pages: the items to label, and the gold
    items only when `gold` (they are reported apart, not mixed in). CSV text cells are safe to open in a
    spreadsheet (market.spreadsheet)."""
    _finished(run)
    if fmt == "csv":
        yield ",".join(EXPORT_COLUMNS) + "\r\n"
    after = None
    while True:
        rows = list_labels(session, run=run, after=after, limit=EXPORT_PAGE, gold=gold)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180; with "\n" a lone CR in a cell went unquoted
        for row in rows:
            record = (row["external_id"], row["label"], round(row["confidence"], 6), row["answers"], run.method)
            if fmt == "csv":
                writer.writerow((cell(record[0]), cell(record[1]), *record[2:]))
            else:
                buf.write(json.dumps(dict(zip(EXPORT_COLUMNS, record, strict=True)), separators=(",", ":")) + "\n")
        yield buf.getvalue()
        if len(rows) < EXPORT_PAGE:
            return
        after = rows[-1]["item_id"]
