"""A project's quality report: agreement, per-worker scores, the error taxonomy of gold misses, coverage,
guideline versions, the label distribution, and (in the download) the provenance of every label.

Everything is computed from the answers that count (none excluded by a block) when the report is asked for;
the Dawid–Skene figures come from the project's latest successful Dawid–Skene run.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from aggregation.agreement import category_counts, fleiss_kappa, krippendorff_alpha
from aggregation.models import AggregatedLabel, AggregationRun, AggregationWorker
from aggregation.service import Inputs, classes_of, latest_run, load_inputs
from market.catalogue.models import Answer, Batch, GuidelineVersion, Item, Project
from qualification.accuracy import agreement_with_majority, wilson_interval
from workers.models import WorkerStats

PROVENANCE_PAGE = 2_000
SUSPECTS_SHOWN = 100


def _number(x: float) -> float | None:
    """JSON has no NaN: an undefined coefficient is null."""
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def _agreement(inputs: Inputs, classes: list[Any], raters: int) -> dict[str, Any]:
    """Chance-corrected agreement on the items to label (gold excluded): Krippendorff's alpha over every answer,
    and Fleiss' kappa over the items that have exactly the project's number of answers per item."""
    real = ~np.isin(inputs.items, inputs.gold_items)
    items, labels = inputs.items[real], inputs.labels[real]
    n_items, k = max(inputs.item_ids.size, 1), len(classes)
    alpha = krippendorff_alpha(items, labels, n_items=n_items, n_classes=k)
    counts = category_counts(items, labels, n_items=n_items, n_classes=k)
    full = counts[counts.sum(axis=1) == raters]
    fleiss = fleiss_kappa(full) if raters >= 2 and len(full) >= 2 else None
    return {
        "krippendorff_alpha": _number(alpha.alpha), "units": alpha.units, "pairable": alpha.pairable,
        "fleiss_kappa": _number(fleiss.kappa) if fleiss else None, "fleiss_items": len(full) if fleiss else 0,
        "fleiss_raters": raters,
        "per_category": [{"label": c, "alpha": _number(alpha.per_category[i]),
                          "fleiss_kappa": _number(fleiss.per_category[i]) if fleiss else None}
                         for i, c in enumerate(classes)],
    }


def _gold_answers(session: Session, project: Project) -> list[tuple[int, Any, Any]]:
    return list(session.execute(
        select(Answer.worker_id, Answer.value, Item.gold_answer).join(Item, Item.id == Answer.item_id)
        .where(Answer.project_id == project.id, Answer.excluded_at.is_(None), Item.is_gold,
               Item.gold_retired_at.is_(None))))


def _gold_errors(rows: list[tuple[int, Any, Any]], classes: list[Any]) -> dict[str, Any]:
    """The confusion matrix of gold answers (known answer x given answer) and its off-diagonal cells, most
    frequent first: which categories workers mistake for which."""
    index = {c: i for i, c in enumerate(classes)}
    known = np.array([index.get(g, -1) for _, _, g in rows], dtype=np.int64)
    given = np.array([index.get(v, -1) for _, v, _ in rows], dtype=np.int64)
    ok = (known >= 0) & (given >= 0)
    k = len(classes)
    matrix = np.bincount(known[ok] * k + given[ok], minlength=k * k).reshape(k, k)
    misses = [{"known": classes[a], "given": classes[b], "count": int(matrix[a, b])}
              for a, b in zip(*np.nonzero(matrix * (1 - np.eye(k, dtype=np.int64))), strict=True)]
    misses.sort(key=lambda m: -m["count"])
    return {"labels": classes, "matrix": matrix.tolist(), "answers": int(ok.sum()),
            "correct": int(np.trace(matrix)), "misses": misses}


def _gold_suspects(session: Session, inputs: Inputs, classes: list[Any]) -> list[dict[str, Any]]:
    """Gold items where a strict majority of at least 3 answers chose one other label: more often wrong gold than
    a crowd-wide mistake, and every worker who "missed" them was scored down. Least supported first."""
    if not inputs.gold_items.size:
        return []
    counts = category_counts(inputs.items, inputs.labels, n_items=inputs.item_ids.size, n_classes=len(classes))
    rows = counts[inputs.gold_items]
    total = rows.sum(axis=1)
    top = rows.argmax(axis=1)
    known = rows[np.arange(len(rows)), inputs.gold_labels]
    suspect = np.flatnonzero((total >= 3) & (top != inputs.gold_labels) & (2 * rows.max(axis=1) > total))
    suspect = suspect[np.argsort(known[suspect] / total[suspect], kind="stable")][:SUSPECTS_SHOWN]
    ids = inputs.item_ids[inputs.gold_items[suspect]].tolist()
    names = dict(session.execute(select(Item.id, Item.external_id).where(Item.id.in_(ids))).all()) if ids else {}
    return [{"item_id": i, "external_id": names.get(i), "known": classes[int(inputs.gold_labels[k])],
             "crowd": classes[int(top[k])], "answers": int(total[k]), "crowd_share": _number(rows[k].max() / total[k]),
             "known_share": _number(known[k] / total[k])} for i, k in zip(ids, suspect.tolist(), strict=True)]


def _workers(session: Session, project: Project, inputs: Inputs, classes: list[Any],
             gold_rows: list[tuple[int, Any, Any]], ds_run: AggregationRun | None) -> list[dict[str, Any]]:
    n_workers = inputs.worker_ids.size
    answers = np.bincount(inputs.workers, minlength=n_workers)
    agreed, counted = agreement_with_majority(inputs.items, inputs.workers, inputs.labels, n_workers=n_workers,
                                              n_labels=len(classes))
    gold: dict[int, list[int]] = {}
    for worker_id, value, known in gold_rows:
        seen = gold.setdefault(worker_id, [0, 0])
        seen[0] += 1
        seen[1] += value == known
    ds = {}
    if ds_run is not None:
        ds = dict(session.execute(select(AggregationWorker.worker_id, AggregationWorker.accuracy)
                                  .where(AggregationWorker.run_id == ds_run.id)).all())
    stats = {s.worker_id: s for s in session.scalars(select(WorkerStats).where(WorkerStats.project_id == project.id))}
    rows = []
    for k, worker_id in enumerate(inputs.worker_ids.tolist()):
        seen, correct = gold.get(worker_id, (0, 0))
        low, high = wilson_interval(correct, seen)
        s = stats.get(worker_id)
        rows.append({
            "worker_id": worker_id, "answers": int(answers[k]), "gold_seen": seen, "gold_correct": correct,
            "gold_accuracy": _number(correct / seen) if seen else None,
            "gold_interval": [_number(low), _number(high)] if seen else None,
            "ds_accuracy": _number(ds[worker_id]) if worker_id in ds else None,
            "agreement": _number(agreed[k] / counted[k]) if counted[k] else None,
            "agreement_counted": int(counted[k]),
            "median_ms": s.median_ms if s else None, "fast_answers": s.fast_answers if s else 0,
        })
    return rows


def _coverage(session: Session, project: Project) -> list[dict[str, Any]]:
    """Per batch: items, and those still below the batch's redundancy (answers that count)."""
    counts = (select(Answer.item_id, func.count().label("n")).where(Answer.project_id == project.id,
                                                                   Answer.excluded_at.is_(None))
              .group_by(Answer.item_id).subquery())
    have = func.coalesce(counts.c.n, 0)
    below = case((have < Batch.assignments_per_item, 1), else_=0)
    missing = case((have < Batch.assignments_per_item, Batch.assignments_per_item - have), else_=0)
    stmt = (select(Batch.id, Batch.name, Batch.assignments_per_item, func.count(Item.id), func.sum(below),
                   func.sum(missing))
            .join(Item, Item.batch_id == Batch.id).outerjoin(counts, counts.c.item_id == Item.id)
            .where(Batch.project_id == project.id).group_by(Batch.id, Batch.name, Batch.assignments_per_item)
            .order_by(Batch.id))
    return [{"batch_id": b, "name": name, "assignments_per_item": r, "items": int(n), "items_below": int(lo or 0),
             "answers_missing": int(m or 0)} for b, name, r, n, lo, m in session.execute(stmt)]


