"""Worker quality in a project: their figures, the judgement on all the evidence, and the project's rules acting on
it. No flask here.

After each submit or return (apart from the response: `market/quality/evaluation.py`) the worker's figures are
recomputed from their answers and assignments (never incremented: a lost update is mended by the next one, a
re-scored gold item is picked up at once), and judged (qualification/judgement.py): their gold answers and their
agreement with
the crowd give the posterior probability that their accuracy is below the project's minimum. Past
`flag_confidence` they are flagged for ops (GOLD_BELOW_THRESHOLD when gold alone says so, else LOW_AGREEMENT),
past `action_confidence` the project's action is taken (flag only, or block), and an open flag whose evidence has
gone closes itself with a note. Patterns are flagged for review and never acted on automatically: most tasks far
faster than the project's median (FAST_ANSWERS), nearly one label where the crowd gives many (SAME_LABEL), and
tasks returned or let lapse far more often than the crowd does (FREQUENT_RETURNS).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from base.events import GoldItemChanged
from base.labels import same_answer
from market.catalogue.models import Answer, Assignment, AssignmentStatus, Item, Project, QualityAction
from market.engine.next_task import DONE
from market.quality.effects import block_and_apply
from qualification.accuracy import agreement_with_majority, summarize, wilson_interval, z_for
from qualification.judgement import PRIOR_A, PRIOR_B, Decision, Judgement, crowd_q, judge
from workers import flags
from workers.models import Account, FlagReason, FlagState, WorkerFlag, WorkerFlagEvent, WorkerStats

# How much history a recomputation reads: enough for stable medians and agreement, bounded per evaluation.
RECENT_TASKS = 1000
RECENT_ANSWERS = 200
MIN_OTHERS = 2  # other answers an item needs before agreement with its majority is measured
FAST_SHARE = 0.5  # FAST_ANSWERS when more than this share of a worker's tasks (at least MIN_FAST_TASKS) are too fast
MIN_FAST_TASKS = 10
SAME_LABEL_SHARE = 0.9  # SAME_LABEL: this share of recent answers (at least MIN_PATTERN_ANSWERS) is one label ...
CROWD_SHARE_GAP = 0.3  # ... while the crowd gives that label this much less often on the same items
MIN_PATTERN_ANSWERS = 30
MIN_RETURN_LEASES = 20  # FREQUENT_RETURNS: leases before returns are judged
RETURN_CONFIDENCE = 0.99  # the worker's rate is above the bar with this confidence (Wilson lower bound)
_PRIOR_MEAN = PRIOR_A / (PRIOR_A + PRIOR_B)  # the accuracy assumed for workers not yet judged
_ACCURACY = (FlagReason.GOLD_BELOW_THRESHOLD, FlagReason.LOW_AGREEMENT)


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
    model_accuracy: float | None
    model_low: float | None
    model_high: float | None
    p_below: float | None
    judged_answers: int
    leases: int
    given_back: int


def as_record(stats: WorkerStats | None, project_id: int | None, worker_id: int) -> Record:
    s = stats or WorkerStats(gold_seen=0, gold_correct=0, rolling_seen=0, rolling_correct=0, tasks=0, fast_answers=0,
                             agreement_counted=0, agreement_agreed=0, judged_answers=0, leases=0, given_back=0)
    low, high = wilson_interval(s.gold_correct, s.gold_seen)
    return Record(project_id, worker_id, s.gold_seen, s.gold_correct,
                  s.gold_correct / s.gold_seen if s.gold_seen else None, low, high, s.rolling_seen,
                  s.rolling_correct / s.rolling_seen if s.rolling_seen else None, s.tasks, s.median_ms,
                  s.fast_answers, s.agreement_counted,
                  s.agreement_agreed / s.agreement_counted if s.agreement_counted else None,
                  s.model_accuracy, s.model_low, s.model_high, s.p_below, s.judged_answers, s.leases, s.given_back)


def project_records(session: Session, project_id: int, *, after: int | None, limit: int) -> list[Record]:
    """Every worker's record in the project, by worker id (keyset paged)."""
    stmt = select(WorkerStats).where(WorkerStats.project_id == project_id).order_by(WorkerStats.worker_id)
    if after is not None:
        stmt = stmt.where(WorkerStats.worker_id > after)
    return [as_record(r, project_id, r.worker_id) for r in session.scalars(stmt.limit(limit))]


