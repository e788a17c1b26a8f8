"""Worker quality from their gold answers, and the project's rules acting on it. No flask here.

After each scored gold task the worker's figures in the project are recomputed from their answers (never
incremented: a lost update is mended by the next one, a re-scored gold item is picked up at once) and the
project's thresholds are applied: below the minimum accuracy, a GOLD_BELOW_THRESHOLD flag for ops; when even the
Wilson upper bound is below it, the project's action (flag only, or block from the project at once). Tasks done
in under a fraction of the project's median time raise FAST_ANSWERS when they are most of a worker's tasks.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from market.labels import same_answer
from market.models import Answer, Assignment, Item, Project, QualityAction, WorkerStats
from market.quality import block_and_apply
from market.work import DONE
from qualification.accuracy import Accuracy, Decision, agreement_with_majority, judge, summarize, wilson_interval
from workers import flags
from workers.models import FlagReason, FlagState, WorkerFlag

# How much history a recomputation reads: enough for stable medians and agreement, bounded per gold answer.
RECENT_TASKS = 1000
RECENT_AGREEMENT = 200
MIN_OTHERS = 2  # other answers an item needs before agreement with its majority is measured
FAST_SHARE = 0.5  # FAST_ANSWERS when more than this share of a worker's tasks (at least MIN_FAST_TASKS) are too fast
MIN_FAST_TASKS = 10


@dataclass(frozen=True)
class Record:
    """A worker's quality in one project: the stored counts and what they mean."""

    project_id: int | None  # None: overall, summed over projects
    worker_id: int
    gold_seen: int
    gold_correct: int
    accuracy: float | None
    wilson_low: float
    wilson_high: float
    rolling_seen: int
    rolling_accuracy: float | None
    tasks: int
    median_ms: int | None
    fast_answers: int
    agreement_counted: int
    agreement: float | None


def as_record(stats: WorkerStats | None, project_id: int | None, worker_id: int) -> Record:
    seen, correct = (stats.gold_seen, stats.gold_correct) if stats else (0, 0)
    low, high = wilson_interval(correct, seen)
    rolling_seen, rolling_correct = (stats.rolling_seen, stats.rolling_correct) if stats else (0, 0)
    counted, agreed = (stats.agreement_counted, stats.agreement_agreed) if stats else (0, 0)
    return Record(project_id, worker_id, seen, correct, correct / seen if seen else None, low, high, rolling_seen,
                  rolling_correct / rolling_seen if rolling_seen else None, stats.tasks if stats else 0,
                  stats.median_ms if stats else None, stats.fast_answers if stats else 0, counted,
                  agreed / counted if counted else None)


def project_records(session: Session, project_id: int, *, after: int | None, limit: int) -> list[Record]:
    """Every worker's record in the project, by worker id (keyset paged)."""
    stmt = select(WorkerStats).where(WorkerStats.project_id == project_id).order_by(WorkerStats.worker_id)
    if after is not None:
        stmt = stmt.where(WorkerStats.worker_id > after)
    return [as_record(r, project_id, r.worker_id) for r in session.scalars(stmt.limit(limit))]


def worker_records(session: Session, worker_id: int, *, project_ids: list[int] | None = None) -> list[Record]:
    """The worker's record per project (those given, or all), then overall: counts summed, rates recomputed
    (the overall median is the median of the per-project medians; the rolling window is per project)."""
    stmt = select(WorkerStats).where(WorkerStats.worker_id == worker_id).order_by(WorkerStats.project_id)
    if project_ids is not None:
        stmt = stmt.where(WorkerStats.project_id.in_(project_ids))
    rows = list(session.scalars(stmt))
    total = WorkerStats(worker_id=worker_id, gold_seen=sum(r.gold_seen for r in rows),
                        gold_correct=sum(r.gold_correct for r in rows), rolling_seen=sum(r.rolling_seen for r in rows),
                        rolling_correct=sum(r.rolling_correct for r in rows), tasks=sum(r.tasks for r in rows),
                        median_ms=statistics.median_low(m) if (m := [r.median_ms for r in rows if r.median_ms])
                        else None, fast_answers=sum(r.fast_answers for r in rows),
                        agreement_counted=sum(r.agreement_counted for r in rows),
                        agreement_agreed=sum(r.agreement_agreed for r in rows))
    return [*(as_record(r, r.project_id, worker_id) for r in rows), as_record(total, None, worker_id)]