def _guidelines(session: Session, project: Project) -> list[dict[str, Any]]:
    stmt = (select(Answer.guideline_version, func.count(), func.count(func.distinct(Answer.worker_id)),
                   GuidelineVersion.created_at)
            .outerjoin(GuidelineVersion, and_(GuidelineVersion.project_id == project.id,
                                              GuidelineVersion.version == Answer.guideline_version))
            .where(Answer.project_id == project.id, Answer.excluded_at.is_(None))
            .group_by(Answer.guideline_version, GuidelineVersion.created_at).order_by(Answer.guideline_version))
    return [{"version": v, "answers": n, "workers": w, "created_at": created.isoformat() if created else None,
             "current": v == project.guideline_version} for v, n, w, created in session.execute(stmt)]


def _distribution(session: Session, inputs: Inputs, classes: list[Any],
                  run: AggregationRun | None) -> list[dict[str, Any]]:
    given = np.bincount(inputs.labels, minlength=len(classes))
    chosen = np.zeros(len(classes), dtype=np.int64)
    if run is not None and run.classes == classes:  # the run's label indices mean the schema's classes
        for label, n in session.execute(select(AggregatedLabel.label, func.count())
                                        .where(AggregatedLabel.run_id == run.id, AggregatedLabel.label >= 0,
                                               ~AggregatedLabel.is_gold)
                                        .group_by(AggregatedLabel.label)):
            chosen[label] = n
    total = max(int(given.sum()), 1)
    return [{"label": c, "answers": int(given[i]), "share": _number(given[i] / total),
             "aggregated": int(chosen[i]) if run is not None else None} for i, c in enumerate(classes)]