def worker_records(session: Session, worker_id: int, *, project_ids: list[int] | None = None) -> list[Record]:
    """The worker's record per project (those given, or all), then overall: counts summed, rates recomputed
    (the overall median is the median of the per-project medians; the rolling window and the model are per
    project, so the overall record has no model figures)."""
    stmt = select(WorkerStats).where(WorkerStats.worker_id == worker_id).order_by(WorkerStats.project_id)
    if project_ids is not None:
        stmt = stmt.where(WorkerStats.project_id.in_(project_ids))
    rows = list(session.scalars(stmt))
    summed = ("gold_seen", "gold_correct", "rolling_seen", "rolling_correct", "tasks", "fast_answers",
              "agreement_counted", "agreement_agreed", "judged_answers", "leases", "given_back")
    total = WorkerStats(worker_id=worker_id, **{k: sum(getattr(r, k) for r in rows) for k in summed},
                        median_ms=statistics.median_low(m) if (m := [r.median_ms for r in rows if r.median_ms])
                        else None)
    return [*(as_record(r, r.project_id, worker_id) for r in rows), as_record(total, None, worker_id)]


def _label_key(schema: dict[str, Any], value: Any) -> str:
    """Answers that `same_answer` takes as one label get one key (text: case and spacing ignored)."""
    if schema["type"] == "text" and isinstance(value, str):
        return " ".join(value.split()).casefold()
    return json.dumps(value, sort_keys=True)


def _n_classes(schema: dict[str, Any], observed: int) -> int:
    if schema["type"] == "single_choice":
        return len(schema["categories"])
    if schema["type"] == "rating":
        return schema["max"] - schema["min"] + 1
    return max(observed, 2)  # multi-choice sets and free text: the answers seen


@dataclass(frozen=True)
class Crowd:
    """What the other workers' answers to the worker's recent items say about the worker."""

    q: list[float]  # per compared answer, the crowd's posterior probability of the worker's label
    n_classes: int
    agreed: int  # with the other workers' plain majority (items with MIN_OTHERS other answers)
    counted: int
    top_share: float | None  # the worker's most given label's share of their recent answers
    crowd_share: float | None  # the other workers' share of that label on the same items


def _crowd(session: Session, worker_id: int, project: Project) -> Crowd:
    items = select(Answer.item_id).join(Item, Item.id == Answer.item_id).where(
        Answer.worker_id == worker_id, Answer.project_id == project.id, Item.is_gold.is_(False),
        Answer.excluded_at.is_(None)).order_by(Answer.id.desc()).limit(RECENT_ANSWERS).subquery()
    rows = session.execute(
        select(Answer.item_id, Answer.worker_id, Answer.value, WorkerStats.model_accuracy)
        .outerjoin(WorkerStats, (WorkerStats.worker_id == Answer.worker_id) & (WorkerStats.project_id == project.id))
        .where(Answer.item_id.in_(select(items.c.item_id)), Answer.excluded_at.is_(None))).all()
    schema = project.label_schema
    codes: dict[str, int] = {}
    labels = np.array([codes.setdefault(_label_key(schema, r.value), len(codes)) for r in rows], dtype=np.int64)
    k = _n_classes(schema, len(codes))
    mine = np.array([r.worker_id == worker_id for r in rows], dtype=bool)
    if not mine.any():
        return Crowd([], k, 0, 0, None, None)
    item_of = np.array([r.item_id for r in rows], dtype=np.int64)
    accuracy = np.array([_PRIOR_MEAN if r.model_accuracy is None else r.model_accuracy for r in rows])
    q = crowd_q(item_of, labels, accuracy, mine, k).tolist()
    workers = {worker_id: 0}
    worker_idx = np.array([workers.setdefault(r.worker_id, len(workers)) for r in rows], dtype=np.int64)
    agreed, counted = agreement_with_majority(item_of, worker_idx, labels, n_workers=len(workers),
                                              n_labels=max(len(codes), 1), min_others=MIN_OTHERS)
    top = int(np.bincount(labels[mine]).argmax())
    in_items = np.isin(item_of, item_of[mine]) & ~mine
    crowd_share = float((labels[in_items] == top).mean()) if in_items.any() else None
    return Crowd(q, k, int(agreed[0]), int(counted[0]), float((labels[mine] == top).mean()), crowd_share)