def _durations(session: Session, *where: Any) -> list[int]:
    return list(session.scalars(select(Assignment.duration_ms).where(
        *where, Assignment.status.in_(DONE), Assignment.duration_ms.is_not(None))
        .order_by(Assignment.id.desc()).limit(RECENT_TASKS)))


def _label_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _agreement(session: Session, worker_id: int, project_id: int) -> tuple[int, int]:
    """(agreed, counted): the worker's recent answers on ordinary items against the other workers' majority."""
    items = select(Answer.item_id).join(Item, Item.id == Answer.item_id).where(
        Answer.worker_id == worker_id, Answer.project_id == project_id, Item.is_gold.is_(False),
        Answer.excluded_at.is_(None)).order_by(Answer.id.desc()).limit(RECENT_AGREEMENT).subquery()
    rows = session.execute(select(Answer.item_id, Answer.worker_id, Answer.value).where(
        Answer.item_id.in_(select(items.c.item_id)), Answer.excluded_at.is_(None))).all()
    if not rows:
        return 0, 0
    labels: dict[str, int] = {}
    workers = {worker_id: 0}
    item_idx = np.array([r.item_id for r in rows], dtype=np.int64)
    worker_idx = np.array([workers.setdefault(r.worker_id, len(workers)) for r in rows], dtype=np.int64)
    label_idx = np.array([labels.setdefault(_label_key(r.value), len(labels)) for r in rows], dtype=np.int64)
    agreed, counted = agreement_with_majority(item_idx, worker_idx, label_idx, n_workers=len(workers),
                                              n_labels=len(labels), min_others=MIN_OTHERS)
    return int(agreed[0]), int(counted[0])


def recompute(session: Session, *, worker_id: int, project: Project, now: dt.datetime) -> Accuracy:
    """Recompute and store the worker's figures in the project (flushes; the caller commits)."""
    outcomes = list(session.scalars(select(Answer.gold_correct).where(
        Answer.worker_id == worker_id, Answer.project_id == project.id, Answer.gold_correct.is_not(None))
        .order_by(Answer.id)))
    mine = _durations(session, Assignment.worker_id == worker_id, Assignment.project_id == project.id)
    # The project's median time: the median of the other workers' medians (kept in worker_stats: one row per
    # worker read, not every assignment; a prolific worker weighs as one; nobody is measured against themselves).
    medians = list(session.scalars(select(WorkerStats.median_ms).where(
        WorkerStats.project_id == project.id, WorkerStats.worker_id != worker_id, WorkerStats.median_ms.is_not(None))))
    acc = summarize(outcomes, mine, reference_median_ms=statistics.median_low(medians) if medians else None,
                    fast_fraction=float(project.fast_answer_fraction), window=project.accuracy_window)
    agreed, counted = _agreement(session, worker_id, project.id)
    stats = session.get(WorkerStats, (worker_id, project.id))
    if stats is None:
        stats = WorkerStats(worker_id=worker_id, project_id=project.id)
        session.add(stats)
    stats.gold_seen, stats.gold_correct = acc.gold_seen, acc.gold_correct
    stats.rolling_seen, stats.rolling_correct = acc.rolling_seen, sum(outcomes[-acc.window:])
    stats.tasks, stats.median_ms, stats.fast_answers = acc.tasks, acc.median_ms, acc.fast_answers
    stats.agreement_counted, stats.agreement_agreed = counted, agreed
    stats.updated_at = now
    session.flush()
    return acc


def _flags(session: Session, worker_id: int, project_id: int, reason: FlagReason) -> list[WorkerFlag]:
    return list(session.scalars(select(WorkerFlag).where(
        WorkerFlag.account_id == worker_id, WorkerFlag.project_id == project_id, WorkerFlag.reason == reason)
        .order_by(WorkerFlag.id)))


def _evidence(metric: str, value: float | None, threshold: float, n: int, window: int | None,
              **extra: Any) -> dict[str, Any]:
    return {"metric": metric, "value": value, "threshold": threshold, "n": n, "window": window, **extra}