def _run_summary(run: AggregationRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"id": run.id, "method": run.method, "finished_at": run.finished_at.isoformat(),
            "items": run.items, "gold_items": run.gold_items, "gold_accuracy": run.gold_accuracy}


def build(session: Session, *, project: Project, run: AggregationRun | None, now: dt.datetime) -> dict[str, Any]:
    """The report as one JSON-ready document. `run` gives the aggregated labels (None: the latest run)."""
    classes = classes_of(project)
    run = run or latest_run(session, project)
    ds_run = run if run is not None and run.method in ("ds", "ds-gold") else latest_run(session, project,
                                                                                         ("ds", "ds-gold"))
    inputs = load_inputs(session, project, classes)
    gold_rows = _gold_answers(session, project)
    excluded = session.scalar(select(func.count()).select_from(Answer).where(Answer.project_id == project.id,
                                                                              Answer.excluded_at.is_not(None)))
    items = session.scalar(select(func.count()).select_from(Item).where(Item.project_id == project.id))
    return {
        "project": {"id": project.id, "title": project.title, "label_type": project.label_schema["type"],
                    "classes": classes, "assignments_per_item": project.assignments_per_item,
                    "guideline_version": project.guideline_version},
        "generated_at": now.isoformat(),
        "aggregation": _run_summary(run),
        "ds_aggregation": _run_summary(ds_run),
        "totals": {"answers": int(inputs.items.size), "answers_excluded": excluded, "items": items,
                   "items_answered": int(inputs.item_ids.size), "gold_items_answered": int(inputs.gold_items.size),
                   "workers": int(inputs.worker_ids.size)},
        "agreement": _agreement(inputs, classes, project.assignments_per_item),
        "workers": _workers(session, project, inputs, classes, gold_rows, ds_run),
        "gold_errors": _gold_errors(gold_rows, classes),
        "gold_suspects": _gold_suspects(session, inputs, classes),
        "coverage": _coverage(session, project),
        "guidelines": _guidelines(session, project),
        "label_distribution": _distribution(session, inputs, classes, run),
    }


def provenance(session: Session, *, project: Project, run: AggregationRun | None) -> Iterator[dict[str, Any]]:
    """Every answered item with its label from `run` and each answer's worker, value, time and guideline
    version, in pages of items."""
    classes = (run.classes or []) if run is not None else []
    after = 0
    while True:
        items = list(session.execute(
            select(Item.id, Item.external_id, Item.is_gold).where(Item.project_id == project.id, Item.id > after)
            .order_by(Item.id).limit(PROVENANCE_PAGE)))
        if not items:
            return
        lo, hi = items[0].id, items[-1].id
        answers: dict[int, list[dict[str, Any]]] = {}
        for a in session.execute(
                select(Answer.item_id, Answer.worker_id, Answer.value, Answer.submitted_at, Answer.guideline_version,
                       Answer.duration_ms)
                .where(Answer.project_id == project.id, Answer.excluded_at.is_(None), Answer.item_id.between(lo, hi))
                .order_by(Answer.item_id, Answer.id)):
            answers.setdefault(a.item_id, []).append({
                "worker_id": a.worker_id, "value": a.value, "submitted_at": a.submitted_at.isoformat(),
                "guideline_version": a.guideline_version, "duration_ms": a.duration_ms})
        labels = {}
        if run is not None:
            labels = {r.item_id: r for r in session.scalars(select(AggregatedLabel).where(
                AggregatedLabel.run_id == run.id, AggregatedLabel.item_id.between(lo, hi)))}
        for item in items:
            if item.id not in answers:
                continue
            label = labels.get(item.id)
            yield {"item_id": item.id, "external_id": item.external_id, "is_gold": item.is_gold,
                   "label": classes[label.label] if label is not None and label.label >= 0 else None,
                   "confidence": label.confidence if label is not None else None, "answers": answers[item.id]}
        after = hi


def download(session: Session, *, project: Project, run: AggregationRun | None, now: dt.datetime) -> Iterator[str]:
    """The report with the provenance of every label, as one streamed JSON document."""
    run = run or latest_run(session, project)
    report = build(session, project=project, run=run, now=now)
    yield json.dumps(report, separators=(",", ":"))[:-1] + ',"labels":['
    for n, record in enumerate(provenance(session, project=project, run=run)):
        yield ("," if n else "") + json.dumps(record, separators=(",", ":"))
    yield "]}"
