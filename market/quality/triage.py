"""The ops flag queue, most severe first, and the evidence behind one flag. No flask here.

Severity, compared in this order (each step breaks the ties of the one before):
1. Harm still possible: a flag whose worker has no block in force over the flag's project comes before one whose
   worker is blocked there already (by this flag or another): a blocked worker adds no more bad answers.
2. Kind: accuracy findings (GOLD_BELOW_THRESHOLD, LOW_AGREEMENT: the worker's answers are wrong and spoil the
   results), then spam patterns and flags raised by hand (SAME_LABEL, FAST_ANSWERS, MANUAL), then costs to the
   market that spoil no answer (FREQUENT_RETURNS, GOLD_CONTESTED).
3. Margin: how far the evidence is past the bar. For accuracy, the threshold minus the upper bound of the worker's
   accuracy (the 95% Wilson bound on their gold answers; the model's upper bound when they answered no gold):
   positive when even the optimistic reading is below the minimum. For a pattern, its value minus its threshold.
4. Evidence: the answers the finding rests on, more first. Then the oldest flag first.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from market.catalogue.models import Answer, Item, Project
from qualification.accuracy import wilson_interval
from workers import flags
from workers.models import Account, FlagReason, FlagState, WorkerBlock, WorkerFlag, WorkerStats

TIERS = {FlagReason.GOLD_BELOW_THRESHOLD: 0, FlagReason.LOW_AGREEMENT: 0, FlagReason.SAME_LABEL: 1,
         FlagReason.FAST_ANSWERS: 1, FlagReason.MANUAL: 1, FlagReason.FREQUENT_RETURNS: 2,
         FlagReason.GOLD_CONTESTED: 2}
TIER_NAMES = ("accuracy", "pattern", "cost")
ACCURACY = (FlagReason.GOLD_BELOW_THRESHOLD, FlagReason.LOW_AGREEMENT)


@dataclass(frozen=True)
class Severity:
    contained: bool  # a block in force covers the flag's project
    tier: int
    margin: float  # past the bar (see the module's docstring); 0.0 when the evidence names none
    evidence_n: int
    upper: float | None  # accuracy flags: the upper bound the margin was measured from

    @property
    def level(self) -> str:
        """A word for the page: critical (accuracy surely below the bar), high, medium, low; contained."""
        if self.contained:
            return "contained"
        if self.tier == 0:
            return "critical" if self.margin > 0 else "high"
        return "medium" if self.tier == 1 else "low"

    def key(self, flag_id: int) -> tuple[Any, ...]:
        return (self.contained, self.tier, -self.margin, -self.evidence_n, flag_id)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def severity(flag: WorkerFlag, blocks: Sequence[WorkerBlock]) -> Severity:
    """How severe the flag is, from its reason, its evidence and the worker's blocks in force (`blocks`)."""
    evidence = flag.evidence or {}
    contained = any(b.project_id is None or b.project_id == flag.project_id for b in blocks)
    threshold, n = _number(evidence.get("threshold")), int(_number(evidence.get("n")) or 0)
    margin, upper = 0.0, None
    if flag.reason in ACCURACY and threshold is not None:
        seen, correct = evidence.get("gold_seen"), evidence.get("gold_correct")
        interval = evidence.get("interval")
        if isinstance(seen, int) and isinstance(correct, int) and 0 <= correct <= seen and seen > 0:
            upper = wilson_interval(correct, seen)[1]
        elif isinstance(interval, list) and len(interval) == 2 and _number(interval[1]) is not None:
            upper = float(interval[1])
        margin = threshold - upper if upper is not None else 0.0
    elif threshold is not None and (value := _number(evidence.get("value"))) is not None:
        margin = value - threshold
    return Severity(contained, TIERS.get(flag.reason, 1), margin, n, upper)


@dataclass(frozen=True)
class Ranked:
    flag: WorkerFlag
    severity: Severity
    worker_name: str
    project_title: str | None