def _leases(session: Session, worker_id: int, project_id: int, now: dt.datetime) -> tuple[int, int]:
    """(leases, given back): the worker's tasks in the project, and those they returned or let lapse."""
    lapsed = (Assignment.status == AssignmentStatus.LEASED) & (Assignment.expires_at <= now)
    given_back = Assignment.status.in_((AssignmentStatus.RETURNED, AssignmentStatus.EXPIRED)) | lapsed
    total, back = session.execute(select(func.count(), func.coalesce(func.sum(case((given_back, 1), else_=0)), 0))
                                  .where(Assignment.worker_id == worker_id, Assignment.project_id == project_id)).one()
    return int(total), int(back)


@dataclass(frozen=True)
class Evaluation:
    """A worker's figures in a project, as `evaluate` stores them, with the judgement behind them."""

    stats: WorkerStats
    judgement: Judgement
    crowd: Crowd
    crowd_return_rate: float


def _durations(session: Session, *where: Any) -> list[int]:
    return list(session.scalars(select(Assignment.duration_ms).where(
        *where, Assignment.status.in_(DONE), Assignment.duration_ms.is_not(None))
        .order_by(Assignment.id.desc()).limit(RECENT_TASKS)))


def recompute(session: Session, *, worker_id: int, project: Project, now: dt.datetime) -> Evaluation:
    """Recompute, judge and store the worker's figures in the project (flushes; its unit of work commits)."""
    outcomes = list(session.scalars(select(Answer.gold_correct).where(
        Answer.worker_id == worker_id, Answer.project_id == project.id, Answer.gold_correct.is_not(None))
        .order_by(Answer.id)))
    mine = _durations(session, Assignment.worker_id == worker_id, Assignment.project_id == project.id)
    # The project's median time: the median of the other workers' medians (kept in worker_stats: one row per
    # worker read, not every assignment; a prolific worker weighs as one; nobody is measured against themselves).
    others = session.execute(select(WorkerStats.median_ms, WorkerStats.leases, WorkerStats.given_back).where(
        WorkerStats.project_id == project.id, WorkerStats.worker_id != worker_id)).all()
    medians = [m for m, _, _ in others if m is not None]
    acc = summarize(outcomes, mine, reference_median_ms=statistics.median_low(medians) if medians else None,
                    fast_fraction=float(project.fast_answer_fraction), window=project.accuracy_window)
    crowd = _crowd(session, worker_id, project)
    verdict = judge(outcomes, crowd.q, n_classes=crowd.n_classes, minimum=float(project.min_gold_accuracy),
                    flag_level=float(project.flag_confidence), act_level=float(project.action_confidence),
                    min_answers=project.min_judged_answers)
    leases, given_back = _leases(session, worker_id, project.id, now)
    stats = session.get(WorkerStats, (worker_id, project.id))
    if stats is None:
        stats = WorkerStats(worker_id=worker_id, project_id=project.id)
        session.add(stats)
    stats.gold_seen, stats.gold_correct = acc.gold_seen, acc.gold_correct
    stats.rolling_seen, stats.rolling_correct = acc.rolling_seen, sum(outcomes[-acc.window:])
    stats.tasks, stats.median_ms, stats.fast_answers = acc.tasks, acc.median_ms, acc.fast_answers
    stats.agreement_counted, stats.agreement_agreed = crowd.counted, crowd.agreed
    stats.model_accuracy, stats.model_low, stats.model_high = verdict.mean, verdict.low, verdict.high
    stats.p_below, stats.judged_answers = verdict.p_below, verdict.answers
    stats.leases, stats.given_back = leases, given_back
    stats.updated_at = now
    session.flush()
    crowd_leases = sum(n for _, n, _ in others)
    crowd_rate = sum(b for _, _, b in others) / crowd_leases if crowd_leases else 0.0
    return Evaluation(stats, verdict, crowd, crowd_rate)


# ---- the rules --------------------------------------------------------------------------------------------


def _flags(session: Session, worker_id: int, project_id: int) -> list[WorkerFlag]:
    return list(session.scalars(select(WorkerFlag).where(
        WorkerFlag.account_id == worker_id, WorkerFlag.project_id == project_id).order_by(WorkerFlag.id)))


def _dismissed_by_ops(session: Session, flag: WorkerFlag) -> bool:
    """A dismissed flag that a person dismissed (not one that closed itself)."""
    return flag.state == FlagState.DISMISSED and session.scalar(select(WorkerFlagEvent.id).where(
        WorkerFlagEvent.flag_id == flag.id, WorkerFlagEvent.action == "dismissed",
        WorkerFlagEvent.actor_id.is_not(None)).limit(1)) is not None