def apply_rules(session: Session, *, worker_id: int, project: Project, acc: Accuracy,
                now: dt.datetime) -> Decision:
    """Flag or block on the worker's record, at most once per finding: no new flag while one of the same reason is
    open or blocked; after ops dismissed one, only stronger evidence (the action threshold) flags again."""
    minimum = float(project.min_gold_accuracy)
    decision = judge(acc, min_accuracy=minimum, min_golds=project.min_gold_answers,
                     act_confidence=float(project.action_confidence))
    if decision != Decision.NONE:
        existing = _flags(session, worker_id, project.id, FlagReason.GOLD_BELOW_THRESHOLD)
        live = [f for f in existing if f.state != FlagState.DISMISSED]
        acted_before = any((f.evidence or {}).get("decision") == Decision.ACT for f in existing)
        flag = live[-1] if live else None
        if flag is None and (not existing or (decision == Decision.ACT and not acted_before)):
            flag = flags.raise_flag(
                session, worker_id=worker_id, project_id=project.id, reason=FlagReason.GOLD_BELOW_THRESHOLD,
                note=f"gold accuracy {acc.gold_correct}/{acc.gold_seen} (95% interval {acc.wilson_low:.2f}-"
                     f"{acc.wilson_high:.2f}) is below the project's minimum {minimum:.2f}", now=now,
                evidence=_evidence("gold_accuracy", acc.accuracy, minimum, acc.gold_seen, None, decision=decision,
                                   wilson_low=acc.wilson_low, wilson_high=acc.wilson_high,
                                   action_confidence=float(project.action_confidence),
                                   rolling_accuracy=acc.rolling_accuracy, rolling_window=acc.window))
        if (flag is not None and decision == Decision.ACT and project.quality_action == QualityAction.BLOCK
                and flag.state == FlagState.OPEN):
            reason = (f"automatic: gold accuracy {acc.gold_correct}/{acc.gold_seen} is below the project's minimum "
                      f"{minimum:.2f} with {float(project.action_confidence):.1%} confidence")
            block_and_apply(session, flag_id=flag.id, actor=None, scope="project", reason=reason, now=now)
    fast_share = acc.fast_answers / acc.tasks if acc.tasks else 0.0
    if (acc.tasks >= MIN_FAST_TASKS and fast_share > FAST_SHARE
            and not _flags(session, worker_id, project.id, FlagReason.FAST_ANSWERS)):
        flags.raise_flag(session, worker_id=worker_id, project_id=project.id, reason=FlagReason.FAST_ANSWERS,
                         note=f"{acc.fast_answers} of {acc.tasks} recent tasks took under "
                              f"{float(project.fast_answer_fraction):.2f} x the project's median time", now=now,
                         evidence=_evidence("fast_share", fast_share, FAST_SHARE, acc.tasks, RECENT_TASKS,
                                            fraction_of_median=float(project.fast_answer_fraction)))
    session.commit()
    return decision


def record_gold(session: Session, *, worker_id: int, project_id: int, now: dt.datetime) -> Decision:
    """After a scored gold task: recompute the worker's figures and apply the project's rules, in one
    transaction (an ordinary session: not the hot paths' autocommit one)."""
    project = session.get(Project, project_id)
    assert project is not None
    acc = recompute(session, worker_id=worker_id, project=project, now=now)
    return apply_rules(session, worker_id=worker_id, project=project, acc=acc, now=now)


def rescore_item(session: Session, *, item: Item, now: dt.datetime) -> int:
    """Re-score every answer to a gold item (its known answer changed, or it was retired: then no answer to it
    counts) and recompute the figures of the workers who answered it. Flushes; returns the answers re-scored."""
    project = session.get(Project, item.project_id)
    assert project is not None
    answers = list(session.scalars(select(Answer).where(Answer.item_id == item.id)))
    for answer in answers:
        answer.gold_correct = (None if item.gold_retired_at is not None
                               else same_answer(project.label_schema, answer.value, item.gold_answer))
    session.flush()
    for worker_id in sorted({a.worker_id for a in answers}):
        recompute(session, worker_id=worker_id, project=project, now=now)
    return len(answers)