def flag_queue(session: Session, *, now: dt.datetime, state: FlagState | None = FlagState.OPEN,
               reason: FlagReason | None = None, worker_id: int | None = None, project_id: int | None = None,
               offset: int = 0, limit: int = 50) -> tuple[list[Ranked], int]:
    """The flags matching the filters, most severe first (the module's docstring), one page of them: (page,
    how many match). Severity depends on blocks in force now, so the order is computed here, over every match:
    a review queue holds hundreds of open flags, not millions."""
    stmt = select(WorkerFlag)
    for column, value in ((WorkerFlag.state, state), (WorkerFlag.reason, reason),
                          (WorkerFlag.account_id, worker_id), (WorkerFlag.project_id, project_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    rows = list(session.scalars(stmt))
    held = flags.blocks_in_force(session, worker_ids=[f.account_id for f in rows], now=now)
    ranked = sorted(((f, severity(f, held.get(f.account_id, []))) for f in rows), key=lambda fs: fs[1].key(fs[0].id))
    page = ranked[offset:offset + limit]
    names = account_names(session, [f.account_id for f, _ in page])
    titles = project_titles(session, [f.project_id for f, _ in page if f.project_id is not None])
    return [Ranked(f, s, names.get(f.account_id, f"#{f.account_id}"), titles.get(f.project_id))
            for f, s in page], len(ranked)


def account_names(session: Session, ids: Sequence[int | None]) -> dict[int, str]:
    """Usernames (staff: emails) by account id."""
    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    return {i: u or e or f"#{i}" for i, u, e in session.execute(
        select(Account.id, Account.username, Account.email).where(Account.id.in_(wanted)))}


def project_titles(session: Session, ids: Sequence[int]) -> dict[int, str]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {i: t for i, t in session.execute(select(Project.id, Project.title).where(Project.id.in_(wanted)))}


# ---- the evidence of one flag ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """The worker's gold accuracy after their n-th scored gold answer, with its 95% Wilson interval."""

    n: int
    at: dt.datetime
    accuracy: float
    low: float
    high: float


def _project_filter(project_id: int | None) -> list[Any]:
    return [] if project_id is None else [Answer.project_id == project_id]


def gold_history(session: Session, *, worker_id: int, project_id: int | None, limit: int = 500) -> list[Point]:
    """Gold accuracy over time: after each of the worker's scored gold answers (in the project, or everywhere),
    the running accuracy and its interval; the last `limit` answers, counted from the first."""
    rows = session.execute(select(Answer.submitted_at, Answer.gold_correct).where(
        Answer.worker_id == worker_id, Answer.gold_correct.is_not(None), *_project_filter(project_id))
        .order_by(Answer.submitted_at, Answer.id)).all()
    points, correct = [], 0
    for n, (at, ok) in enumerate(rows, start=1):
        correct += bool(ok)
        low, high = wilson_interval(correct, n)
        points.append(Point(n, at, correct / n, low, high))
    return points[-limit:]


@dataclass(frozen=True)
class GoldAnswer:
    answer_id: int
    item_id: int
    external_id: str
    data: dict[str, Any]
    value: Any  # the worker's answer
    gold: Any  # the known answer (ops only)
    correct: bool
    submitted_at: dt.datetime
    duration_ms: int
    excluded: bool


def recent_gold_answers(session: Session, *, worker_id: int, project_id: int | None,
                        limit: int = 20) -> list[GoldAnswer]:
    """The worker's latest scored gold answers beside the known answers, newest first. For ops review only:
    workers never see a gold answer before they answered."""
    rows = session.execute(select(Answer, Item).join(Item, Item.id == Answer.item_id).where(
        Answer.worker_id == worker_id, Answer.gold_correct.is_not(None), *_project_filter(project_id))
        .order_by(Answer.submitted_at.desc(), Answer.id.desc()).limit(limit))
    return [GoldAnswer(a.id, i.id, i.external_id, i.data, a.value, i.gold_answer, bool(a.gold_correct),
                       a.submitted_at, a.duration_ms, a.excluded_at is not None) for a, i in rows]


def project_median_ms(session: Session, *, project_id: int, excluding: int | None = None) -> int | None:
    """The project's median time per task as the quality rules measure it (market/quality/scoring.py): the median
    of the other workers' medians."""
    stmt = select(WorkerStats.median_ms).where(WorkerStats.project_id == project_id,
                                               WorkerStats.median_ms.is_not(None))
    if excluding is not None:
        stmt = stmt.where(WorkerStats.worker_id != excluding)
    medians = list(session.scalars(stmt))
    return statistics.median_low(medians) if medians else None