def _close(session: Session, flag: WorkerFlag, note: str, now: dt.datetime) -> None:
    flag.state, flag.updated_at = FlagState.DISMISSED, now
    flags.record(session, flag, "closed", None, note, now)


def _finding(session: Session, *, worker_id: int, project: Project, held: list[WorkerFlag],
             reasons: tuple[FlagReason, ...], reason: FlagReason, holds: bool, strong: bool, gone: bool, note: str,
             gone_note: str, evidence: dict[str, Any], now: dt.datetime) -> WorkerFlag | None:
    """One flag per finding: raised when it holds and none of its reasons is open or blocked, and, after ops
    dismissed one, only when the evidence is `strong`; an open flag the system raised closes when the finding is
    `gone`. `held`: the worker's flags in the project. Returns the live flag, if any."""
    existing = [f for f in held if f.reason in reasons]
    live = next((f for f in reversed(existing) if f.state != FlagState.DISMISSED), None)
    if live is not None:
        if gone and live.state == FlagState.OPEN and live.created_by_id is None:
            _close(session, live, gone_note, now)
            return None
        return live
    if holds and (strong or not any(_dismissed_by_ops(session, f) for f in existing)):
        return flags.raise_flag(session, worker_id=worker_id, project_id=project.id, reason=reason, note=note,
                                now=now, evidence=evidence)
    return None


def apply_rules(session: Session, *, project: Project, evaluation: Evaluation, now: dt.datetime) -> Decision:
    """Flag, block or close flags on the worker's evaluation (flushes; its unit of work commits)."""
    stats, verdict = evaluation.stats, evaluation.judgement
    worker_id, minimum = stats.worker_id, float(project.min_gold_accuracy)
    decision = verdict.decision
    by_gold = verdict.p_below_gold >= float(project.flag_confidence)
    evidence = {"metric": "accuracy", "value": verdict.mean, "threshold": minimum, "n": verdict.answers,
                "window": None, "decision": decision.value, "p_below": verdict.p_below,
                "p_below_gold": verdict.p_below_gold, "interval": [verdict.low, verdict.high],
                "gold_seen": verdict.gold_seen, "gold_correct": verdict.gold_correct, "compared": verdict.compared,
                "crowd_agreement": verdict.agreement, "flag_confidence": float(project.flag_confidence),
                "action_confidence": float(project.action_confidence)}
    held = _flags(session, worker_id, project.id)
    flag = _finding(
        session, worker_id=worker_id, project=project, held=held, reasons=_ACCURACY,
        reason=FlagReason.GOLD_BELOW_THRESHOLD if by_gold else FlagReason.LOW_AGREEMENT,
        holds=decision in (Decision.FLAG, Decision.ACT), strong=decision == Decision.ACT,
        gone=decision == Decision.CLEAR, evidence=evidence, now=now,
        note=f"accuracy probably below the project's minimum {minimum:.2f}: P = {verdict.p_below:.3f}, estimate "
             f"{verdict.mean:.2f} ({verdict.low:.2f}-{verdict.high:.2f}) from {verdict.gold_correct}/"
             f"{verdict.gold_seen} gold and {verdict.compared} answers compared with the crowd",
        gone_note=f"closed by the system: with more answers, P(below {minimum:.2f}) = {verdict.p_below:.3f}")
    if (flag is not None and decision == Decision.ACT and project.quality_action == QualityAction.BLOCK
            and flag.state == FlagState.OPEN):
        reason = (f"automatic: accuracy below the project's minimum {minimum:.2f} with probability "
                  f"{verdict.p_below:.3f} (at least {float(project.action_confidence):.3f} required)")
        block_and_apply(session, flag_id=flag.id, actor=None, scope="project", reason=reason, now=now)
    _patterns(session, project=project, evaluation=evaluation, held=held, now=now)
    session.flush()
    return decision


def _patterns(session: Session, *, project: Project, evaluation: Evaluation, held: list[WorkerFlag],
              now: dt.datetime) -> None:
    stats, crowd = evaluation.stats, evaluation.crowd
    worker_id = stats.worker_id
    fast = stats.fast_answers / stats.tasks if stats.tasks else 0.0
    _finding(session, worker_id=worker_id, project=project, held=held, reasons=(FlagReason.FAST_ANSWERS,),
             reason=FlagReason.FAST_ANSWERS, holds=stats.tasks >= MIN_FAST_TASKS and fast > FAST_SHARE,
             strong=False, gone=stats.tasks >= MIN_FAST_TASKS and fast < FAST_SHARE / 2, now=now,
             note=f"{stats.fast_answers} of {stats.tasks} recent tasks took under "
                  f"{float(project.fast_answer_fraction):.2f} x the project's median time",
             gone_note=f"closed by the system: {stats.fast_answers} of {stats.tasks} recent tasks are too fast now",
             evidence={"metric": "fast_share", "value": fast, "threshold": FAST_SHARE, "n": stats.tasks,
                       "window": RECENT_TASKS, "fraction_of_median": float(project.fast_answer_fraction)})
    answers = len(crowd.q) if crowd.top_share is not None else 0
    same = (crowd.top_share is not None and crowd.crowd_share is not None and answers >= MIN_PATTERN_ANSWERS
            and crowd.top_share >= SAME_LABEL_SHARE and crowd.top_share - crowd.crowd_share >= CROWD_SHARE_GAP)
    _finding(session, worker_id=worker_id, project=project, held=held, reasons=(FlagReason.SAME_LABEL,),
             reason=FlagReason.SAME_LABEL, holds=same, strong=False,
             gone=crowd.top_share is not None and crowd.top_share < SAME_LABEL_SHARE - 0.1, now=now,
             note=f"gives one label to {crowd.top_share or 0:.0%} of their recent answers, where the other workers "
                  f"give it to {crowd.crowd_share or 0:.0%} on the same items",
             gone_note=f"closed by the system: their most given label is down to {crowd.top_share or 0:.0%}",
             evidence={"metric": "top_label_share", "value": crowd.top_share, "threshold": SAME_LABEL_SHARE,
                       "n": answers, "window": RECENT_ANSWERS, "crowd_share": crowd.crowd_share})
    rate = stats.given_back / stats.leases if stats.leases else 0.0
    low = wilson_interval(stats.given_back, stats.leases, z_for(RETURN_CONFIDENCE))[0] if stats.leases else 0.0
    bar = max(2 * evaluation.crowd_return_rate, evaluation.crowd_return_rate + 0.1)
    _finding(session, worker_id=worker_id, project=project, held=held, reasons=(FlagReason.FREQUENT_RETURNS,),
             reason=FlagReason.FREQUENT_RETURNS, holds=stats.leases >= MIN_RETURN_LEASES and low > bar,
             strong=False, gone=stats.leases >= MIN_RETURN_LEASES and rate < bar, now=now,
             note=f"returned or let lapse {stats.given_back} of {stats.leases} tasks ({rate:.0%}); the crowd "
                  f"{evaluation.crowd_return_rate:.0%}",
             gone_note=f"closed by the system: {stats.given_back} of {stats.leases} tasks given back now",
             evidence={"metric": "return_rate", "value": rate, "threshold": bar, "n": stats.leases, "window": None,
                       "wilson_low": low, "crowd_rate": evaluation.crowd_return_rate})


def evaluate(session: Session, *, worker_id: int, project_id: int, now: dt.datetime) -> Decision:
    """Recompute the worker's figures in the project and apply its rules (flushes; its unit of work commits). The
    worker's account row is locked first, so two evaluations of one worker run one after the other."""
    session.execute(select(Account.id).where(Account.id == worker_id).with_for_update())
    project = session.get(Project, project_id)
    assert project is not None
    return apply_rules(session, project=project, now=now,
                       evaluation=recompute(session, worker_id=worker_id, project=project, now=now))


def rescore_item(session: Session, *, item: Item, now: dt.datetime) -> int:
    """Re-score every answer to a gold item (its known answer changed, or it was retired: then no answer to it
    counts) and judge the workers who answered it again. Flushes; returns the answers re-scored."""
    project = session.get(Project, item.project_id)
    assert project is not None
    answers = list(session.scalars(select(Answer).where(Answer.item_id == item.id)))
    for answer in answers:
        answer.gold_correct = (None if item.gold_retired_at is not None
                               else same_answer(project.label_schema, answer.value, item.gold_answer))
    session.flush()
    for worker_id in sorted({a.worker_id for a in answers}):
        evaluate(session, worker_id=worker_id, project_id=project.id, now=now)
    return len(answers)


def on_gold_item_changed(session: Session, event: GoldItemChanged) -> None:
    """An event handler (shell/app.py): the gold item's answers scored again, in the publisher's transaction."""
    item = session.get(Item, event.item_id)
    if item is not None:
        rescore_item(session, item=item, now=event.at)
